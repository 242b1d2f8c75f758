//! Real text: the book corpus split by document, and a small model that learns to predict it.
//! Needs the corpus `scripts/fetch_books.py` fetches (CI fetches it; elsewhere the tests skip).

mod common;

use std::path::Path;
use std::process::Command;

use remem::task::text::{Corpus, Split};

fn remem(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_remem"))
        .args(args)
        .output()
        .expect("the remem binary runs")
}

/// A slice of the corpus: the first 24 KB of every fourth file.
fn slice(books: &Path, into: &Path) {
    let corpus = Corpus::open(&[books.to_path_buf()]).unwrap();
    for (i, doc) in corpus.documents().iter().enumerate().step_by(4) {
        let bytes = std::fs::read(&doc.path).unwrap();
        let n = bytes.len().min(24 << 10);
        std::fs::write(into.join(format!("{i:03}.txt")), &bytes[..n]).unwrap();
    }
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

/// A small RMT trained briefly on a slice of the books predicts held-out text far better than
/// a uniform guess (8 bits per byte), and writes text when asked to.
#[test]
fn a_small_model_learns_to_predict_held_out_text() {
    let Some(books) = common::books_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("slice");
    std::fs::create_dir(&data).unwrap();
    slice(&books, &data);
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
    assert!(
        bpb < 5.0,
        "{bpb} bits per byte: no better than a unigram guess"
    );

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
