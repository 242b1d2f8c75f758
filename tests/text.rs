//! Real text: the book corpus split by document, and a small model that learns to predict it.
//! Needs the corpus `scripts/fetch_books.py` fetches (CI fetches it; elsewhere the tests skip).

mod common;

use std::process::Command;

use remem::task::text::{Corpus, Split};

fn remem(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_remem"))
        .args(args)
        .output()
        .expect("the remem binary runs")
}

/// A temporary folder holding a slice of the corpus (`<tmp>/slice`): the first 24 KB of every
/// fourth file. `None` when the corpus cannot be had (see `common::books_dir`).
fn sliced() -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let books = common::books_dir()?;
    let tmp = tempfile::tempdir().unwrap();
    let into = tmp.path().join("slice");
    std::fs::create_dir(&into).unwrap();
    let corpus = Corpus::open(&[books]).unwrap();
    for (i, doc) in corpus.documents().iter().enumerate().step_by(4) {
        let bytes = std::fs::read(&doc.path).unwrap();
        let n = bytes.len().min(24 << 10);
        std::fs::write(into.join(format!("{i:03}.txt")), &bytes[..n]).unwrap();
    }
    Some((tmp, into))
}

#[test]
fn the_books_split_by_document_into_three_disjoint_parts() {
    let Some(books) = common::books_dir() else {
        return;
    };
    let corpus = Corpus::open(&[books]).unwrap();
    let docs = corpus.documents();
    assert!(docs.len() >= 114, "{} documents", docs.len());
    for (name, min) in [("bible", 66), ("shakespeare", 40), ("austen", 6)] {
        let n = docs.iter().filter(|d| d.name.starts_with(name)).count();
        assert!(n >= min, "{name}: {n} documents");
    }
    let total =
        corpus.bytes(Split::Train) + corpus.bytes(Split::Validation) + corpus.bytes(Split::Test);
    assert_eq!(total, docs.iter().map(|d| d.len).sum::<u64>());
    for split in [Split::Validation, Split::Test] {
        let share = corpus.bytes(split) as f64 / total as f64;
        assert!(
            (0.005..0.2).contains(&share),
            "{split:?} holds {share:.3} of the text"
        );
    }
    // No file is in two splits (no book is larger than one part).
    for d in docs {
        assert_eq!(
            docs.iter().filter(|o| o.path == d.path).count(),
            1,
            "{}",
            d.name
        );
    }
}

