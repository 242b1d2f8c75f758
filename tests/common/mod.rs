//! Helpers shared by the integration tests.

#![allow(dead_code)]

use burn::prelude::*;
use remem::device::{self, DeviceChoice};

/// The JSON file `tests/fixtures/<name>` (a reference fixture written by a script in scripts/).
pub fn fixture(name: &str) -> serde_json::Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A fixture's numbers (a list, or a list of rows, flattened) as f32.
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|x| match x {
            serde_json::Value::Array(row) => {
                row.iter().map(|x| x.as_f64().unwrap() as f32).collect()
            }
            x => vec![x.as_f64().unwrap() as f32],
        })
        .collect()
}

/// A fixture's list of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// Write `tensors` (name, dtype, shape, little-endian bytes) as a safetensors file at `path`.
pub fn write_safetensors<'a>(
    path: &std::path::Path,
    tensors: impl IntoIterator<Item = (&'a String, safetensors::Dtype, &'a [usize], &'a [u8])>,
) {
    let views: Vec<_> = tensors
        .into_iter()
        .map(|(name, dtype, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), bytes).unwrap();
            (name.clone(), view)
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// The wgpu device (lavapipe in CI), or `None` when there is no adapter.
///
/// With `CI=true` a missing adapter fails the test instead: the wgpu path must really run there.
pub fn wgpu_device() -> Option<Device> {
    match device::select(DeviceChoice::Wgpu) {
        Ok(selected) => {
            eprintln!("wgpu device: {}", selected.description);
            Some(selected.device)
        }
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but no wgpu adapter: {e} (install mesa-vulkan-drivers)")
        }
        Err(e) => {
            eprintln!("skipping the wgpu half of this test: {e}");
            None
        }
    }
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A tensor's values on the host.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec()
        .expect("f32 data")
}

/// The largest absolute difference between `a` and `b`, element by element.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "different lengths");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Every value of a model state, in the state's order.
pub fn state_values(state: &remem::model::State) -> Vec<f32> {
    state.tensors().into_iter().flat_map(values).collect()
}

/// The data cache: `$REMEM_DATA`, by default `~/.cache/remem/data`.
fn data_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("REMEM_DATA")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/remem/data"))
        })
}

/// `dir` under the data cache, made by running `script` (with `--dir <cache>` and `args`) when
/// `marker` is not there yet; `None` when it cannot be fetched, after saying why. With `CI=true`
/// that fails the test instead.
fn fetched(
    what: &str,
    dir: &str,
    marker: &str,
    script: &str,
    args: &[&str],
) -> Option<std::path::PathBuf> {
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let data = data_dir()?;
    let target = data.join(dir);
    if target.join(marker).exists() {
        return Some(target);
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(script);
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--dir")
        .arg(&data)
        .args(args)
        .output();
    let why = match out {
        Ok(out) if out.status.success() && target.join(marker).exists() => return Some(target),
        Ok(out) => String::from_utf8_lossy(&out.stderr).trim().to_string(),
        Err(e) => format!("python3: {e}"),
    };
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but {what} could not be fetched: {why}");
    }
    eprintln!("skipping: no {what} at {} ({why})", target.display());
    None
}

/// The public-domain book corpus `scripts/fetch_books.py` caches (`<data cache>/books`), fetched
/// first if it is not there yet; `None` when it cannot be fetched (no network, no apt), after
/// saying why. With `CI=true` a corpus that cannot be fetched fails the test instead.
pub fn books_dir() -> Option<std::path::PathBuf> {
    fetched(
        "book corpus",
        "books",
        "bible",
        "scripts/fetch_books.py",
        &[],
    )
}

/// all-MiniLM-L6-v2 as `scripts/fetch_models.py` caches it (`<data cache>/models/...`), fetched
/// first if it is not there yet; as [`books_dir`] when it cannot be.
pub fn minilm_dir() -> Option<std::path::PathBuf> {
    fetched(
        "all-MiniLM-L6-v2",
        "models/all-MiniLM-L6-v2",
        "model.safetensors",
        "scripts/fetch_models.py",
        &["minilm"],
    )
}

