//! `remem compare` end to end on a tiny grid: table, CSV, PNG, and resuming after a stop.

use std::process::Command;

fn remem(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_remem"))
        .args(args)
        .output()
        .expect("the remem binary runs")
}

#[test]
fn compare_writes_table_csv_and_plot_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base.toml");
    std::fs::write(
        &base,
        "[model]\nd_model = 16\nn_layers = 1\nn_heads = 2\nd_ff = 32\nmemory_tokens = 2\n\
         [train]\nbatch_size = 4\neval_every = 3\neval_samples = 8\ncheckpoint_every = 3\n",
    )
    .unwrap();
    let out = tmp.path().join("cmp");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "compare",
            "--device",
            "cpu",
            "--task",
            "copy",
            "--length",
            "12",
            "--segments",
            "1,2",
            "--models",
            "rmt,xl",
            "--seeds",
            "2",
            "--steps",
            "3",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(["--config".into(), base.to_str().unwrap().into()]);
        a.extend(["--out".into(), out.to_str().unwrap().into()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        remem(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    // Stopped after 3 of the 8 runs, as an interrupted compare would be.
    let first = run(&["--max-runs", "3"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let done = out.join("runs/rmt-s1-seed1/summary.json");
    let stamp = std::fs::metadata(&done).unwrap().modified().unwrap();

    let second = run(&[]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{err}");
    assert!(
        !err.contains("[1/8]"),
        "finished runs are not trained again: {err}"
    );
    assert!(err.contains("[8/8]"), "{err}");
    assert_eq!(std::fs::metadata(&done).unwrap().modified().unwrap(), stamp);

    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 8, "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.contains(",ok,")), "{csv}");
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("| rmt | 2 |") && md.contains("| xl | 1 |"),
        "{md}"
    );

    let png = image::open(out.join("accuracy.png")).unwrap().to_rgb8();
    assert_eq!(png.dimensions(), (760, 440));
    let colours: std::collections::HashSet<_> = png.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() >= 4,
        "the plot has axes and at least two model colours"
    );

    // A different base config in the same folder is refused rather than mixed in.
    let other = remem(&[
        "compare",
        "--device",
        "cpu",
        "--steps",
        "4",
        "--length",
        "12",
        "--segments",
        "1,2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!other.status.success());
    let err = String::from_utf8_lossy(&other.stderr);
    assert!(err.contains("another base config"), "{err}");
}

#[test]
fn compare_grows_the_input_at_a_fixed_segment_length_with_parallel_jobs() {
    // Sorting at 2 and 3 segments of 12 tokens, the infinity-former uniform and sticky, two runs
    // at a time.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base.toml");
    std::fs::write(
        &base,
        "[model]\nd_model = 16\nn_layers = 1\nn_heads = 2\nd_ff = 32\nmemory_tokens = 2\n\
         [model.ltm]\nbasis = 8\nsamples = 8\n\
         [task]\nkind = \"sort\"\nsymbols = 4\n\
         [train]\nbatch_size = 4\neval_every = 2\neval_samples = 8\ncheckpoint_every = 2\n",
    )
    .unwrap();
    let out = tmp.path().join("cmp");
    let run = remem(&[
        "compare",
        "--device",
        "cpu",
        "--config",
        base.to_str().unwrap(),
        "--segment-len",
        "12",
        "--segments",
        "2,3",
        "--models",
        "infinity,infinity-sticky,rmt-rotary,armt-delta",
        "--seeds",
        "1",
        "--steps",
        "2",
        "--jobs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{err}");
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("segments of 12 tokens"), "{md}");
    for row in [
        "| infinity | 2 |",
        "| infinity | 3 |",
        "| infinity-sticky | 3 |",
        "| rmt-rotary | 2 |",
        "| armt-delta | 3 |",
    ] {
        assert!(md.contains(row), "{row} missing: {md}");
    }
    let config = |name: &str| {
        std::fs::read_to_string(out.join("runs").join(name).join("config.toml")).unwrap()
    };
    let sticky = config("infinity-sticky-s3-seed1");
    assert!(sticky.contains("sampling = \"sticky\""), "{sticky}");
    assert!(sticky.contains("segments = 3") && sticky.contains("segment_len = 12"));
    assert!(!config("infinity-s2-seed1").contains("sticky"));
    let rotary = config("rmt-rotary-s2-seed1");
    assert!(rotary.contains("positions = \"rotary\""), "{rotary}");
    let delta = config("armt-delta-s3-seed1");
    assert!(delta.contains("store = \"delta\""), "{delta}");
    assert!(!config("rmt-rotary-s3-seed1").contains("store"));

    let bad = remem(&["compare", "--models", "infinity-slippery"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("unknown model `infinity-slippery`"), "{err}");
    // The store's rule is ARMT's alone.
    let bad = remem(&["compare", "--models", "rmt-delta"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("unknown model `rmt-delta`"), "{err}");
}
