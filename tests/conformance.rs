//! One conformance suite for every segment model (RMT in both layouts, with learned and with
//! rotary positions, the segment-level
//! Transformer, Transformer-XL, MemTr-XL, the infinity-former, RMT on a pretrained Llama
//! decoder and on a BERT encoder, the infinity-former's memory in a pretrained Llama, and ARMT,
//! tiny ones here): what the `SegmentModel` interface promises, checked the same way for each.

mod common;

use burn::optim::GradientsParams;
use burn::prelude::*;
use common::max_abs_diff;
use remem::SegmentModel;
use remem::infer::Session;
use remem::model::{
    Architecture, BackboneConfig, Layout, Model, ModelConfig, ModelKind, Positions, State,
};
use remem::nn::{LtmSampling, StoreRule};
use remem::task::Batch;
use remem::train::loss::forward_batch;

const SEG: usize = 4;
const VOCAB: usize = 16;

/// Every model of the suite, by name.
fn models() -> Vec<(&'static str, ModelConfig)> {
    let base = ModelConfig {
        vocab_size: VOCAB,
        d_model: 16,
        n_heads: 2,
        d_ff: 32,
        memory_tokens: 2,
        segment_len: SEG,
        ..ModelConfig::default()
    };
    let with = |kind, layout, memory_tokens| ModelConfig {
        kind,
        layout,
        memory_tokens,
        ..base.clone()
    };
    let rotary = |layout| ModelConfig {
        positions: Positions::Rotary,
        ..with(ModelKind::Rmt, layout, 2)
    };
    let mut infinity = with(ModelKind::Infinity, Layout::Decoder, 0);
    infinity.mem_len = Some(3);
    infinity.ltm.basis = 8;
    infinity.ltm.samples = 6;
    infinity.ltm.sampling = LtmSampling::Sticky;
    let mut infinity_on_llama = on_backbone(&tiny_llama());
    infinity_on_llama.kind = ModelKind::Infinity;
    infinity_on_llama.mem_len = Some(0);
    infinity_on_llama.ltm = infinity.ltm.clone();
    vec![
        ("rmt decoder", with(ModelKind::Rmt, Layout::Decoder, 2)),
        ("rmt encoder", with(ModelKind::Rmt, Layout::Encoder, 2)),
        ("rmt decoder, rotary", rotary(Layout::Decoder)),
        ("rmt encoder, rotary", rotary(Layout::Encoder)),
        (
            "segment transformer",
            with(ModelKind::Rmt, Layout::Decoder, 0),
        ),
        ("transformer-xl", with(ModelKind::Xl, Layout::Decoder, 3)),
        ("memtr-xl", with(ModelKind::Memxl, Layout::Decoder, 2)),
        ("infinity-former", infinity),
        ("rmt on llama", on_backbone(&tiny_llama())),
        ("rmt on bert", on_backbone(tiny_bert())),
        ("infinity on llama", infinity_on_llama),
        ("armt", with(ModelKind::Armt, Layout::Decoder, 2)),
        (
            "armt, rotary",
            ModelConfig {
                positions: Positions::Rotary,
                ..with(ModelKind::Armt, Layout::Decoder, 2)
            },
        ),
        (
            "armt, delta store",
            ModelConfig {
                store: StoreRule::Delta,
                ..with(ModelKind::Armt, Layout::Decoder, 2)
            },
        ),
    ]
}

fn tiny_llama() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

/// The tiny BERT, written once per test process.
fn tiny_bert() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        common::tiny_bert(dir.path());
        dir
    })
    .path()
}

/// RMT with 2 memory tokens on the backbone at `path`, trained whole (so its embeddings get
/// gradients, as the from-scratch models' do).
fn on_backbone(path: &std::path::Path) -> ModelConfig {
    ModelConfig {
        memory_tokens: 2,
        segment_len: SEG,
        backbone: Some(BackboneConfig {
            path: path.to_path_buf(),
            train: true,
            digest: None,
        }),
        ..ModelConfig::default()
    }
    .with_backbone(&Architecture::open(path).unwrap())
}

fn build(config: &ModelConfig, seed: u64, device: &Device) -> Model {
    Model::build(config, seed, device).unwrap()
}

/// Each id occurs once, so a gradient on an id's embedding comes from its one position.
fn tokens(n: usize) -> Vec<i64> {
    (0..n).map(|i| (i % VOCAB) as i64).collect()
}

