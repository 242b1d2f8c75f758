//! Streaming sessions: streaming equals the training-time segment loop, saved sessions continue
//! exactly, wrong states are refused, seeded generation repeats.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use common::{max_abs_diff, state_values, values};
use remem::SegmentModel;
use remem::infer::{Sampling, Session};
use remem::model::{Model, ModelKind};
use remem::nn::LtmSampling;
use remem::train::{Checkpoint, RunConfig, checkpoint::Progress};

const SEG: usize = 5;

fn config(kind: ModelKind) -> RunConfig {
    let mut c = RunConfig::default();
    c.model.kind = kind;
    c.model.segment_len = SEG;
    c.model.memory_tokens = 3;
    c.model.d_model = 32;
    c.model.d_ff = 64;
    c.task.segments = 6;
    c.task.kind = remem::task::TaskKind::Reverse;
    c.resolve().unwrap();
    c
}

fn model(config: &RunConfig, seed: u64, device: &Device) -> Model {
    Model::new(&config.model, seed, device)
}

/// Write a checkpoint of `model` (fresh weights are enough: streaming does not care if they
/// were trained).
fn checkpoint(dir: &Path, name: &str, config: &RunConfig, model: &Model) -> PathBuf {
    let path = dir.join(name);
    let progress = Progress {
        step: 0,
        segments: config.task.segments,
        recent_accuracy: Vec::new(),
        elapsed_s: 0.0,
        streamed: 0,
    };
    Checkpoint::new(model, config.clone(), progress, Vec::new())
        .unwrap()
        .save(&path)
        .unwrap();
    path
}

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 7 + i / 3) % vocab) as u32).collect()
}

fn ids(tokens: &[u32], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
    Tensor::from_data(TensorData::new(data, [1, tokens.len()]), device)
}

#[test]
fn streaming_in_any_pieces_equals_the_segment_loop() {
    let device = Device::flex();
    let mut sticky = config(ModelKind::Infinity);
    sticky.model.ltm.sampling = LtmSampling::Sticky;
    sticky.model.ltm.gate = true;
    let configs = [
        config(ModelKind::Rmt),
        config(ModelKind::Xl),
        config(ModelKind::Memxl),
        config(ModelKind::Infinity),
        sticky,
    ];
    for config in configs {
        let kind = (config.model.kind, config.model.ltm.sampling);
        let model = model(&config, 1, &device);
        let input = tokens(4 * SEG + 3, config.model.vocab_size);

        // The training-time loop: Model::step over whole segments, carrying the state.
        let mut state = model.init_state(1, &device);
        let mut expected = Vec::new();
        for segment in input.chunks_exact(SEG) {
            let (out, next) = model.step(ids(segment, &device), state, false);
            expected.push(values(out.logits));
            state = next;
        }
        let (tail, _) = model.step(ids(&input[4 * SEG..], &device), state.clone(), false);
        let tail = values(tail.logits);
        let vocab = config.model.vocab_size;
        let expected_next = &tail[tail.len() - vocab..];

        let pieces: [&[usize]; 3] = [&[input.len()], &[SEG; 5], &[1, 7, 2, 9, 4]];
        for sizes in pieces {
            let mut session = Session::new(model.clone(), &device).unwrap();
            let mut got = Vec::new();
            let mut at = 0;
            for &n in sizes {
                let end = (at + n).min(input.len());
                session
                    .feed_with(&input[at..end], |s| got.push(values(s.logits)))
                    .unwrap();
                at = end;
            }
            assert_eq!(got.len(), 4, "{kind:?} {sizes:?}");
            for (g, e) in got.iter().zip(&expected) {
                assert!(
                    max_abs_diff(g, e) < 1e-5,
                    "{kind:?} {sizes:?}: logits differ"
                );
            }
            let mem = max_abs_diff(&state_values(session.memory()), &state_values(&state));
            assert!(mem < 1e-5, "{kind:?} {sizes:?}: memory differs by {mem}");
            assert_eq!(session.pending(), &input[4 * SEG..]);
            let next = values(session.next_logits().unwrap());
            assert!(max_abs_diff(&next, expected_next) < 1e-5, "{kind:?}");
            // Padded to a whole segment (as on GPUs), the prediction is the same.
            session.pad_predictions(true);
            let padded = values(session.next_logits().unwrap());
            let diff = max_abs_diff(&padded, expected_next);
            assert!(diff < 1e-5, "{kind:?}: padded prediction differs by {diff}");
            session.pad_predictions(false);
        }
    }
}

#[test]
fn a_prediction_padded_to_a_whole_segment_equals_the_unpadded_one() {
    // The other decoders are checked in `streaming_in_any_pieces_equals_the_segment_loop`; the
    // full-attention Transformer reads its whole input as one step.
    let device = Device::flex();
    let config = config(ModelKind::Transformer);
    let mut session = Session::new(model(&config, 3, &device), &device).unwrap();
    session.feed(&tokens(7, config.model.vocab_size)).unwrap();
    assert_eq!(session.pending().len(), 7 % SEG);
    let plain = values(session.next_logits().unwrap());
    session.pad_predictions(true);
    let padded = values(session.next_logits().unwrap());
    let diff = max_abs_diff(&plain, &padded);
    assert!(diff < 1e-5, "padded prediction differs by {diff}");
}

