//! The page's retention demo, natively on the CPU: the same code the browser runs.

use std::path::Path;

use burn::prelude::*;
use remem::infer::Session;
use remem_web::retention::{Probe, Retention};

const MODEL: &str = "memorize-rmt.safetensors";

fn bytes() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(MODEL);
    std::fs::read(path).unwrap()
}

/// English text to bury facts in (the browser test uses held-out book text).
fn text() -> Vec<u8> {
    let paragraph = "It was the best of times, it was the worst of times. The old man walked \
                     slowly along the river, and the boats went by under the grey sky. Nobody \
                     spoke at dinner; the candles burned low, and the rain came again! Would \
                     the letter arrive before the winter? She could not say. ";
    paragraph.repeat(200).into_bytes()
}

/// Read a whole run, returning its probes.
fn read_all(demo: &mut Retention) -> Vec<Probe> {
    let mut probes = Vec::new();
    loop {
        let progress = pollster::block_on(demo.read(7)).unwrap();
        probes.extend(progress.probes);
        if progress.read == progress.total {
            return probes;
        }
    }
}

/// The probability a session gives `answer` after `ids`, byte by byte (teacher-forced): the
/// library's own streaming, with none of the demo's arithmetic.
fn p_answer(ids: &[u32], answer: &[u32]) -> f64 {
    let mut session = Session::from_checkpoint_bytes(&bytes(), MODEL, &Device::flex()).unwrap();
    session.feed(ids).unwrap();
    let mut log_p = 0.0;
    for &a in answer {
        let logits = session.next_logits().unwrap();
        let log_probs = burn::tensor::activation::log_softmax(logits, 0);
        let values = log_probs.into_data().try_to_vec::<f32>().unwrap();
        log_p += values[a as usize] as f64;
        session.feed(&[a]).unwrap();
    }
    log_p.exp()
}

#[test]
fn a_probe_is_the_answer_of_the_text_cut_short_there() {
    let device = Device::flex();
    let mut demo = Retention::load(&bytes(), MODEL, &device).unwrap();
    let info = demo.info().clone();
    assert_eq!(info.model, "rmt");
    let text = text();
    let plan = demo.start("Sandra", "went", "garden", &text, 40).unwrap();
    assert_eq!(plan.fact, "Sandra went to the garden.");
    assert_eq!(plan.question, "Where is Sandra?");
    assert_eq!(plan.tokens, 40 * info.segment_len + 1 - 9);
    let probes = read_all(&mut demo);
    assert!(probes.len() >= 10, "{} probes", probes.len());
    assert_eq!(
        probes.last().unwrap().segments,
        39,
        "the last probe is the question's"
    );
    assert!(probes.windows(2).all(|w| w[0].distance < w[1].distance));
    // A probe after k segments is what a run of k + 1 segments over the same text answers:
    // check three of them against the library's streaming of that shorter input.
    for probe in [
        &probes[0],
        &probes[probes.len() / 2],
        probes.last().unwrap(),
    ] {
        let mut short = Retention::load(&bytes(), MODEL, &device).unwrap();
        let plan = short
            .start("Sandra", "went", "garden", &text, probe.segments + 1)
            .unwrap();
        let story = remem::task::retention::Story::memorize("Sandra", "went", "garden");
        let (ids, answer) = story.around(&text[..plan.noise]);
        assert_eq!(answer.start, plan.tokens);
        let expected = p_answer(&ids[..answer.start], &ids[answer.clone()]);
        assert!(
            (probe.p_answer as f64 - expected).abs() < 1e-4,
            "after {} segments: the probe says {}, the session {expected}",
            probe.segments,
            probe.p_answer
        );
        assert_eq!(probe.distance, answer.start - plan.fact.len() - 1);
        assert_eq!(probe.similarity.len(), info.memory_tokens);
    }
    let outcome = pollster::block_on(demo.finish()).unwrap();
    assert_eq!(outcome.truth, "garden.");
    assert_eq!(outcome.segments, 40);
    // The greedy answer is the most likely one: right when the probe gave it most of the mass.
    let last = probes.last().unwrap().p_answer;
    if last > 0.5 {
        assert!(
            outcome.correct,
            "p = {last} but the answer was {}",
            outcome.answer
        );
    }
    let m = info.memory_tokens;
    let fact = &outcome.fact_attention;
    assert_eq!(fact.rows.len(), 2 * m + info.segment_len);
    assert_eq!(fact.rows[m], "S", "the fact opens the first segment");
    let asked = &outcome.question_attention;
    assert!(
        asked.rows.iter().any(|r| r == "?"),
        "the question's segment ends with it"
    );
    for a in [fact, asked] {
        for row in a.weights.chunks(a.cols.len()) {
            let sum: f32 = row.iter().sum();
            assert!(
                (sum - 1.0).abs() < 1e-3,
                "attention rows sum to 1, got {sum}"
            );
        }
    }
}

#[test]
fn bad_requests_are_named() {
    let mut demo = Retention::load(&bytes(), MODEL, &Device::flex()).unwrap();
    let text = text();
    let e = demo
        .start("Nobody", "went", "garden", &text, 8)
        .unwrap_err();
    assert!(e.to_string().contains("no person `Nobody`"), "{e}");
    let e = demo.start("Mary", "went", "moon", &text, 8).unwrap_err();
    assert!(e.to_string().contains("no place `moon`"), "{e}");
    let e = demo.start("Mary", "went", "garden", &text, 1).unwrap_err();
    assert!(e.to_string().contains("1 segments"), "{e}");
    let e = demo
        .start("Mary", "went", "garden", b"short", 8)
        .unwrap_err();
    assert!(e.to_string().contains("the text holds 5 bytes"), "{e}");
    let e = pollster::block_on(demo.finish()).unwrap_err();
    assert!(e.to_string().contains("no fact buried"), "{e}");
    demo.start("Mary", "went", "garden", &text, 8).unwrap();
    let e = pollster::block_on(demo.finish()).unwrap_err();
    assert!(e.to_string().contains("read the text before asking"), "{e}");
    // A model of another task is refused by name.
    let copy =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/copy-rmt.safetensors"))
            .unwrap();
    let e = Retention::load(&copy, "copy-rmt.safetensors", &Device::flex())
        .err()
        .unwrap();
    assert!(e.to_string().contains("needs a memorize model"), "{e}");
}