/// `remem data` lists each document's split, and writes one split's text: the test
/// documents, in order, for the page's retention demo.
#[test]
fn data_lists_the_split_and_writes_the_held_out_text() {
    let Some((tmp, data)) = sliced() else {
        return;
    };
    let data_s = data.to_str().unwrap();
    let out = remem(&["data", "--data", data_s]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    let corpus = Corpus::open(std::slice::from_ref(&data)).unwrap();
    for doc in corpus.documents() {
        let line = listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(doc.name.as_str()))
            .unwrap_or_else(|| panic!("{} is not listed", doc.name));
        assert!(line.ends_with(&format!("{:?}", doc.split)), "{line}");
    }
    let file = tmp.path().join("noise.txt");
    let out = remem(&[
        "data",
        "--data",
        data_s,
        "--split",
        "test",
        "--max-bytes",
        "30000",
        "--out",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read(&file).unwrap();
    let first = corpus.split(Split::Test).next().unwrap();
    let expected = std::fs::read(&first.path).unwrap();
    let n = written.len().min(expected.len());
    assert!(
        n > 1000 && written[..n] == expected[..n],
        "the first test document opens it"
    );
    assert!(written.len() <= 30000);
    // --out needs the split to write; a split that is not one is named.
    let out = remem(&["data", "--data", data_s, "--out", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--split"));
    let out = remem(&["data", "--data", data_s, "--split", "dev", "--out", "x"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("`dev` is not a split"));
}

/// A small RMT trained briefly on a slice of the books predicts held-out text far better than
/// a uniform guess (8 bits per byte), and writes text when asked to.
#[test]
fn a_small_model_learns_to_predict_held_out_text() {
    let Some((tmp, data)) = sliced() else {
        return;
    };
    let run = tmp.path().join("run");
    let (data_s, run_s) = (data.to_str().unwrap(), run.to_str().unwrap());
    let out = remem(&[
        "train",
        "--device",
        "cpu",
        "--quiet",
        "--data",
        data_s,
        "--segments",
        "2",
        "--segment-len",
        "32",
        "--d-model",
        "32",
        "--layers",
        "1",
        "--heads",
        "2",
        "--d-ff",
        "64",
        "--memory-tokens",
        "4",
        "--batch-size",
        "16",
        "--steps",
        "200",
        "--eval-every",
        "200",
        "--eval-samples",
        "64",
        "--run-dir",
        run_s,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = remem(&[
        "eval",
        "--device",
        "cpu",
        "--quiet",
        "--checkpoint",
        run_s,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bpb = report["bits_per_byte"].as_f64().unwrap();
    eprintln!(
        "test split: {bpb:.3} bits per byte over {} documents",
        report["samples"]
    );
    assert!(report["samples"].as_u64().unwrap() >= 1);
    // 4.60 is the best a model that ignores context does: the byte frequencies of the books.
    assert!(
        bpb < 4.6,
        "{bpb} bits per byte: no better than byte frequencies"
    );

    // A model trained on text runs without it (a browser, or another machine, has none).
    std::fs::rename(&data, tmp.path().join("moved")).unwrap();
    let out = remem(&[
        "stream",
        "--device",
        "cpu",
        "--quiet",
        "--checkpoint",
        run_s,
        "--text",
        "And it came to pass, that",
        "--generate",
        "40",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim_end_matches('\n').len() >= 40, "{text:?}");
}

/// A run that carries its memory from window to window (`--carry-memory`) reads each stream's
/// windows back to back (one byte shared, so none goes unpredicted), keeps that memory in its
/// checkpoint, and a run stopped and resumed trains to exactly the numbers of one that was not.
#[test]
fn carried_memory_reads_streams_in_order_and_resumes_exactly() {
    let Some((tmp, data)) = sliced() else {
        return;
    };
    let config = remem::task::TaskConfig {
        kind: remem::task::TaskKind::Text,
        segments: 2,
        data: vec![data.clone()],
        ..Default::default()
    };
    let task = remem::task::Task::new(config, 16).unwrap();
    let len = task.input_len() as u64;
    for stream in 0..3 {
        let first = task.stream_sample(stream, 3, 5 * len).unwrap().tokens;
        let next = task.stream_sample(stream, 3, 6 * len).unwrap().tokens;
        assert_eq!(first.len() as u64, len + 1);
        assert_eq!(first.last(), next.first(), "stream {stream}");
        let other = task
            .stream_sample((stream + 1) % 3, 3, 5 * len)
            .unwrap()
            .tokens;
        assert_ne!(
            first,
            other,
            "streams {stream} and {} read the same text",
            stream + 1
        );
    }

    let data_s = data.to_str().unwrap();
    let train = |run: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "train",
            "--device",
            "cpu",
            "--quiet",
            "--data",
            data_s,
            "--segments",
            "2",
            "--segment-len",
            "16",
            "--d-model",
            "16",
            "--layers",
            "1",
            "--heads",
            "2",
            "--d-ff",
            "32",
            "--memory-tokens",
            "4",
            "--batch-size",
            "3",
            "--steps",
            "6",
            "--eval-every",
            "100",
            "--eval-samples",
            "8",
            "--checkpoint-every",
            "3",
            "--carry-memory",
            "--run-dir",
            run.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = remem(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let steps = |run: &std::path::Path| -> Vec<(u64, f64, f64)> {
        std::fs::read_to_string(run.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["event"] == "train")
            .map(|v| {
                let f = |k: &str| v[k].as_f64().unwrap();
                (v["step"].as_u64().unwrap(), f("loss"), f("grad_norm"))
            })
            .collect()
    };
    let whole = tmp.path().join("whole");
    train(&whole, &[]);
    let stopped = tmp.path().join("stopped");
    train(&stopped, &["--stop-after", "3"]);
    let ck = remem::train::Checkpoint::load(&stopped.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.progress.step, 3);
    assert_eq!(ck.progress.streamed, 3 * len);
    let carried = remem::model::State::from_bytes(
        &ck.carried,
        remem::train::CARRIED_ID,
        &burn::tensor::Device::flex(),
    )
    .expect("the checkpoint holds the carried memory");
    assert_eq!(carried.memory().expect("RMT memory").dims()[0], 3);
    let out = remem(&[
        "train",
        "--device",
        "cpu",
        "--quiet",
        "--resume",
        "--run-dir",
        stopped.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(steps(&whole).len(), 6);
    assert_eq!(steps(&whole), steps(&stopped));

    // A memory that lives two windows (`--carry-windows 2`): the first two steps are the
    // carried run's (the same text, weights and memory), the third starts from a fresh memory
    // where the carried run's is two windows old, so from there the two runs differ.
    let short = tmp.path().join("short");
    train(&short, &["--carry-windows", "2"]);
    let (short, whole) = (steps(&short), steps(&whole));
    assert_eq!(short[..2], whole[..2]);
    assert_ne!(short[2], whole[2]);
}

/// Memory carries a fact through book text: on memorize over 4 segments (the fact opens the
/// first, the question ends the last), RMT with memory tokens answers far above chance (1/6)
/// after brief training, while the same model with no memory stays near chance.
#[test]
fn memory_carries_a_fact_through_book_text() {
    let Some((tmp, data)) = sliced() else {
        return;
    };
    let exact = |memory: &str| {
        let run = tmp.path().join(format!("run-{memory}"));
        let out = remem(&[
            "train",
            "--device",
            "cpu",
            "--quiet",
            "--task",
            "memorize",
            "--data",
            data.to_str().unwrap(),
            "--segments",
            "4",
            "--segment-len",
            "32",
            "--d-model",
            "32",
            "--layers",
            "2",
            "--heads",
            "2",
            "--d-ff",
            "64",
            "--memory-tokens",
            memory,
            "--batch-size",
            "32",
            "--steps",
            STEPS,
            "--eval-every",
            STEPS,
            "--eval-samples",
            "200",
            "--lr",
            "3e-3",
            "--run-dir",
            run.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
        summary["eval"]["exact_match"].as_f64().unwrap()
    };
    let (with, without) = (exact("4"), exact("0"));
    eprintln!("memorize exact match: {with:.3} with memory, {without:.3} without");
    assert!(with > 0.5, "with memory: {with}");
    assert!(without < 0.3, "without memory: {without}");
}

/// `remem compare --data` trains each model on the text and tabulates bits per byte.
#[test]
fn compare_tabulates_bits_per_byte_on_text() {
    let Some((tmp, data)) = sliced() else {
        return;
    };
    let config = tmp.path().join("base.toml");
    std::fs::write(
        &config,
        "[model]\nd_model = 16\nn_layers = 1\nn_heads = 2\nd_ff = 32\n\
         [train]\nsteps = 20\nbatch_size = 4\neval_every = 20\neval_samples = 4\n",
    )
    .unwrap();
    let out = tmp.path().join("out");
    let run = remem(&[
        "compare",
        "--device",
        "cpu",
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--models",
        "rmt,xl",
        "--segments",
        "2",
        "--segment-len",
        "16",
        "--seeds",
        "1",
        "--memory-tokens",
        "4",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let table = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(table.contains("bits per byte mean"), "{table}");
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    for line in csv.lines().skip(1) {
        let bpb: f64 = line.split(',').nth(11).unwrap().parse().unwrap();
        assert!(bpb > 0.0 && bpb < 8.5, "{line}");
    }
    assert!(out.join("accuracy.png").exists());
}

/// Optimiser steps of the memorize runs.
const STEPS: &str = "600";