#[test]
fn a_saved_session_continues_in_a_fresh_one_as_if_it_never_stopped() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    for kind in [ModelKind::Rmt, ModelKind::Xl, ModelKind::Infinity] {
        let config = config(kind);
        let path = checkpoint(
            dir.path(),
            "c.safetensors",
            &config,
            &model(&config, 2, &device),
        );
        let input = tokens(3 * SEG + 2, config.model.vocab_size);
        let (first, second) = input.split_at(2 * SEG + 3);

        let mut whole = Session::from_checkpoint(&path, &device).unwrap();
        whole.feed(&input).unwrap();
        let expected = whole.generate(8, &Sampling::greedy()).unwrap();

        let mut before = Session::from_checkpoint(&path, &device).unwrap();
        before.feed(first).unwrap();
        let state_file = dir.path().join("memory.state");
        before.save_file(&state_file).unwrap();
        drop(before);

        // The same weights are the same model however they were loaded: from the file, from
        // its bytes (as the browser does), or built in memory.
        let bytes = std::fs::read(&path).unwrap();
        let from_bytes = Session::from_checkpoint_bytes(&bytes, "c.safetensors", &device).unwrap();
        let loaded = Checkpoint::load(&path)
            .unwrap()
            .load_model(&path, &device)
            .unwrap();
        let in_memory = Session::new(loaded, &device).unwrap();
        assert_eq!(from_bytes.model_id(), whole.model_id());
        assert_eq!(in_memory.model_id(), whole.model_id(), "{kind:?}");

        let mut after = Session::from_checkpoint(&path, &device).unwrap();
        after.load_file(&state_file).unwrap();
        assert_eq!(after.consumed(), (2 * SEG) as u64);
        after.feed(second).unwrap();
        assert_eq!(after.generate(8, &Sampling::greedy()).unwrap(), expected);
        let diff = max_abs_diff(&state_values(after.memory()), &state_values(whole.memory()));
        assert!(diff < 1e-5, "{kind:?}: memory differs by {diff}");
    }
}

#[test]
fn a_state_from_another_model_or_a_damaged_file_is_refused() {
    let device = Device::flex();
    let rmt = config(ModelKind::Rmt);
    let mut session = Session::new(model(&rmt, 3, &device), &device).unwrap();
    session.feed(&tokens(2 * SEG + 1, 10)).unwrap();
    let bytes = session.save().unwrap();

    // Same architecture, other weights.
    let mut other = Session::new(model(&rmt, 4, &device), &device).unwrap();
    let err = other.load(&bytes).unwrap_err().to_string();
    assert!(err.contains("belongs to model"), "{err}");
    // Another architecture.
    let xl = config(ModelKind::Xl);
    let mut other = Session::new(model(&xl, 3, &device), &device).unwrap();
    let err = other.load(&bytes).unwrap_err().to_string();
    assert!(err.contains("belongs to model"), "{err}");
    // Every truncation, and a file that is not a state.
    for cut in [0, 7, 20, bytes.len() / 2, bytes.len() - 1] {
        let err = session.load(&bytes[..cut]).unwrap_err().to_string();
        assert!(err.contains("truncated"), "cut {cut}: {err}");
    }
    // A flipped bit anywhere (the header's length, its JSON, the metadata, the token count, the
    // pending tokens, the logits, the memory, the checksum itself) is caught: by the container's
    // own checks, by remem's metadata checks, or by the checksum.
    for at in (0..bytes.len()).step_by(3) {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        let err = session.load(&flipped).unwrap_err().to_string();
        assert!(
            [
                "corrupt",
                "checksum",
                "not written by remem",
                "format",
                "not a session file"
            ]
            .iter()
            .any(|m| err.contains(m)),
            "bit flipped at byte {at}: {err}"
        );
    }
    let err = session.load(b"hello, world, not a state").unwrap_err();
    assert!(err.to_string().contains("not a safetensors file"), "{err}");
    // The refused loads left the session as it was.
    session.load(&bytes).unwrap();
    assert_eq!(session.consumed(), (2 * SEG) as u64);
    // Unknown ids are named.
    let err = session.feed(&[1, 2, 99]).unwrap_err().to_string();
    assert!(
        err.contains("token id 99") && err.contains("position 2"),
        "{err}"
    );
}

#[test]
fn seeded_generation_repeats_and_the_seed_matters() {
    let device = Device::flex();
    let config = config(ModelKind::Rmt);
    let model = model(&config, 5, &device);
    let sampling = |seed| Sampling {
        temperature: 1.0,
        top_k: Some(6),
        seed,
    };
    let run = |seed| {
        let mut s = Session::new(model.clone(), &device).unwrap();
        s.feed(&tokens(7, 10)).unwrap();
        s.generate(24, &sampling(seed)).unwrap()
    };
    let a = run(11);
    assert_eq!(a, run(11));
    assert_ne!(a, run(12));
    assert!(a.iter().all(|&t| (t as usize) < config.model.vocab_size));
}

#[test]
fn an_infinity_session_shows_where_each_token_reads_its_long_term_memory() {
    let device = Device::flex();
    let config = config(ModelKind::Infinity);
    let mut session = Session::new(model(&config, 3, &device), &device).unwrap();
    session.record_attention(true);
    let mut seen = Vec::new();
    session
        .feed_with(&tokens(3 * SEG, config.model.vocab_size), |s| {
            seen.push(s.density.expect("densities when attention is recorded"))
        })
        .unwrap();
    assert_eq!(seen.len(), 3);
    for layers in seen {
        assert_eq!(layers.len(), config.model.n_layers);
        for d in layers {
            assert_eq!(d.mu.dims(), [1, config.model.n_heads, SEG]);
            let mu = values(d.mu.clone());
            assert!(mu.iter().all(|&m| m > 0.0 && m < 1.0), "{mu:?}");
            let curve = values(d.on_grid(64).reshape([config.model.n_heads * SEG, 64]));
            assert!(curve.iter().all(|v| v.is_finite() && *v >= 0.0));
        }
    }
}