fn ids(tokens: &[i64], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(tokens.to_vec(), [1, tokens.len()]), device)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Streaming in a session gives the logits of the training loop's segment loop: the loss
/// `forward_batch` computes over 3 segments equals the one from the session's logits, and so
/// do its argmax predictions.
#[test]
fn streaming_equals_the_training_loop() {
    streaming_equals_the_training_loop_on(&Device::flex());
}

/// The same on wgpu, where a session runs its packed inference kernels (the products with the
/// norm inside, the attention over the cache, the long-term memory's read) and the training
/// loop the modules' own operations.
#[test]
fn streaming_equals_the_training_loop_on_wgpu() {
    if let Some(gpu) = common::wgpu_device() {
        streaming_equals_the_training_loop_on(&gpu);
        assert!(
            remem::ops::fallbacks().is_empty(),
            "a kernel fell back: {:?}",
            remem::ops::fallbacks()
        );
    }
}

fn streaming_equals_the_training_loop_on(device: &Device) {
    let device = device.clone();
    for (name, config) in models() {
        let model = build(&config, 1, &device);
        let input = tokens(3 * SEG);
        let targets: Vec<i64> = input.iter().map(|&t| (t * 5 + 3) % VOCAB as i64).collect();
        let batch = Batch {
            inputs: ids(&input, &device),
            targets: ids(&targets, &device),
            weights: Tensor::ones([1, input.len()], &device),
            answer_tokens: input.len(),
        };
        let out = forward_batch(&model, &batch, SEG);
        let nll = out.stats().nll;

        let mut session = Session::new(model, &device).unwrap();
        let mut logits = Vec::new();
        let streamed: Vec<u32> = input.iter().map(|&t| t as u32).collect();
        session
            .feed_with(&streamed, |segment| logits.extend(host(segment.logits)))
            .unwrap();
        let vocab = config.vocab_size;
        assert_eq!(logits.len(), input.len() * vocab, "{name}");
        let mut session_nll = 0.0f64;
        let mut argmax = Vec::new();
        for (row, &target) in logits.chunks(vocab).zip(&targets) {
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = max as f64
                + row
                    .iter()
                    .map(|&v| ((v - max) as f64).exp())
                    .sum::<f64>()
                    .ln();
            session_nll += lse - row[target as usize] as f64;
            argmax.push(row.iter().position(|&v| v == max).unwrap() as u32);
        }
        assert!(
            (nll - session_nll).abs() < 1e-3 * nll.abs().max(1.0),
            "{name}: training loop {nll}, session {session_nll}"
        );
        assert_eq!(out.predictions(), vec![argmax], "{name}");
    }
}

/// `last_step` gives `step`'s logits, for a full and a partial segment after a first one.
#[test]
fn last_step_equals_step() {
    last_step_equals_step_on(&Device::flex());
}

/// The same on wgpu, where RMT runs its whole layout in every step (one set of shapes).
#[test]
fn last_step_equals_step_on_wgpu() {
    if let Some(gpu) = common::wgpu_device() {
        last_step_equals_step_on(&gpu);
    }
}

fn last_step_equals_step_on(device: &Device) {
    let device = device.clone();
    for (name, config) in models() {
        let model = build(&config, 2, &device);
        let first = ids(&tokens(SEG), &device);
        let (_, state) = model.step(first, model.init_state(1, &device), false);
        for len in [SEG, 2] {
            let next = ids(&tokens(SEG + len)[SEG..], &device);
            let (full, _) = model.step(next.clone(), state.clone(), false);
            let last = model.last_step(next, state.clone());
            let diff = max_abs_diff(&host(full.logits), &host(last.logits));
            assert!(diff < 1e-5, "{name}, {len} tokens: logits differ by {diff}");
        }
    }
}

/// `advance` gives `step`'s next state (it only leaves the logits out).
#[test]
fn advance_equals_step() {
    let device = Device::flex();
    for (name, config) in models() {
        let model = build(&config, 6, &device);
        let first = ids(&tokens(SEG), &device);
        let (_, stepped) = model.step(first.clone(), model.init_state(1, &device), false);
        let advanced = model.advance(first, model.init_state(1, &device));
        let (a, b) = (
            common::state_values(&stepped),
            common::state_values(&advanced),
        );
        assert_eq!(a.len(), b.len(), "{name}");
        let diff = max_abs_diff(&a, &b);
        assert!(diff < 1e-6, "{name}: states differ by {diff}");
    }
}

