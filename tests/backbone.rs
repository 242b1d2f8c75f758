//! Memory on a pretrained backbone: the backbone alone reads as the plain decoder does, memory
//! carries one segment's information to the next, a frozen backbone trains only the memory, and
//! `remem train`/`eval`/`stream --backbone` run end to end (on the tiny hub-format Llama of
//! tests/fixtures/tiny-llama, with a small WordPiece vocabulary written for it), with files that
//! changed refused. SmolLM2's real weights stream through `remem stream --backbone` and continue
//! a prompt as transformers does.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::optim::GradientsParams;
use burn::prelude::*;
use common::{check, fails_with, max_abs_diff, remem, values};
use remem::model::{Architecture, BackboneConfig, ModelConfig, ModelKind};
use remem::{Model, SegmentModel};

fn tiny_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama")
}

fn config(memory_tokens: usize, segment_len: usize) -> ModelConfig {
    let dir = tiny_dir();
    let arch = Architecture::open(&dir).unwrap();
    ModelConfig {
        kind: ModelKind::Rmt,
        memory_tokens,
        segment_len,
        backbone: Some(BackboneConfig {
            path: dir,
            train: false,
            digest: None,
        }),
        ..ModelConfig::default()
    }
    .with_backbone(&arch)
}

fn tokens(ids: &[u32], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
    Tensor::from_data(TensorData::new(data, [1, ids.len()]), device)
}

fn reference() -> (Vec<u32>, Vec<f32>) {
    let json = common::fixture("tiny-llama/reference.json");
    (common::ids(&json["ids"]), common::floats(&json["logits"]))
}

#[test]
fn the_backbone_alone_reads_as_the_decoder_does() {
    let device = Device::flex();
    let (ids, want) = reference();
    let model = Model::build(&config(0, ids.len()), 0, &device).unwrap();
    let (out, _) = model.step(tokens(&ids, &device), model.init_state(1, &device), false);
    let diff = max_abs_diff(&values(out.logits), &want);
    assert!(diff < 1e-4, "logits differ from transformers' by {diff}");
}

#[test]
fn memory_carries_the_first_segment_into_the_second() {
    let device = Device::flex();
    let (a, b, next) = (
        [5u32, 9, 14, 2, 7, 30],
        [40u32, 8, 1, 66, 3, 12],
        [20u32, 21, 22],
    );
    for memory in [0, 3] {
        let model = Model::build(&config(memory, 6), 1, &device).unwrap();
        let second = |first: &[u32]| {
            let (_, state) =
                model.step(tokens(first, &device), model.init_state(1, &device), false);
            values(model.step(tokens(&next, &device), state, false).0.logits)
        };
        let diff = max_abs_diff(&second(&a), &second(&b));
        match memory {
            0 => assert_eq!(diff, 0.0, "segments without memory are independent"),
            _ => assert!(diff > 1e-3, "the memory carries nothing ({diff})"),
        }
    }
}

#[test]
fn a_frozen_backbone_trains_only_the_memory() {
    let device = Device::flex().autodiff();
    for train in [false, true] {
        let mut config = config(2, 5);
        config.backbone.as_mut().unwrap().train = train;
        let model = Model::build(&config, 3, &device).unwrap();
        let state = model.init_state(2, &device);
        let first = Tensor::<2, Int>::from_data([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], &device);
        let (_, state) = model.step(first, state, false);
        let second = Tensor::<2, Int>::from_data([[11, 12, 13], [14, 15, 16]], &device);
        let out = model.last_step(second, state);
        let grads = GradientsParams::from_grads(out.logits.square().mean().backward(), &model);
        // The initial memory and the read layer's weight and bias; with the backbone, its 21
        // tensors too (embedding, 2 layers of 9, final norm, output layer).
        let want = if train { 3 + 21 } else { 3 };
        assert_eq!(grads.len(), want, "train = {train}");
    }
}

/// The infinity-former's long-term memory in every layer of the tiny Llama, its settings
/// small.
fn ltm_config(segment_len: usize) -> ModelConfig {
    let mut config = config(0, segment_len);
    config.kind = ModelKind::Infinity;
    config.mem_len = Some(0);
    config.ltm.basis = 8;
    config.ltm.samples = 6;
    config
}

