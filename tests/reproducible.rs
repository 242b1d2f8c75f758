//! Training is reproducible: the same seed on the CPU gives the same numbers.

use remem::device;
use remem::train::{self, RunConfig, Start, TrainOptions};

fn losses(seed: u64) -> Vec<String> {
    let config = RunConfig::from_toml(&format!(
        r#"
        seed = {seed}
        [model]
        d_model = 32
        n_layers = 2
        n_heads = 4
        d_ff = 64
        dropout = 0.1
        memory_tokens = 4
        segment_len = 4
        [task]
        segments = 3
        [train]
        steps = 12
        batch_size = 8
        eval_every = 6
        eval_samples = 16
        checkpoint_every = 6
        "#
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = TrainOptions {
        run_dir: dir.path().join("run"),
        progress: false,
        stop_after: None,
    };
    train::train(Start::Fresh(config), &device::cpu(), &options).unwrap();
    // Every logged number but the timings.
    std::fs::read_to_string(dir.path().join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            v.as_object_mut().unwrap().remove("tokens_per_s");
            v.to_string()
        })
        .collect()
}

#[test]
fn same_seed_same_losses_other_seed_other_losses() {
    let a = losses(5);
    let b = losses(5);
    assert_eq!(a.len(), 12 + 2, "12 steps and 2 evaluations");
    assert_eq!(a, b, "two CPU runs with one seed differ");
    assert_ne!(a, losses(6), "the seed must matter");
}