/// A state written to bytes and read back continues exactly as the original.
#[test]
fn a_saved_state_round_trips() {
    let device = Device::flex();
    for (name, config) in models() {
        let model = build(&config, 3, &device);
        let mut state = model.init_state(1, &device);
        for s in 0..2 {
            let seg = ids(&tokens(3 * SEG)[s * SEG..(s + 1) * SEG], &device);
            state = model.step(seg, state, false).1;
        }
        let bytes = state.to_bytes("m").unwrap();
        let back = State::from_bytes(&bytes, "m", &device).unwrap();
        model.check_state(&back, 1, &device).unwrap();
        let next = ids(&tokens(3 * SEG)[2 * SEG..], &device);
        let a = model.step(next.clone(), state, false).0.logits;
        let b = model.step(next, back, false).0.logits;
        assert_eq!(host(a), host(b), "{name}");
    }
}

/// Detaching the state cuts every gradient path into earlier segments: the embeddings of ids
/// that only the first segment holds get none from a loss on the second. Without the detach,
/// models whose state carries gradient (memory tokens) pass some back.
#[test]
fn detaching_cuts_the_gradient() {
    let device = Device::flex().autodiff();
    for (name, config) in models() {
        if config.backbone.is_some() && config.layout == Layout::Encoder {
            // BERT's answer head is its word embeddings, tied: every id's row gets gradient
            // from any logit, so this measure cannot separate the segments. tests/bert_rmt.rs
            // checks its memory's gradient instead.
            continue;
        }
        let carries = config.kind != ModelKind::Xl
            && config.kind != ModelKind::Infinity
            && config.memory_tokens > 0;
        for detach in [true, false] {
            let model = build(&config, 4, &device);
            let input = tokens(2 * SEG);
            let (_, state) = model.step(
                ids(&input[..SEG], &device),
                model.init_state(1, &device),
                false,
            );
            let state = if detach { state.detach() } else { state };
            let out = model.last_step(ids(&input[SEG..], &device), state);
            let loss = out.logits.powi_scalar(2).mean();
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            let g = grads
                .get::<2>(model.token_embedding().weight.id)
                .expect("embedding gradient");
            let first_segment = g.slice(s![0..SEG, ..]).abs().sum().into_scalar::<f32>();
            if detach {
                assert_eq!(
                    first_segment, 0.0,
                    "{name}: the detached state passed gradient"
                );
            } else if carries {
                assert!(first_segment > 0.0, "{name}: the state passed no gradient");
            }
        }
    }
}

/// Per model, trained on a 3-segment batch whose answers are all in the last segment: the loss
/// with full BPTT, and the loss and gradient norm at depth 0, where the first two segments are
/// windows without an answer that run without autodiff and without their output head.
fn truncated_on(device: &Device) -> Vec<(&'static str, f32, f32, f64)> {
    let device = device.clone().autodiff();
    let input = tokens(3 * SEG);
    let targets: Vec<i64> = input.iter().map(|&t| (t * 3 + 1) % VOCAB as i64).collect();
    let weights: Vec<f32> = (0..3 * SEG)
        .map(|i| if i >= 2 * SEG { 1.0 } else { 0.0 })
        .collect();
    let batch = Batch {
        inputs: ids(&input, &device),
        targets: ids(&targets, &device),
        weights: Tensor::<1>::from_floats(weights.as_slice(), &device).unsqueeze(),
        answer_tokens: SEG,
    };
    models()
        .into_iter()
        .map(|(name, config)| {
            let run = |bptt_depth| {
                let config = ModelConfig {
                    bptt_depth,
                    ..config.clone()
                };
                let model = build(&config, 5, &device);
                let out = forward_batch(&model, &batch, SEG);
                let loss = out.loss.clone().into_scalar::<f32>();
                let grads = GradientsParams::from_grads(out.loss.backward(), &model);
                (loss, remem::train::clip::global_norm(&model, &grads))
            };
            let (full, _) = run(None);
            let (cut, norm) = run(Some(0));
            assert!(norm > 0.0, "{name}: no gradient at depth 0");
            (name, full, cut, norm)
        })
        .collect()
}

