//! The page's logic, natively on the CPU: the same code the browser runs through wasm-bindgen.

use std::path::Path;

use burn::prelude::*;
use remem_web::demo::{DENSITY_POINTS, Demo};

fn load(file: &str) -> Demo {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets")
        .join(file);
    Demo::load(&std::fs::read(path).unwrap(), file, &Device::flex()).unwrap()
}

fn play(demo: &mut Demo) -> Vec<remem_web::demo::SegmentView> {
    let mut views = Vec::new();
    while let Some(view) = pollster::block_on(demo.step()).unwrap() {
        views.push(view);
    }
    views
}

#[test]
fn the_copy_model_answers_and_every_segment_shows_its_attention_and_memory() {
    let mut demo = load("copy-rmt.safetensors");
    let info = demo.info().clone();
    assert_eq!((info.model.as_str(), info.task.as_str()), ("rmt", "copy"));
    let example = demo.example(1);
    demo.start(&example.question).unwrap();
    let views = play(&mut demo);
    let outcome = demo.outcome().unwrap();
    assert!(outcome.finished);
    assert_eq!(outcome.truth.as_deref(), Some(example.answer.as_str()));
    assert_eq!(
        outcome.answer, example.answer,
        "the model copies its example"
    );
    assert!(outcome.solved);
    assert!(views.len() >= 8, "{} segments", views.len());

    let m = info.memory_tokens;
    for (k, view) in views.iter().enumerate() {
        assert_eq!(view.index, k as u64);
        let a = &view.attention;
        let (rows, cols) = (a.rows.len(), a.cols.len());
        assert_eq!(
            (rows, cols),
            (2 * m + info.segment_len, 2 * m + info.segment_len)
        );
        assert_eq!(a.weights.len(), a.layers * a.heads * rows * cols);
        for row in a.weights.chunks(cols) {
            let sum: f32 = row.iter().sum();
            assert!(
                (sum - 1.0).abs() < 1e-3,
                "attention rows sum to 1, got {sum}"
            );
        }
        let names: Vec<&str> = a.row_groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["read memory", "segment", "write memory"]);
        let memory = view.memory.as_ref().expect("RMT has memory slots");
        assert_eq!(memory.change.len(), m);
        assert!(memory.change.iter().all(|c| (-1.001..=1.001).contains(c)));
        assert!(view.density.is_none());
    }
    // The question's tokens are given, the answer's written; the first segment's write is
    // its own reference.
    assert!(!views[0].generated[0]);
    assert!(*views.last().unwrap().generated.last().unwrap());
    assert!(
        views[0]
            .memory
            .as_ref()
            .unwrap()
            .retention
            .iter()
            .all(|&r| (r - 1.0).abs() < 1e-4)
    );
    // The memory is rewritten as the digits arrive: some slot moves in the second segment.
    let moved = views[1]
        .memory
        .as_ref()
        .unwrap()
        .change
        .iter()
        .any(|&c| c < 0.99);
    assert!(moved, "the memory changes while the question is read");
}

#[test]
fn the_associative_model_recalls_every_key_including_the_oldest() {
    let mut demo = load("associative-rmt.safetensors");
    let info = demo.info().clone();
    assert_eq!(
        (info.model.as_str(), info.task.as_str()),
        ("rmt", "associative")
    );
    // The page's own examples: the model was 0.998 exact on 1000 held-out queries (chance 0.1).
    let mut solved = 0;
    for seed in 0..20 {
        let example = demo.example(seed);
        demo.start(&example.question).unwrap();
        play(&mut demo);
        let outcome = demo.outcome().unwrap();
        assert_eq!(outcome.truth.as_deref(), Some(example.answer.as_str()));
        solved += usize::from(outcome.solved);
    }
    assert!(solved >= 19, "{solved} of 20 examples answered");
    // Asked for each key in turn of a typed question: the first pair, three segments back,
    // is the one the 2-layer model the page had before could not keep.
    for (key, value) in [('a', "7"), ('b', "2"), ('c', "9"), ('d', "4")] {
        demo.start(&format!("a7b2c9d4|{key}")).unwrap();
        play(&mut demo);
        let outcome = demo.outcome().unwrap();
        assert_eq!(outcome.truth.as_deref(), Some(value));
        assert!(outcome.solved, "key {key}: answered {:?}", outcome.answer);
    }
}

#[test]
fn the_infinity_former_shows_its_densities_over_the_long_term_memory() {
    let mut demo = load("sort-infinity.safetensors");
    assert_eq!(demo.info().model, "infinity");
    let example = demo.example(2);
    demo.start(&example.question).unwrap();
    let views = play(&mut demo);
    let outcome = demo.outcome().unwrap();
    assert!(outcome.finished);
    assert_eq!(outcome.answer.chars().count(), 8);
    let correct = outcome.correct.iter().filter(|&&c| c).count();
    assert!(correct >= 3, "{correct} of 8 symbols in place (chance 1)");
    let last = views.last().unwrap();
    let density = last.density.as_ref().expect("densities");
    assert_eq!(density.points, DENSITY_POINTS);
    assert_eq!(
        density.values.len(),
        density.layers * density.queries * density.points
    );
    assert!(density.values.iter().all(|v| v.is_finite() && *v >= 0.0));
    // Transformer-XL's cache appears as columns before the segment.
    let cache = &last.attention.col_groups[0];
    assert_eq!(cache.name, "cache");
    assert!(cache.len > 0);
    assert!(
        last.memory.is_some(),
        "the long-term memory's coefficients are tracked"
    );
    // The long-term memory is empty until states leave the cache: nothing changes at first,
    // then the fits rewrite it.
    let change = |k: usize| views[k].memory.as_ref().unwrap().change.clone();
    assert!(change(0).iter().all(|&c| c == 1.0), "{:?}", change(0));
    assert!((0..views.len()).any(|k| change(k).iter().any(|&c| c < 0.99)));
}

#[test]
fn bad_questions_are_named() {
    let mut demo = load("copy-rmt.safetensors");
    let empty = demo.start("   ").unwrap_err().to_string();
    assert!(empty.contains("empty"), "{empty}");
    let stray = demo.start("12x4|").unwrap_err().to_string();
    assert!(stray.contains('x'), "{stray}");
    let unfinished = demo.start("1234").unwrap_err().to_string();
    assert!(unfinished.contains("separator"), "{unfinished}");
    assert!(
        pollster::block_on(demo.step()).is_err(),
        "no run was started"
    );
    let garbage = Demo::load(b"not a checkpoint", "x.safetensors", &Device::flex());
    assert!(garbage.err().unwrap().to_string().contains("x.safetensors"));
}

#[test]
fn the_sorting_model_orders_most_symbols_of_the_pages_examples() {
    // The page's 20 examples: the 6000-step model solves 8 whole and puts 130 of 160 symbols
    // in place; the 600-step model it replaced, 3 and 99 (chance: 1 symbol in 8).
    let mut demo = load("sort-infinity.safetensors");
    let (mut solved, mut placed) = (0, 0);
    for seed in 0..20 {
        demo.start(&demo.example(seed).question).unwrap();
        play(&mut demo);
        let outcome = demo.outcome().unwrap();
        solved += usize::from(outcome.solved);
        placed += outcome.correct.iter().filter(|&&c| c).count();
    }
    assert!(
        solved >= 5 && placed >= 120,
        "{solved} of 20 solved, {placed} of 160 symbols in place"
    );
}