#[test]
fn the_long_term_memory_starts_silent_and_learns_to_carry() {
    use burn::optim::AdamConfig;
    let device = Device::flex().autodiff();
    let (ids, want) = reference();
    let (a, b, next) = (
        [5u32, 9, 14, 2, 7, 30],
        [40u32, 8, 1, 66, 3, 12],
        [20u32, 21, 22],
    );
    for bias in [true, false] {
        let mut config = ltm_config(ids.len());
        config.ltm.bias = bias;
        let model = Model::build(&config, 1, &device).unwrap();
        // From an empty memory: the pretrained decoder's logits?
        let alone = |model: &Model| {
            let (out, _) = model.step(tokens(&ids, &device), model.init_state(1, &device), false);
            max_abs_diff(&values(out.logits), &want)
        };
        // Silent at first: the model is the pretrained decoder.
        let diff = alone(&model);
        assert!(diff < 1e-4, "logits differ from transformers' by {diff}");
        let second = |model: &Model, first: &[u32]| {
            let (_, state) =
                model.step(tokens(first, &device), model.init_state(1, &device), false);
            model.step(tokens(&next, &device), state, false).0.logits
        };
        let diff = max_abs_diff(&values(second(&model, &a)), &values(second(&model, &b)));
        assert_eq!(diff, 0.0, "a silent memory carries nothing");

        // One step of training on the second segment's logits wakes the memories up; the
        // frozen backbone gets no gradient: 12 tensors in each of the 2 layers' memories (8
        // without the 4 biases).
        let loss = second(&model, &a).square().mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        assert_eq!(grads.len(), 2 * if bias { 12 } else { 8 });
        let model = AdamConfig::new().init().step(1e-2, model, grads);
        let diff = max_abs_diff(&values(second(&model, &a)), &values(second(&model, &b)));
        assert!(
            diff > 1e-4,
            "the memory carries nothing after training ({diff})"
        );
        // From an empty memory, biases make the read an adapter; without them it reads nothing
        // and the model is the pretrained decoder again.
        let diff = alone(&model);
        match bias {
            true => assert!(diff > 1e-4, "the biases changed nothing ({diff})"),
            false => assert!(diff < 1e-4, "an empty memory changed the logits by {diff}"),
        }
    }
}

/// A copy of the tiny Llama with a WordPiece vocabulary of its 96 ids: letters, their word
/// pieces, digits and punctuation.
fn tiny_with_vocabulary(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny_dir().join(file), dir.join(file)).unwrap();
    }
    let mut vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .map(String::from)
        .to_vec();
    vocab.extend(('a'..='z').map(String::from));
    vocab.extend(('a'..='z').map(|c| format!("##{c}")));
    vocab.extend(('0'..='9').map(String::from));
    vocab.extend(".,;:!?'\"-()".chars().map(String::from));
    while vocab.len() < 96 {
        vocab.push(format!("[unused{}]", vocab.len()));
    }
    std::fs::write(dir.join("vocab.txt"), vocab.join("\n") + "\n").unwrap();
}

#[test]
fn train_eval_and_stream_with_a_backbone() {
    let tmp = tempfile::tempdir().unwrap();
    let backbone = tmp.path().join("backbone");
    tiny_with_vocabulary(&backbone);
    let data = tmp.path().join("books");
    std::fs::create_dir(&data).unwrap();
    let line = "it was the best of times, it was the worst of times; it was the age of wisdom. ";
    for i in 0..12 {
        std::fs::write(data.join(format!("{i}.txt")), line.repeat(20 + i)).unwrap();
    }
    let (b, d) = (backbone.to_str().unwrap(), data.to_str().unwrap());
    // RMT's memory tokens, and the infinity-former's long-term memory in every layer.
    for (kind, memory) in [
        ("rmt", ["--memory-tokens", "2"]),
        ("infinity", ["--mem-len", "0"]),
    ] {
        let run = tmp.path().join(kind);
        train_eval_and_stream(b, d, &run, kind, memory);
    }

    // A backbone file that changed is refused by name.
    let weights = backbone.join("model.safetensors");
    let mut changed = std::fs::read(&weights).unwrap();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    std::fs::write(&weights, changed).unwrap();
    let r = tmp.path().join("rmt");
    let out = remem(&[
        "eval",
        "--checkpoint",
        r.to_str().unwrap(),
        "--quiet",
        "--device",
        "cpu",
    ]);
    fails_with(&out, "changed since");
}

/// `remem train` (kind `kind`, memory flags `memory`) on the backbone `b` and the books `d`
/// into `run`, then eval (carried and reset), stream and resume from its checkpoint.
fn train_eval_and_stream(b: &str, d: &str, run: &Path, kind: &str, memory: [&str; 2]) {
    let r = run.to_str().unwrap();
    let flags = [
        "train",
        "--backbone",
        b,
        "--data",
        d,
        "--model",
        kind,
        "--segments",
        "2",
        "--segment-len",
        "8",
        memory[0],
        memory[1],
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--eval-every",
        "2",
        "--eval-samples",
        "2",
        "--checkpoint-every",
        "2",
        "--run-dir",
        r,
        "--quiet",
        "--device",
        "cpu",
    ];
    check(&remem(&flags));
    // The frozen backbone is read from its file, not copied into the checkpoint.
    let bytes = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = file.names();
    names.sort();
    if kind == "rmt" {
        assert_eq!(
            names,
            ["memory", "read.bias", "read.weight", "remem.optimizer"]
        );
    } else {
        // 12 tensors in each of the 2 layers' long-term memories.
        assert_eq!(names.len(), 2 * 12 + 1, "{names:?}");
        assert!(
            names
                .iter()
                .all(|n| n.starts_with("ltm.") || *n == "remem.optimizer"),
            "{names:?}"
        );
    }

    let out = check(&remem(&[
        "eval",
        "--checkpoint",
        r,
        "--quiet",
        "--device",
        "cpu",
    ]));
    assert!(
        out.contains("bits per byte") && out.contains("perplexity"),
        "{out}"
    );
    // The control: every segment from the initial memory scores differently from memory carried
    // through the document (the model has memory, and the test documents span many segments).
    let bits = |extra: &[&str]| {
        let base = [
            "eval",
            "--checkpoint",
            r,
            "--quiet",
            "--device",
            "cpu",
            "--json",
        ];
        let json: serde_json::Value =
            serde_json::from_str(&check(&remem(&[&base[..], extra].concat()))).unwrap();
        json["bits_per_byte"].as_f64().unwrap()
    };
    let (carried, reset) = (bits(&[]), bits(&["--reset-memory"]));
    assert!(carried.is_finite() && reset.is_finite());
    assert_ne!(carried, reset);
    let out = check(&remem(&[
        "stream",
        "--checkpoint",
        r,
        "--text",
        "it was the age of",
        "--generate",
        "4",
        "--quiet",
        "--device",
        "cpu",
    ]));
    assert!(!out.is_empty());
    let resumed = check(&remem(&[
        "train",
        "--resume",
        "--run-dir",
        r,
        "--steps",
        "6",
        "--quiet",
        "--device",
        "cpu",
    ]));
    assert!(resumed.contains("done: 6 steps"), "{resumed}");
}