/// Windows of `bptt_depth` without an answer change no number: the loss is the one full BPTT
/// gives.
#[test]
fn windows_without_an_answer_change_no_loss() {
    for (name, full, cut, _) in truncated_on(&Device::flex()) {
        assert!(
            (full - cut).abs() < 1e-5,
            "{name}: {full} in full, {cut} at depth 0"
        );
    }
}

/// The same on wgpu, which scores all segments at once: the loss is full BPTT's, and the
/// loss and gradient at depth 0 are the CPU's.
#[test]
fn windows_without_an_answer_change_no_loss_on_wgpu() {
    let Some(gpu) = common::wgpu_device() else {
        return;
    };
    let cpu = truncated_on(&Device::flex());
    for ((name, full, cut, norm), (_, _, cpu_cut, cpu_norm)) in
        truncated_on(&gpu).into_iter().zip(cpu)
    {
        assert!(
            (full - cut).abs() < 1e-4,
            "{name}: {full} in full, {cut} at depth 0"
        );
        assert!(
            (cut - cpu_cut).abs() < 1e-4,
            "{name}: {cut} on wgpu, {cpu_cut} on the CPU"
        );
        assert!(
            (norm - cpu_norm).abs() < 1e-3 * cpu_norm,
            "{name}: gradient norm {norm} on wgpu, {cpu_norm} on the CPU"
        );
    }
}

/// A state that does not fit the model is an error that says why, never a panic: another
/// model's state, another batch size, another width, infinite values.
#[test]
fn a_wrong_state_is_an_error() {
    let device = Device::flex();
    let all = models();
    let states: Vec<(&str, State)> = all
        .iter()
        .map(|(name, config)| {
            let model = build(config, 5, &device);
            let seg = ids(&tokens(SEG), &device);
            (
                *name,
                model.step(seg, model.init_state(1, &device), false).1,
            )
        })
        .collect();
    for (name, config) in &all {
        let model = build(config, 5, &device);
        for (other, state) in &states {
            let result = model.check_state(state, 1, &device);
            if other == name {
                result.unwrap_or_else(|e| panic!("{name} refused its own state: {e}"));
            } else if let Err(e) = result {
                assert!(!e.to_string().is_empty(), "{name} <- {other}");
            } else {
                // Only models with the same kind of state and the same shapes may share one:
                // the segment-level Transformer's empty state fits nothing else.
                let fits = |s: &State| {
                    format!(
                        "{:?}",
                        s.tensors().iter().map(|t| t.dims()).collect::<Vec<_>>()
                    )
                };
                let own = &states.iter().find(|(n, _)| n == name).unwrap().1;
                assert_eq!(
                    (own.kind(), fits(own)),
                    (state.kind(), fits(state)),
                    "{name} accepted {other}'s state"
                );
            }
        }
        let own = states.iter().find(|(n, _)| n == name).unwrap().1.clone();
        if own.tensors().is_empty() {
            continue;
        }
        let err = model.check_state(&own, 2, &device).unwrap_err().to_string();
        assert!(err.contains("shape"), "{name}, batch 2: {err}");
        // A pretrained backbone's width is its file's: the other models' states above already
        // differ from its own in width.
        if config.backbone.is_none() {
            let wide = Model::new(
                &ModelConfig {
                    d_model: 24,
                    n_heads: 2,
                    ..config.clone()
                },
                5,
                &device,
            );
            let err = wide.check_state(&own, 1, &device).unwrap_err().to_string();
            assert!(
                err.contains("shape") || err.contains("width"),
                "{name}, width 24: {err}"
            );
        }
        // A value of the saved state made infinite (and the file sealed again, so the checksum
        // passes and the value check is what must catch it).
        let file = remem::io::read(&own.to_bytes("m").unwrap(), remem::io::FileKind::State);
        let file = file.unwrap();
        let mut tensors: Vec<_> = file.tensors.into_iter().collect();
        let mut values: Vec<f32> = tensors[0].1.try_to_vec().unwrap();
        values[0] = f32::INFINITY;
        tensors[0].1 = TensorData::new(values, tensors[0].1.shape().clone());
        let bytes = remem::io::write(remem::io::FileKind::State, &tensors, file.metadata).unwrap();
        let bad = State::from_bytes(&bytes, "m", &device).unwrap();
        let err = model.check_state(&bad, 1, &device).unwrap_err().to_string();
        assert!(err.contains("infinite"), "{name}, infinite value: {err}");
    }
}
