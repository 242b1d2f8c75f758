//! The browser demo in a real browser: builds the wasm module (`web/build.sh`), then drives
//! headless Chromium through playwright-core (`web/tests/browser.mjs`) on WebGPU and on the CPU
//! fallback, checking the answer, the heatmaps and the messages for bad input.
//!
//! Needs Chromium (`CHROMIUM`, default `/usr/bin/chromium`), Node.js and npm. Without them the
//! test says so and passes, except with `CI=true`, where it fails.

mod common;

use std::path::Path;
use std::process::Command;

fn found(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(what: &str, command: &mut Command) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(status.success(), "{what} failed ({status})");
}

/// Book text the page gets for its retention demo (its slider reaches 512 KiB).
const NOISE_BYTES: usize = 600_000;

#[test]
fn the_page_answers_on_webgpu_and_on_the_cpu_and_names_bad_input() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let missing: Vec<&str> = [
        (chromium.as_str(), "Chromium"),
        ("node", "Node.js"),
        ("npm", "npm"),
    ]
    .into_iter()
    .filter(|(program, _)| !found(program))
    .map(|(_, name)| name)
    .collect();
    if !missing.is_empty() {
        let why = format!("the browser tests need {}", missing.join(", "));
        assert!(!ci, "{why} (CI=true: not skipping)");
        eprintln!("skipping: {why}");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // A build directory of its own: the cargo running this test still holds the main one.
    let wasm_target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm");
    run(
        "web/build.sh",
        Command::new("bash")
            .arg("web/build.sh")
            .current_dir(root)
            .env("REMEM_WASM_TARGET_DIR", &wasm_target),
    );
    if !root.join("web/node_modules/playwright-core").exists() {
        run(
            "npm ci",
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(root.join("web")),
        );
    }
    // The retention demo buries facts in held-out book text: the test documents, as
    // `remem data --split test --out web/assets/noise.txt` writes them (not committed).
    let mut node = Command::new("node");
    match common::books_dir() {
        Some(books) => {
            let corpus = remem::task::text::Corpus::open(&[books]).unwrap();
            let text = corpus
                .text(remem::task::text::Split::Test, NOISE_BYTES)
                .unwrap();
            std::fs::write(root.join("web/assets/noise.txt"), text).unwrap();
        }
        None => {
            node.env("REMEM_BROWSER_SKIP", "retention-webgpu,retention-cpu");
        }
    }
    run(
        "the browser tests (web/tests/browser.mjs)",
        node.arg("web/tests/browser.mjs")
            .current_dir(root)
            .env("CHROMIUM", &chromium),
    );
}
