//! The Llama decoder against transformers: a tiny hub-format model (tests/fixtures/tiny-llama,
//! half-split rotary positions, untied output) and SmolLM2-135M's real GGUF weights
//! (tests/fixtures/smollm2.json, interleaved rows, tied output, grouped-query attention), both
//! written by scripts/llama_fixture.py; greedy decoding continues a prompt exactly as
//! transformers does; files that do not fit are errors naming what is wrong.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use common::{fixture, floats, ids, max_abs_diff, values};
use remem::model::{Llama, LlamaConfig};
use serde_json::Value;

fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

fn logits(llama: &Llama, ids: &[u32], device: &Device) -> Tensor<3> {
    let data: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
    let n = data.len();
    llama.forward(Tensor::from_data(TensorData::new(data, [1, n]), device))
}

#[test]
fn a_hub_format_llama_matches_transformers() {
    let dir = tiny_dir();
    let device = Device::flex();
    let llama = Llama::load(&dir, &device).unwrap();
    assert_eq!(llama.config().num_key_value_heads, 2);
    assert!(!llama.config().tie_word_embeddings);
    let reference = fixture("tiny-llama/reference.json");
    let got = values(logits(&llama, &ids(&reference["ids"]), &device));
    let diff = max_abs_diff(&got, &floats(&reference["logits"]));
    assert!(diff < 1e-4, "logits differ by {diff}");
}

#[test]
fn smollm2_gguf_matches_transformers_and_decodes_greedily_alike() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let device = Device::flex();
    let llama = Llama::load(&path, &device).unwrap();
    let config = llama.config();
    assert_eq!(
        (
            config.num_hidden_layers,
            config.hidden_size,
            config.vocab_size
        ),
        (30, 576, 49_152)
    );
    assert_eq!(
        (config.num_attention_heads, config.num_key_value_heads),
        (9, 3)
    );
    assert!(config.tie_word_embeddings);
    let fixture = fixture("smollm2.json");
    for case in fixture["cases"].as_array().unwrap() {
        let input = ids(&case["ids"]);
        let out = logits(&llama, &input, &device);
        let first = values(out.clone().slice(s![.., .., 0..16]));
        let diff = max_abs_diff(&first, &floats(&case["logits_first16"]));
        assert!(
            diff < 1e-3,
            "{} tokens: logits differ by {diff}",
            input.len()
        );
        let lse = values(out.clone().exp().sum_dim(2).log());
        let lse_diff = max_abs_diff(&lse, &floats(&case["logsumexp"]));
        assert!(lse_diff < 1e-3, "log-sum-exp differs by {lse_diff}");
        let argmax: Vec<u32> = out
            .argmax(2)
            .into_data()
            .iter::<i64>()
            .map(|i| i as u32)
            .collect();
        assert_eq!(argmax, ids(&case["argmax"]), "{} tokens", input.len());
        eprintln!(
            "{} tokens: logits within {diff:.1e} of transformers",
            input.len()
        );
    }
    let greedy = &fixture["greedy"];
    let prompt = ids(&fixture["texts"][0]["ids"]);
    let got = llama.greedy(&prompt, 16, &device);
    assert_eq!(got, ids(&greedy["ids"]), "greedy continuation");
}

/// A copy of the tiny model's folder with `edit` applied to its config and tensors.
fn edited(
    out: &Path,
    edit_config: impl FnOnce(&mut Value),
    edit: impl FnOnce(&mut Vec<(String, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let dir = tiny_dir();
    std::fs::create_dir_all(out).unwrap();
    let mut config = fixture("tiny-llama/config.json");
    edit_config(&mut config);
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.shape().to_vec(), v.data().to_vec()))
        .collect();
    edit(&mut tensors);
    common::write_safetensors(
        &out.join("model.safetensors"),
        tensors
            .iter()
            .map(|(n, s, b)| (n, safetensors::Dtype::F32, &s[..], &b[..])),
    );
    out.to_path_buf()
}

#[test]
fn a_llama_file_that_does_not_fit_is_an_error_naming_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let err = |path: PathBuf| Llama::load(&path, &device).unwrap_err().to_string();
    let same = |_: &mut Value| {};

    let e = err(edited(&tmp.path().join("missing"), same, |t| {
        t.retain(|(n, _, _)| n != "model.layers.1.mlp.up_proj.weight")
    }));
    assert!(
        e.contains("missing") && e.contains("model.layers.1.mlp.up_proj.weight"),
        "{e}"
    );

    let e = err(edited(&tmp.path().join("extra"), same, |t| {
        let copy = t[0].clone();
        t.push(("model.layers.0.extra.weight".into(), copy.1, copy.2));
    }));
    assert!(e.contains("model.layers.0.extra.weight"), "{e}");

    let e = err(edited(&tmp.path().join("shape"), same, |t| {
        let norm = t
            .iter_mut()
            .find(|(n, _, _)| n == "model.norm.weight")
            .unwrap();
        norm.1 = vec![16];
        norm.2.truncate(16 * 4);
    }));
    assert!(e.contains("model.norm.weight") && e.contains("16"), "{e}");

    // A config that disagrees with the weights.
    let e = err(edited(
        &tmp.path().join("layers"),
        |c| c["num_hidden_layers"] = 3.into(),
        |_| {},
    ));
    assert!(
        e.contains("missing") && e.contains("model.layers.2."),
        "{e}"
    );

    // What the decoder does not implement is refused, not computed differently.
    let e = err(edited(
        &tmp.path().join("scaling"),
        |c| c["rope_parameters"]["rope_type"] = "llama3".into(),
        |_| {},
    ));
    assert!(e.contains("rope scaling `llama3`"), "{e}");
    let e = err(edited(
        &tmp.path().join("heads"),
        |c| c["num_key_value_heads"] = 3.into(),
        |_| {},
    ));
    assert!(e.contains("not a multiple of num_key_value_heads 3"), "{e}");

    // Neither GGUF nor a model folder.
    let junk = tmp.path().join("junk.bin");
    std::fs::write(&junk, b"not a model at all").unwrap();
    let e = err(junk);
    assert!(e.contains("neither a GGUF file nor a folder"), "{e}");
    let truncated = tmp.path().join("truncated.gguf");
    std::fs::write(&truncated, b"GGUF\x03\x00\x00\x00").unwrap();
    assert!(err(truncated).contains("truncated.gguf"));
    assert!(LlamaConfig::from_json(&tmp.path().join("none.json")).is_err());
}
