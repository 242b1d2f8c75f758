//! Files others can read: a training checkpoint and saved session states, read by Python's own
//! `safetensors` package (`scripts/check_safetensors.py`) and checked against what remem holds in
//! memory: every tensor's type, shape and values, the metadata, and the checksum recomputed in
//! Python.

mod common;

use std::path::Path;
use std::process::Command;

use burn::prelude::*;
use remem::infer::Session;
use remem::io::Named;
use remem::model::{Model, ModelConfig, ModelKind};
use remem::nn::LtmSampling;
use remem::train::Checkpoint;
use serde_json::{Value, json};

/// What the script must find for `tensors`: dtype, shape, values at a few flat positions, sum.
fn expected(tensors: &[Named], metadata: Value) -> Value {
    let mut all = serde_json::Map::new();
    for (name, data) in tensors {
        let values: Vec<f64> = match data.dtype() {
            burn::tensor::DType::F32 => data.iter::<f32>().map(f64::from).collect(),
            burn::tensor::DType::U32 => data.iter::<u32>().map(f64::from).collect(),
            burn::tensor::DType::U8 => data.iter::<u8>().map(f64::from).collect(),
            other => panic!("{name}: unexpected {other:?}"),
        };
        let n = values.len();
        let at: Vec<Value> = [0, n / 2, n.saturating_sub(1)]
            .into_iter()
            .filter(|&i| i < n)
            .map(|i| match data.dtype() {
                burn::tensor::DType::F32 => json!([i, values[i]]),
                _ => json!([i, values[i] as u64]),
            })
            .collect();
        let dtype = match data.dtype() {
            burn::tensor::DType::F32 => "F32",
            burn::tensor::DType::U32 => "U32",
            _ => "U8",
        };
        all.insert(
            name.clone(),
            json!({
                "dtype": dtype,
                "shape": data.shape().as_slice(),
                "values": at,
                "sum": values.iter().sum::<f64>(),
            }),
        );
    }
    json!({ "tensors": all, "metadata": metadata })
}

/// Run the Python check on `file`; with `CI=true` a machine without Python fails the test.
fn python_reads(file: &Path, expected: &Value) {
    let spec = file.with_extension("expected.json");
    std::fs::write(&spec, serde_json::to_vec_pretty(expected).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_safetensors.py");
    let out = match Command::new("python3")
        .arg(&script)
        .arg(file)
        .arg(&spec)
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but python3 cannot run: {e}")
        }
        Err(e) => {
            eprintln!("skipping the Python read: {e}");
            return;
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{}:\n{text}", file.display());
    eprint!("{text}");
}

#[test]
fn python_reads_checkpoints_and_states_as_remem_wrote_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let device = Device::flex();

    // A real training checkpoint (with the optimiser's state), written by the command line.
    let out = Command::new(env!("CARGO_BIN_EXE_remem"))
        .current_dir(dir)
        .arg("train")
        .args(common::TINY)
        .args(["--steps", "2", "--run-dir", "run"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("run/checkpoint.safetensors");
    let ck = Checkpoint::load(&path).unwrap();
    assert!(!ck.optimizer.is_empty());
    // The values the model holds once loaded, and its id computed from those values.
    let model = ck.load_model(&path, &device).unwrap();
    let (mut tensors, _) = remem::io::module_tensors(&model).unwrap();
    tensors.push((
        remem::io::OPTIMIZER.to_string(),
        TensorData::new(ck.optimizer.clone(), [ck.optimizer.len()]),
    ));
    let mut session = Session::new(model, &device).unwrap();
    python_reads(
        &path,
        &expected(
            &tensors,
            json!({
                "remem.file": "checkpoint",
                "model_id": session.model_id(),
                "progress": serde_json::to_string(&ck.progress).unwrap(),
            }),
        ),
    );

    // A session state: memory tokens, an unfinished segment and the next-token logits.
    session.feed(&[1, 2, 3, 4, 5, 6, 7]).unwrap();
    let state = dir.join("rmt.state");
    session.save_file(&state).unwrap();
    let memory = session.memory().memory().unwrap().clone().into_data();
    // The saved logits are those after the last full segment: a twin that read only that far.
    let mut twin = Session::from_checkpoint(&path, &device).unwrap();
    twin.feed(&[1, 2, 3, 4, 5, 6]).unwrap();
    let logits = twin.next_logits().unwrap().into_data();
    let tensors = vec![
        ("memory".to_string(), memory),
        (
            "session.pending".to_string(),
            TensorData::new(session.pending().to_vec(), [session.pending().len()]),
        ),
        ("session.logits".to_string(), logits),
    ];
    python_reads(
        &state,
        &expected(
            &tensors,
            json!({
                "remem.file": "session",
                "model_id": session.model_id(),
                "consumed": "6",
                "step_len": "3",
                "state": "memory",
            }),
        ),
    );

    // The infinity-former's state: per-layer caches, long-term memory and attention histograms.
    let mut config = ModelConfig {
        kind: ModelKind::Infinity,
        vocab_size: 16,
        d_model: 16,
        n_heads: 2,
        n_layers: 2,
        d_ff: 32,
        segment_len: 4,
        mem_len: Some(3),
        ..ModelConfig::default()
    };
    config.ltm.basis = 8;
    config.ltm.samples = 6;
    config.ltm.sampling = LtmSampling::Sticky;
    let mut session = Session::new(Model::new(&config, 3, &device), &device).unwrap();
    session.feed(&(0..13).collect::<Vec<u32>>()).unwrap();
    let mut twin = Session::new(Model::new(&config, 3, &device), &device).unwrap();
    twin.feed(&(0..12).collect::<Vec<u32>>()).unwrap();
    let state = dir.join("infinity.state");
    session.save_file(&state).unwrap();
    let remem::State::Xl { cache, ltm, .. } = session.memory() else {
        panic!("the infinity-former keeps a cache state")
    };
    let mut tensors: Vec<Named> = cache
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("cache.{i}"), c.clone().into_data()))
        .collect();
    for (i, layer) in ltm.iter().enumerate() {
        tensors.push((format!("ltm.{i}.coeffs"), layer.coeffs.clone().into_data()));
        if let Some(p) = &layer.pending {
            tensors.push((format!("ltm.{i}.pending"), p.clone().into_data()));
        }
        if let Some(a) = &layer.attended {
            tensors.push((format!("ltm.{i}.attended"), a.clone().into_data()));
        }
    }
    assert!(tensors.iter().any(|(n, _)| n.ends_with("attended")));
    tensors.push((
        "session.pending".to_string(),
        TensorData::new(session.pending().to_vec(), [1]),
    ));
    tensors.push((
        "session.logits".to_string(),
        twin.next_logits().unwrap().into_data(),
    ));
    python_reads(
        &state,
        &expected(
            &tensors,
            json!({
                "remem.file": "session",
                "state": "xl",
                "cache_layers": "2",
                "ltm_layers": "2",
                "consumed": "12",
            }),
        ),
    );
}