#[test]
fn a_config_names_its_backbone_under_the_home_folder() {
    let home = tempfile::tempdir().unwrap();
    tiny_with_vocabulary(&home.path().join("tiny"));
    let data = home.path().join("books");
    std::fs::create_dir(&data).unwrap();
    for i in 0..3 {
        std::fs::write(data.join(format!("{i}.txt")), "a b c d e f ".repeat(100)).unwrap();
    }
    let config = home.path().join("run.toml");
    std::fs::write(
        &config,
        "[model]\nmemory_tokens = 2\nsegment_len = 4\n[model.backbone]\npath = \"~/tiny\"\n\
         [task]\nkind = \"text\"\nsegments = 2\n[train]\nsteps = 1\nbatch_size = 1\n",
    )
    .unwrap();
    let run = home.path().join("run");
    let out = Command::new(env!("CARGO_BIN_EXE_remem"))
        .env("HOME", home.path())
        .args(["train", "--config", config.to_str().unwrap(), "--data"])
        .args([data.to_str().unwrap(), "--run-dir", run.to_str().unwrap()])
        .args(["--quiet", "--device", "cpu"])
        .output()
        .unwrap();
    check(&out);
    let written = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let expanded = home.path().join("tiny");
    assert!(
        written.contains(expanded.to_str().unwrap()) && written.contains("digest"),
        "{written}"
    );
}

#[test]
fn a_backbone_is_refused_where_it_cannot_work() {
    let tmp = tempfile::tempdir().unwrap();
    let b = tiny_dir();
    let b = b.to_str().unwrap();
    // No tokenizer in the folder.
    let data = tmp.path().to_str().unwrap();
    for name in ["a", "b", "c"] {
        std::fs::write(
            tmp.path().join(format!("{name}.txt")),
            "some text ".repeat(500),
        )
        .unwrap();
    }
    let out = remem(&[
        "train",
        "--backbone",
        b,
        "--data",
        data,
        "--quiet",
        "--device",
        "cpu",
    ]);
    fails_with(&out, "vocab.txt");
    // A synthetic task writes symbol ids the backbone's tokenizer never made.
    let mut vocab_dir = tmp.path().join("v");
    tiny_with_vocabulary(&vocab_dir);
    let v = vocab_dir.as_mut_os_str().to_str().unwrap().to_string();
    let out = remem(&[
        "train",
        "--backbone",
        &v,
        "--task",
        "copy",
        "--quiet",
        "--device",
        "cpu",
    ]);
    fails_with(&out, "task.kind");
    // More positions than the backbone was trained for (64).
    let out = remem(&[
        "train",
        "--backbone",
        &v,
        "--data",
        data,
        "--segment-len",
        "80",
        "--quiet",
        "--device",
        "cpu",
    ]);
    fails_with(&out, "at most 64 positions");
    // Kinds not built on a backbone, and the infinity-former with a Transformer-XL cache.
    for (kind, field) in [("xl", "model.kind"), ("infinity", "model.mem_len")] {
        let out = remem(&[
            "train",
            "--backbone",
            &v,
            "--data",
            data,
            "--model",
            kind,
            "--quiet",
            "--device",
            "cpu",
        ]);
        fails_with(&out, field);
    }
}

#[test]
fn smollm2_streams_and_continues_a_prompt_as_transformers_does() {
    let Some(gguf) = common::smollm2_gguf() else {
        return;
    };
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smollm2.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let prompt = fixture["greedy"]["prompt"].as_str().unwrap();
    let want = fixture["greedy"]["text"].as_str().unwrap();
    let out = check(&remem(&[
        "stream",
        "--backbone",
        gguf.to_str().unwrap(),
        "--text",
        prompt,
        "--generate",
        "16",
        "--quiet",
        "--device",
        "cpu",
    ]));
    assert_eq!(out.trim_end(), want.trim_end());
}
