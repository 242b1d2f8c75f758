//! Training is reproducible by construction: the same seed gives the same numbers on the CPU,
//! whatever else the process runs at the same time and however many threads it has.

use std::path::Path;
use std::process::Command;

use remem::device;
use remem::train::{self, RunConfig, Start, TrainOptions};

/// A short run with dropout, so weights, dropout masks and data all draw from the seed.
fn config_toml(seed: u64, kind: &str) -> String {
    format!(
        r#"
        seed = {seed}
        [model]
        kind = "{kind}"
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
    )
}

/// Fail on the first line where two runs' metrics differ, naming both versions of it.
fn assert_same(a: &[String], b: &[String], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: different numbers of records");
    if let Some((x, y)) = a.iter().zip(b).find(|(x, y)| x != y) {
        panic!("{what}:\n  {x}\n  {y}");
    }
}

/// Every logged number of a run folder's metrics but the timings.
fn metrics(run_dir: &Path) -> Vec<String> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            v.as_object_mut().unwrap().remove("tokens_per_s");
            v.to_string()
        })
        .collect()
}

fn losses(seed: u64, kind: &str) -> Vec<String> {
    let config = RunConfig::from_toml(&config_toml(seed, kind)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let options = TrainOptions {
        run_dir: dir.path().join("run"),
        progress: false,
        stop_after: None,
        report: false,
    };
    train::train(Start::Fresh(config), &device::cpu(), &options).unwrap();
    metrics(&dir.path().join("run"))
}

#[test]
fn same_seed_same_losses_other_seed_other_losses() {
    let a = losses(5, "rmt");
    let b = losses(5, "rmt");
    assert_eq!(a.len(), 12 + 2, "12 steps and 2 evaluations");
    assert_same(&a, &b, "two CPU runs with one seed differ");
    assert_ne!(a, losses(6, "rmt"), "the seed must matter");
}

/// Two trainings on two threads of one process draw nothing from each other: each gives the
/// numbers it gives alone. (With weights initialised lazily from the backend's process-wide
/// generator, and dropout drawing from it, they took each other's draws.)
#[test]
fn two_trainings_at_once_equal_each_alone() {
    let alone = [losses(21, "rmt"), losses(22, "memxl")];
    for _ in 0..2 {
        let together = std::thread::scope(|s| {
            let a = s.spawn(|| losses(21, "rmt"));
            let b = s.spawn(|| losses(22, "memxl"));
            [a.join().unwrap(), b.join().unwrap()]
        });
        for (t, a) in together.iter().zip(&alone) {
            assert_same(t, a, "a training changed another's numbers");
        }
    }
}

/// The command line's training gives bit-identical metrics with 1, 2 and 4 threads: no kernel
/// splits a sum differently by thread count. The default model's sizes (d_model 64, batch 32)
/// take the kernels' multithreaded paths.
#[test]
fn thread_count_changes_no_bit() {
    for kind in ["rmt", "infinity"] {
        let tmp = tempfile::tempdir().unwrap();
        let config = tmp.path().join("run.toml");
        std::fs::write(
            &config,
            format!(
                r#"
                seed = 3
                [model]
                kind = "{kind}"
                dropout = 0.1
                [train]
                steps = 10
                eval_every = 5
                eval_samples = 64
                checkpoint_every = 10
                "#
            ),
        )
        .unwrap();
        let run = |threads: &str| {
            let dir = tmp.path().join(format!("run-{threads}"));
            let out = Command::new(env!("CARGO_BIN_EXE_remem"))
                .args(["train", "--device", "cpu", "--quiet", "--config"])
                .arg(&config)
                .arg("--run-dir")
                .arg(&dir)
                .env("RAYON_NUM_THREADS", threads)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            metrics(&dir)
        };
        let one = run("1");
        assert_eq!(one.len(), 10 + 2, "10 steps and 2 evaluations");
        for threads in ["2", "4"] {
            let what = format!("{kind}: {threads} threads differ from 1");
            assert_same(&run(threads), &one, &what);
        }
    }
}