/// SmolLM2-135M-Instruct's Q4_1 GGUF file as `scripts/fetch_models.py` caches it, fetched
/// first if it is not there yet; as [`books_dir`] when it cannot be.
pub fn smollm2_gguf() -> Option<std::path::PathBuf> {
    let file = "SmolLM2-135M-Instruct.Q4_1.gguf";
    fetched(
        "SmolLM2-135M-Instruct",
        "models/SmolLM2-135M-Instruct",
        file,
        "scripts/fetch_models.py",
        &["smollm2"],
    )
    .map(|dir| dir.join(file))
}

/// A tiny training run's flags (copy over 2 segments of 3 tokens, a 1-layer model), quick
/// enough to train in a fraction of a second; `remem train` takes them after its name.
pub const TINY: &[&str] = &[
    "--device",
    "cpu",
    "--quiet",
    "--segments",
    "2",
    "--segment-len",
    "3",
    "--d-model",
    "16",
    "--layers",
    "1",
    "--heads",
    "2",
    "--d-ff",
    "32",
    "--memory-tokens",
    "2",
    "--batch-size",
    "4",
    "--eval-every",
    "4",
    "--eval-samples",
    "8",
];

/// A tiny randomly initialised BERT in Hugging Face's format at `dir` (`config.json`,
/// `model.safetensors`, `vocab.txt`): 1 layer, width 16, 2 heads, feed-forward 32, 32 positions,
/// a vocabulary of 16 (BERT's 5 special tokens, then `a` to `k`).
#[allow(dead_code)]
pub fn tiny_bert(dir: &std::path::Path) {
    let (vocab, d, ff, positions) = (16usize, 16usize, 32usize, 32usize);
    std::fs::create_dir_all(dir).unwrap();
    let config = serde_json::json!({
        "model_type": "bert", "vocab_size": vocab, "hidden_size": d, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": ff, "max_position_embeddings": positions,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu",
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut words: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .to_vec();
    words.extend(('a'..='k').map(String::from));
    std::fs::write(dir.join("vocab.txt"), words.join("\n") + "\n").unwrap();
    // Weights from a fixed linear congruential sequence, in [-0.1, 0.1); norms at 1 and 0.
    let mut seed = 12345u64;
    let mut random = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let e = "embeddings.";
    for (name, rows) in [("word", vocab), ("position", positions), ("token_type", 2)] {
        let w = random(rows * d);
        tensors.push((format!("{e}{name}_embeddings.weight"), vec![rows, d], w));
    }
    let l = "encoder.layer.0.";
    for (name, out, inp) in [
        ("attention.self.query", d, d),
        ("attention.self.key", d, d),
        ("attention.self.value", d, d),
        ("attention.output.dense", d, d),
        ("intermediate.dense", ff, d),
        ("output.dense", d, ff),
    ] {
        tensors.push((
            format!("{l}{name}.weight"),
            vec![out, inp],
            random(out * inp),
        ));
        tensors.push((format!("{l}{name}.bias"), vec![out], random(out)));
    }
    for name in [
        "embeddings.LayerNorm".to_string(),
        format!("{l}attention.output.LayerNorm"),
        format!("{l}output.LayerNorm"),
    ] {
        tensors.push((format!("{name}.weight"), vec![d], vec![1.0; d]));
        tensors.push((format!("{name}.bias"), vec![d], vec![0.0; d]));
    }
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    write_safetensors(
        &dir.join("model.safetensors"),
        tensors.iter().zip(&bytes).map(|((name, shape, _), b)| {
            (
                name,
                safetensors::Dtype::F32,
                shape.as_slice(),
                b.as_slice(),
            )
        }),
    );
}

/// Run the `remem` binary with `args`.
#[allow(dead_code)]
pub fn remem(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_remem"))
        .args(args)
        .output()
        .expect("the remem binary runs")
}

/// Assert that `out` succeeded; its standard output.
#[allow(dead_code)]
pub fn check(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Assert that `out` is a clean failure: non-zero exit, `expect` in the message, no panic.
#[allow(dead_code)]
pub fn fails_with(out: &std::process::Output, expect: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(expect), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
