//! The `remem` command line end to end: train, eval, resume, and bad input.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn remem(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_remem"))
        .args(args)
        .output()
        .expect("the remem binary runs")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert that `out` is a clean failure: non-zero exit, `expect` in the message, no panic.
fn fails_with(out: &Output, expect: &str) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "accepted: {err}");
    assert!(err.contains(expect), "expected `{expect}` in: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// `remem train` with the tiny run's flags, checkpointing every 2 steps.
fn tiny() -> Vec<&'static str> {
    [&["train"][..], common::TINY, &["--checkpoint-every", "2"]].concat()
}

/// `remem train --resume` on `dir` (on the CPU, quietly) with `extra` flags.
fn resume_run(dir: &Path, extra: &[&str]) -> Output {
    let dir = dir.to_str().unwrap();
    let base = [
        "train",
        "--device",
        "cpu",
        "--quiet",
        "--resume",
        "--run-dir",
        dir,
    ];
    remem(&[&base[..], extra].concat())
}

/// The per-step records of a run's metrics.jsonl.
fn train_records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["event"] == "train")
        .collect()
}

fn train_losses(dir: &Path) -> Vec<(u64, f64)> {
    train_records(dir)
        .iter()
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

#[test]
fn train_writes_metrics_and_a_checkpoint_that_eval_reads_and_resume_continues() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let cut = tmp.path().join("cut");
    let run = |dir: &Path, extra: &[&str]| {
        let mut args = tiny();
        args.extend(["--steps", "6", "--run-dir", dir.to_str().unwrap()]);
        args.extend(extra);
        remem(&args)
    };

    let out = run(&whole, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("device: CPU (flex"),
        "{}",
        stderr(&out)
    );
    assert!(whole.join("checkpoint.safetensors").exists());
    assert!(whole.join("config.toml").exists());
    let whole_losses = train_losses(&whole);
    assert_eq!(whole_losses.len(), 6);

    // The summary's throughput is over the steps' own time, not the final evaluation: every
    // step reads the same number of tokens, so it is the harmonic mean of the logged rates.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(whole.join("summary.json")).unwrap())
            .unwrap();
    let rates: Vec<f64> = train_records(&whole)
        .iter()
        .map(|v| v["tokens_per_s"].as_f64().unwrap())
        .collect();
    let harmonic = rates.len() as f64 / rates.iter().map(|r| 1.0 / r).sum::<f64>();
    let reported = summary["tokens_per_s"].as_f64().unwrap();
    assert!(
        (reported / harmonic - 1.0).abs() < 1e-9,
        "summary {reported} tokens/s, the steps' own {harmonic}"
    );

    // eval reads the checkpoint back.
    let eval = |checkpoint: &Path| -> serde_json::Value {
        let out = remem(&[
            "eval",
            "--device",
            "cpu",
            "--samples",
            "8",
            "--json",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let ck = whole.join("checkpoint.safetensors");
    let report = eval(&ck);
    assert_eq!(report["samples"], 8);
    assert!(report["token_accuracy"].as_f64().unwrap() >= 0.0);

    // A run stopped after 3 steps (its last checkpoint is at step 2; step 3 is logged but lost)
    // and then resumed ends with exactly the same losses as the uninterrupted run.
    let out = run(&cut, &["--stop-after", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let resume = |dir: &Path| resume_run(dir, &[]);
    let out = resume(&cut);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(train_losses(&cut), whole_losses);

    // export keeps the weights (eval reports the same) and drops the optimiser state, and
    // resuming from an exported checkpoint is refused by name.
    let exported = tmp.path().join("exported");
    std::fs::create_dir(&exported).unwrap();
    let model_only = exported.join("checkpoint.safetensors");
    let out = remem(&[
        "export",
        "--checkpoint",
        whole.to_str().unwrap(),
        "--out",
        model_only.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    assert!(
        size(&model_only) < size(&ck) / 2,
        "the optimiser state is gone"
    );
    assert_eq!(eval(&model_only), report);
    let out = resume(&exported);
    fails_with(&out, "no optimiser state");
    // A resume refuses flags that would change the run, and --steps below its step; a failed
    // resume changes nothing on disk and creates no folder.
    let files = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut all: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        all.sort();
        all
    };
    let before = files(&whole);
    for (extra, culprit) in [
        (&["--lr", "0.1"][..], "--lr"),
        (&["--d-model", "32"][..], "--d-model"),
        (&["--seed", "9"][..], "--seed"),
        (&["--steps", "2"][..], "--steps 2 is below"),
    ] {
        fails_with(&resume_run(&whole, extra), culprit);
        assert_eq!(
            files(&whole),
            before,
            "a refused resume changed the run folder"
        );
    }
    let missing = tmp.path().join("missing");
    let out = resume_run(&missing, &[]);
    assert!(!out.status.success());
    assert!(!missing.exists(), "a failed resume created the run folder");

    // Exporting over a run's checkpoint (its own, or another's) is refused and changes nothing.
    let kept = std::fs::read(&ck).unwrap();
    for target in [ck.clone(), whole.join(".").join("checkpoint.safetensors")] {
        let out = remem(&[
            "export",
            "--checkpoint",
            whole.to_str().unwrap(),
            "--out",
            target.to_str().unwrap(),
        ]);
        fails_with(&out, "is a run's checkpoint");
        assert_eq!(
            std::fs::read(&ck).unwrap(),
            kept,
            "export replaced the checkpoint"
        );
    }

    // Training again into a folder with a checkpoint, without --resume, refuses and keeps it.
    let before = std::fs::read(&ck).unwrap();
    let out = run(&whole, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("already holds a checkpoint"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(&ck).unwrap(), before);
}

#[test]
fn bad_checkpoints_fail_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut args = tiny();
    args.extend(["--steps", "2", "--run-dir", dir.to_str().unwrap()]);
    assert!(remem(&args).status.success());
    let ck = dir.join("checkpoint.safetensors");
    let bytes = std::fs::read(&ck).unwrap();

    let corrupt = tmp.path().join("corrupt.safetensors");
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    std::fs::write(&corrupt, &flipped).unwrap();
    let truncated = tmp.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let missing = tmp.path().join("missing.safetensors");

    for (path, expect) in [
        (&corrupt, "corrupt"),
        (&truncated, "truncated"),
        (&missing, "No such file"),
    ] {
        let out = remem(&[
            "eval",
            "--device",
            "cpu",
            "--checkpoint",
            path.to_str().unwrap(),
        ]);
        let err = fails_with(&out, expect);
        assert!(err.contains("checkpoint"), "{path:?}: {err}");
    }
}

#[test]
fn invalid_configs_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: &[(&str, &str)] = &[
        ("[model]\nd_modle = 64\n", "d_modle"),
        ("[task]\nkind = \"sorting\"\n", "sorting"),
        ("[model]\nd_model = 0\n", "model.d_model"),
        ("[model]\nn_heads = 3\n", "model.n_heads"),
        ("[train]\nlr = -1.0\n", "train.lr"),
        (
            "[task]\nkind = \"reverse\"\n[model]\nsegment_len = 5\n",
            "task.segments",
        ),
        ("[model\n", "cannot read config"),
    ];
    for (i, (toml, expect)) in cases.iter().enumerate() {
        let path = tmp.path().join(format!("c{i}.toml"));
        std::fs::write(&path, toml).unwrap();
        let run_dir = tmp.path().join(format!("r{i}"));
        let out = remem(&[
            "train",
            "--device",
            "cpu",
            "--quiet",
            "--config",
            path.to_str().unwrap(),
            "--run-dir",
            run_dir.to_str().unwrap(),
        ]);
        assert!(!out.status.success(), "{toml} was accepted");
        let err = stderr(&out);
        assert!(err.contains(expect), "{toml}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(
            !run_dir.exists(),
            "a rejected config must not create the run folder"
        );
    }

    let out = remem(&["train", "--device", "tpu"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown device `tpu`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_unwritable_run_folder_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let run_dir = file.join("run");
    let mut args = tiny();
    args.extend(["--steps", "1", "--run-dir", run_dir.to_str().unwrap()]);
    let out = remem(&args);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("a-file"), "{}", stderr(&out));
}

#[test]
fn training_runs_on_wgpu() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut args: Vec<&str> = tiny()
        .iter()
        .map(|a| if *a == "cpu" { "wgpu" } else { a })
        .collect();
    args.extend(["--steps", "2", "--run-dir", dir.to_str().unwrap()]);
    let out = remem(&args);
    let err = stderr(&out);
    if !out.status.success()
        && err.contains("no wgpu adapter")
        && std::env::var("CI").as_deref() != Ok("true")
    {
        eprintln!("skipping: {err}");
        return;
    }
    assert!(out.status.success(), "{err}");
    assert!(
        !err.contains("CPU (flex"),
        "--device wgpu must not fall back to the CPU: {err}"
    );
    assert_eq!(train_losses(&dir).len(), 2);
    // The checkpoint written on wgpu evaluates on the CPU.
    let out = remem(&[
        "eval",
        "--device",
        "cpu",
        "--samples",
        "4",
        "--checkpoint",
        dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // On wgpu with remem's kernels, then with all of them turned off (REMEM_WGSL_OFF): the
    // reference path evaluates the same model to the same loss, and says it ran.
    let eval_wgpu = |off: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_remem"));
        command.args(["eval", "--device", "wgpu", "--samples", "4", "--checkpoint"]);
        command.arg(&dir);
        match off {
            Some(names) => command.env("REMEM_WGSL_OFF", names),
            None => command.env_remove("REMEM_WGSL_OFF"),
        };
        let out = command.output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
        let loss = text
            .split("loss ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no loss in: {text}"));
        (loss, text.contains("REMEM_WGSL_OFF=all"))
    };
    let (kernels, noted) = eval_wgpu(None);
    assert!(!noted, "a run without REMEM_WGSL_OFF mentioned it");
    let (reference, noted) = eval_wgpu(Some("all"));
    assert!(noted, "REMEM_WGSL_OFF=all ran without saying so");
    assert!(
        (kernels - reference).abs() < 1e-3,
        "loss {kernels} with the kernels, {reference} on the reference path"
    );
}

#[test]
fn a_checkpoint_whose_weights_do_not_fit_its_config_is_refused() {
    use remem::model::Model;
    use remem::train::{Checkpoint, Progress, RunConfig};

    let mut config = RunConfig::default();
    config.resolve().unwrap();
    let mut other = config.model.clone();
    other.d_model = 32;
    let device = burn::tensor::Device::flex();
    let other = Checkpoint::new(
        &Model::new(&other, 0, &device),
        config.clone(),
        Progress {
            step: 1,
            segments: 3,
            recent_accuracy: vec![],
            elapsed_s: 0.0,
            streamed: 0,
        },
        vec![],
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("mismatch.safetensors");
    Checkpoint { config, ..other }.save(&path).unwrap();
    let out = remem(&[
        "eval",
        "--device",
        "cpu",
        "--checkpoint",
        path.to_str().unwrap(),
    ]);
    fails_with(&out, "weights do not fit the model");
}

#[cfg(target_os = "linux")]
#[test]
fn asking_for_a_gpu_api_that_is_not_there_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let out = remem(&[
        "train",
        "--device",
        "metal",
        "--steps",
        "1",
        "--run-dir",
        dir.to_str().unwrap(),
    ]);
    fails_with(&out, "device: no wgpu adapter on Metal");
    assert!(
        !dir.exists(),
        "nothing is created when the device is missing"
    );
}

#[test]
fn stream_continues_from_a_saved_state_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let out = remem(&[&tiny()[..], &["--steps", "4", "--run-dir", run_s]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let stream = |extra: &[&str]| {
        remem(
            &[
                &[
                    "stream",
                    "--device",
                    "cpu",
                    "--quiet",
                    "--checkpoint",
                    run_s,
                ],
                extra,
            ]
            .concat(),
        )
    };
    let text = |out: &Output| {
        assert!(out.status.success(), "{}", stderr(out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };

    // Whole input at once, against two runs joined by a saved state (split mid-segment).
    let whole = text(&stream(&["--text", "0123|45", "--generate", "6"]));
    assert_eq!(whole.chars().count(), 6, "{whole}");
    assert!(whole.chars().all(|c| "0123456789|".contains(c)), "{whole}");
    let state = dir.path().join("memory.state");
    let state_s = state.to_str().unwrap();
    let first = stream(&["--text", "0123", "--generate", "0", "--save-state", state_s]);
    assert!(first.status.success(), "{}", stderr(&first));
    let second = text(&stream(&[
        "--text",
        "|45",
        "--load-state",
        state_s,
        "--generate",
        "6",
    ]));
    assert_eq!(second, whole);

    // A file, read in chunks, gives the same as the same text inline.
    let file = dir.path().join("input.txt");
    std::fs::write(&file, "0123|45\n").unwrap();
    let from_file = text(&stream(&[
        "--input",
        file.to_str().unwrap(),
        "--generate",
        "6",
    ]));
    assert_eq!(from_file, whole);

    fails_with(&stream(&["--text", "01a3"]), "character 'a' at byte 2");
    std::fs::write(&file, "").unwrap();
    fails_with(
        &stream(&["--input", file.to_str().unwrap()]),
        "the input is empty",
    );
    std::fs::write(&file, &std::fs::read(&state).unwrap()[..30]).unwrap();
    fails_with(
        &stream(&["--text", "1", "--load-state", file.to_str().unwrap()]),
        "truncated",
    );
    let other = dir.path().join("other");
    let out = remem(
        &[
            &tiny()[..],
            &[
                "--steps",
                "2",
                "--seed",
                "9",
                "--run-dir",
                other.to_str().unwrap(),
            ],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    fails_with(
        &remem(&[
            "stream",
            "--device",
            "cpu",
            "--checkpoint",
            other.to_str().unwrap(),
            "--text",
            "1",
            "--load-state",
            state_s,
        ]),
        "state belongs to model",
    );
}

#[test]
fn bench_prints_a_table_and_writes_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = remem(&[
        "bench",
        "--device",
        "cpu",
        "--presets",
        "copy-small",
        "--train-models",
        "rmt",
        "--train-steps",
        "1",
        "--stream-models",
        "rmt,transformer",
        "--stream-tokens",
        "96,48",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("| copy-small | rmt |"), "{table}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let train = report["train"].as_array().unwrap();
    assert_eq!(train.len(), 1);
    assert!(train[0]["tokens_per_s"].as_f64().unwrap() > 0.0);
    // Every figure carries the matmul sampled while it ran, and its fraction of it.
    let stream = report["stream"].as_array().unwrap();
    for figure in train.iter().chain(stream) {
        let number = |key: &str| figure[key].as_f64().unwrap_or_else(|| panic!("{key}"));
        let (matmul, achieved) = (number("matmul_flops"), number("achieved_flops"));
        assert!(matmul > 1e8 && achieved > 0.0, "{figure}");
        let fraction = number("matmul_fraction");
        assert!((fraction - achieved / matmul).abs() < 1e-9, "{figure}");
    }
    let points: Vec<(String, u64)> = report["stream"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["model"].as_str().unwrap().to_string(),
                f["tokens"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("rmt", 48),
        ("rmt", 96),
        ("full (cached)", 48),
        ("full (cached)", 96),
    ];
    let expected: Vec<(String, u64)> = expected.iter().map(|(m, n)| (m.to_string(), *n)).collect();
    assert_eq!(points, expected);
    fails_with(
        &remem(&[
            "bench",
            "--device",
            "cpu",
            "--presets",
            "large",
            "--json",
            json.to_str().unwrap(),
        ]),
        "unknown preset `large`",
    );
}

#[test]
fn bptt_depth_takes_a_number_or_full() {
    let dir = tempfile::tempdir().unwrap();
    for (flag, expect) in [("1", Some("bptt_depth = 1")), ("full", None)] {
        let run = dir.path().join(flag);
        let out = remem(
            &[
                &tiny()[..],
                &[
                    "--steps",
                    "1",
                    "--bptt-depth",
                    flag,
                    "--run-dir",
                    run.to_str().unwrap(),
                ],
            ]
            .concat(),
        );
        assert!(
            out.status.success(),
            "--bptt-depth {flag}: {}",
            stderr(&out)
        );
        let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
        match expect {
            Some(line) => assert!(config.contains(line), "{config}"),
            None => assert!(!config.contains("bptt_depth"), "{config}"),
        }
    }
    fails_with(
        &remem(&["train", "--bptt-depth", "deep"]),
        "`deep` is not a number or `full`",
    );
}

/// `--warmup-steps` and `--min-lr` set the schedule: the rate rises linearly to its peak over
/// the warm-up, then decays towards the floor, and the run's config records both.
#[test]
fn the_schedule_flags_set_the_warmup_and_the_floor() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut args = tiny();
    args.extend(["--steps", "6", "--lr", "0.002", "--warmup-steps", "2"]);
    args.extend(["--min-lr", "0.0001", "--run-dir", run.to_str().unwrap()]);
    let out = remem(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(config.contains("warmup_steps = 2"), "{config}");
    assert!(config.contains("min_lr = 0.0001"), "{config}");
    let lrs: Vec<f64> = train_records(&run)
        .iter()
        .map(|v| v["lr"].as_f64().unwrap())
        .collect();
    assert_eq!(lrs.len(), 6, "{lrs:?}");
    assert!((lrs[0] - 0.001).abs() < 1e-12, "half-way up: {lrs:?}");
    assert!((lrs[1] - 0.002).abs() < 1e-12, "at the peak: {lrs:?}");
    assert!(
        lrs[2..].windows(2).all(|w| w[1] < w[0]) && lrs[5] >= 0.0001 && lrs[5] < 0.0005,
        "decaying to the floor: {lrs:?}"
    );
}

/// `remem stream --generate <huge> | head`: tokens are printed as they are made (the reader
/// gets them although the generation would never finish), no memory is reserved for all of
/// them, and a reader that closes the pipe ends the command quietly (the default action of
/// SIGPIPE), not with a panic about a failed write.
#[cfg(unix)]
#[test]
fn a_closed_output_pipe_ends_stream_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let out = remem(
        &[
            &tiny()[..],
            &["--steps", "2", "--run-dir", run.to_str().unwrap()],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut child = Command::new(env!("CARGO_BIN_EXE_remem"))
        .args(["stream", "--device", "cpu", "--quiet", "--checkpoint"])
        .arg(&run)
        .args(["--text", "012", "--generate", &u64::MAX.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout); // the reader has seen enough
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(
        out.status.signal(),
        Some(13),
        "ended by SIGPIPE: {:?} {err}",
        out.status
    );
}

/// A run folder belongs to one process at a time: a second training there, fresh or resumed,
/// is refused with a message that says the folder is in use, and the first one is unharmed.
#[test]
fn a_run_folder_in_use_is_refused() {
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let mut first = Command::new(env!("CARGO_BIN_EXE_remem"))
        .args([&tiny()[..], &["--steps", "1000000", "--run-dir", run_s]].concat())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(run.join("metrics.jsonl")).is_ok_and(|m| m.lines().count() > 2) {
        assert!(
            started.elapsed().as_secs() < 120,
            "the first run never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let fresh = remem(&[&tiny()[..], &["--steps", "4", "--run-dir", run_s]].concat());
    let resumed = resume_run(&run, &[]);
    let still_running = first.try_wait().unwrap().is_none();
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(still_running, "the first run ended before the check");
    fails_with(&fresh, "is in use by another remem process");
    fails_with(&resumed, "is in use by another remem process");
    // Once the first process is gone (killed), the folder is free again.
    let out = resume_run(&run, &["--steps", "1000000", "--stop-after", "1"]);
    let err = stderr(&out);
    assert!(!err.contains("in use"), "{err}");
}

/// A model or batch too large for the machine is refused before anything is allocated, with
/// the setting named and the estimate given, not an abort in the allocator.
#[test]
fn a_run_too_large_for_memory_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    for (flags, setting) in [
        (
            &["--d-model", "1048576", "--heads", "1"][..],
            "model.d_model",
        ),
        (&["--batch-size", "100000000"][..], "train.batch_size"),
    ] {
        let out = remem(
            &[
                &["train", "--device", "cpu", "--quiet", "--run-dir", run_s][..],
                flags,
            ]
            .concat(),
        );
        let err = fails_with(&out, setting);
        assert!(err.contains("GiB"), "{err}");
        assert!(!run.exists(), "a refused run left its folder behind");
    }
}

/// A checkpoint of an earlier build (remem's own format 1) is refused by every command that
/// loads a model, with the way out; `remem export` converts it, to exactly the weights the
/// page's converted asset holds.
#[test]
fn export_converts_a_checkpoint_of_an_earlier_build() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let legacy = root.join("tests/fixtures/legacy-copy-rmt.remem");
    let tmp = tempfile::tempdir().unwrap();
    let out = remem(&[
        "eval",
        "--device",
        "cpu",
        "--checkpoint",
        legacy.to_str().unwrap(),
    ]);
    fails_with(&out, "earlier remem build");
    let converted = tmp.path().join("copy.safetensors");
    let out = remem(&[
        "export",
        "--checkpoint",
        legacy.to_str().unwrap(),
        "--out",
        converted.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sorted = |path: &Path| {
        let mut ck = remem::train::Checkpoint::load(path).unwrap();
        ck.weights.sort_by(|a, b| a.0.cmp(&b.0));
        ck
    };
    let (got, asset) = (
        sorted(&converted),
        sorted(&root.join("web/assets/copy-rmt.safetensors")),
    );
    assert_eq!(got.weights, asset.weights);
    assert_eq!(got.progress, asset.progress);
    assert_eq!(got.model_id().unwrap(), asset.model_id().unwrap());
}

/// Extending a finished run (`--resume --steps N`) keeps its learning-rate schedule: the extra
/// steps train at the floor the schedule ended on. `--stretch-schedule` instead stretches the
/// decay over the new total, so the rate rises above the floor again; the steps already taken
/// are the same either way.
#[test]
fn an_extended_run_keeps_its_schedule_unless_asked_to_stretch() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("schedule.toml");
    let (peak, floor) = (2e-3, 1e-4);
    std::fs::write(
        &config,
        format!("[train]\nwarmup_steps = 2\nlr = {peak}\nmin_lr = {floor}\n"),
    )
    .unwrap();
    let lrs = |dir: &Path| -> Vec<f64> {
        train_records(dir)
            .iter()
            .map(|v| v["lr"].as_f64().unwrap())
            .collect()
    };
    let mut extended = Vec::new();
    for (name, extra) in [
        ("kept", &[][..]),
        ("stretched", &["--stretch-schedule"][..]),
    ] {
        let dir = tmp.path().join(name);
        let mut args = tiny();
        args.extend(["--config", config.to_str().unwrap(), "--steps", "6"]);
        args.extend(["--run-dir", dir.to_str().unwrap()]);
        let out = remem(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = resume_run(&dir, &[&["--steps", "10"][..], extra].concat());
        assert!(out.status.success(), "{}", stderr(&out));
        // The run says when its rate stays at the floor, and only then.
        assert_eq!(
            stderr(&out).contains("at its floor (0.0001) from step 6 to step 10"),
            extra.is_empty(),
            "{name}: {}",
            stderr(&out)
        );
        let lrs = lrs(&dir);
        assert_eq!(lrs.len(), 10, "{name}: {lrs:?}");
        // The first 6 steps decayed towards the floor over 6 steps.
        assert!(lrs[5] > floor && lrs[5] < peak, "{name}: {lrs:?}");
        extended.push(lrs);
    }
    let (kept, stretched) = (&extended[0], &extended[1]);
    assert_eq!(kept[..6], stretched[..6], "the steps before the resume");
    assert!(kept[6..].iter().all(|&lr| lr == floor), "kept: {kept:?}");
    assert!(
        stretched[6..].iter().all(|&lr| lr > floor) && stretched[6] > stretched[5],
        "stretched: {stretched:?}"
    );

    // Stretching means nothing without a resume that extends the run.
    let mut args = tiny();
    let fresh = tmp.path().join("fresh");
    args.extend(["--stretch-schedule", "--run-dir", fresh.to_str().unwrap()]);
    fails_with(&remem(&args), "--resume");
    assert!(!fresh.exists());
}

#[test]
fn init_from_starts_a_new_run_from_a_checkpoints_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = |name: &str| tmp.path().join(name);
    let train = |run: &str, extra: &[&str]| {
        let run = dir(run);
        let mut args = tiny();
        args.extend(["--run-dir", run.to_str().unwrap()]);
        args.extend(extra);
        remem(&args)
    };
    let eval = |run: &str| -> f64 {
        let out = remem(&[
            "eval",
            "--device",
            "cpu",
            "--quiet",
            "--samples",
            "16",
            "--json",
            "--checkpoint",
            dir(run).to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report["loss"].as_f64().unwrap()
    };
    let out = train("base", &["--steps", "8"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // One step at a learning rate too small to move a weight: a run started from the base's
    // weights evaluates as the base does, one started fresh does not.
    let still = dir("still.toml");
    std::fs::write(
        &still,
        "[train]\nlr = 1e-12\nmin_lr = 0.0\nwarmup_steps = 0\n",
    )
    .unwrap();
    let still = still.to_str().unwrap();
    let base = dir("base");
    let from = ["--steps", "1", "--config", still, "--init-from"];
    let out = train("tuned", &[&from[..], &[base.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let out = train("fresh", &["--steps", "1", "--config", still]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (base_loss, tuned, fresh) = (eval("base"), eval("tuned"), eval("fresh"));
    assert!(
        (tuned - base_loss).abs() < 1e-5,
        "started from the base: {tuned}, the base: {base_loss}"
    );
    assert!(
        (fresh - base_loss).abs() > 1e-3,
        "a fresh run evaluates as the base ({fresh} against {base_loss}): the check cannot fail"
    );
    // The run's config records where its weights came from.
    let config = std::fs::read_to_string(dir("tuned").join("config.toml")).unwrap();
    assert!(config.contains("init_from"), "{config}");

    // Settings that give other tensors (no learned positions) are refused by name, leaving no run folder; so are a
    // missing checkpoint and --resume.
    let err = fails_with(
        &train(
            "rotary",
            &[
                "--positions",
                "rotary",
                "--init-from",
                base.to_str().unwrap(),
            ],
        ),
        "weights do not fit the model",
    );
    assert!(err.lines().count() <= 2, "{err}");
    assert!(!dir("rotary").exists(), "a refused run left a folder");
    fails_with(
        &train("none", &["--init-from", dir("missing").to_str().unwrap()]),
        "missing",
    );
    assert!(!dir("none").exists(), "a refused run left a folder");
    let out = resume_run(&base, &["--init-from", base.to_str().unwrap()]);
    fails_with(&out, "--init-from");
}

#[test]
fn eval_is_not_bound_by_the_training_curriculum() {
    // A curriculum that starts at 6 segments does not stop an evaluation at 3.
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let run = run.to_str().unwrap();
    let out = remem(&[
        "train",
        "--device",
        "cpu",
        "--quiet",
        "--steps",
        "2",
        "--segments",
        "6",
        "--curriculum-from",
        "6",
        "--d-model",
        "16",
        "--layers",
        "1",
        "--eval-samples",
        "8",
        "--run-dir",
        run,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = remem(&[
        "eval",
        "--device",
        "cpu",
        "--quiet",
        "--json",
        "--samples",
        "8",
        "--segments",
        "3",
        "--checkpoint",
        run,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["samples"], 8);
}

#[test]
fn init_from_a_transformer_gives_rmt_a_fresh_memory() {
    // RMT over a Transformer's weights: the memory the Transformer lacks starts fresh and is
    // named; everything else carries over.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    let rmt = tmp.path().join("rmt");
    let mut args = tiny();
    args.extend(["--steps", "2", "--model", "transformer"]);
    args.extend(["--run-dir", base.to_str().unwrap()]);
    let out = remem(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut args = tiny();
    args.extend(["--steps", "2", "--positions", "rotary", "--run-dir"]);
    args.extend([rmt.to_str().unwrap(), "--init-from", base.to_str().unwrap()]);
    let out = remem(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("1 tensor(s) it lacks start fresh: memory"),
        "{err}"
    );
}
