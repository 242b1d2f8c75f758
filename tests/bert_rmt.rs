//! RMT on all-MiniLM-L6-v2 (the RMT-1M recipe on a BERT encoder): the retention tasks written
//! in the model's own WordPiece tokens, memory that carries one segment into the next and the
//! gradient back into the memory, and `remem train`/`eval` with `--backbone` on a BERT folder.

mod common;

use std::path::Path;

use burn::optim::GradientsParams;
use burn::prelude::*;
use common::{check, fails_with, remem, values};
use rand::SeedableRng;
use rand::rngs::StdRng;
use remem::model::{Architecture, BackboneConfig, Layout, ModelConfig, ModelKind};
use remem::task::retention::PLACES;
use remem::task::{Task, TaskConfig, TaskKind};
use remem::tokenizer::Tokenizer;
use remem::{Model, SegmentModel};

/// Book-like documents that name places in forms a byte mask misses but WordPiece splits into
/// a place word (`kitchens`, `Officer's`).
fn corpus(dir: &Path) {
    let line = "The kitchens were quiet and the Officer's garden-gate was shut. Nobody came! \
                Then the hallways emptied; who knew? ";
    for i in 0..6 {
        std::fs::write(dir.join(format!("{i}.txt")), line.repeat(60 + i)).unwrap();
    }
}

#[test]
fn qa1_in_wordpiece_tokens_fills_the_input_and_only_its_facts_name_places() {
    let Some(minilm) = common::minilm_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    corpus(tmp.path());
    let tokenizer = Tokenizer::Pretrained {
        path: minilm.clone(),
    };
    let config = TaskConfig {
        kind: TaskKind::Qa1,
        segments: 4,
        data: vec![tmp.path().to_path_buf()],
        ..TaskConfig::default()
    };
    let task = Task::new(config, 64)
        .unwrap()
        .with_tokenizer(tokenizer.clone())
        .unwrap();
    let places: Vec<u32> = PLACES
        .iter()
        .map(|p| tokenizer.encode(p, usize::MAX).unwrap()[0])
        .collect();
    let mut rng = StdRng::seed_from_u64(4);
    for _ in 0..20 {
        let sample = task.try_sample(&mut rng).unwrap();
        let start = sample.answer.iter().position(|&a| a).unwrap();
        // The answer ends where the widest answer would, in tokens.
        assert_eq!(
            start,
            4 * 64 + 1 - remem::task::retention::answer_width(TaskKind::Qa1)
        );
        let text = tokenizer.decode(&sample.tokens[..start]);
        let answer = tokenizer.decode(&sample.tokens[start..]);
        let (story, question) = text.rsplit_once("where is ").unwrap();
        let who = question.trim_end_matches([' ', '?']);
        // Replay the moves: every place the text names is in a move, and the answer is the
        // asked person's last place.
        let words: Vec<&str> = story
            .split(|c: char| !c.is_ascii_alphabetic())
            .filter(|w| !w.is_empty())
            .collect();
        let mut last = None;
        for (i, w) in words.iter().enumerate() {
            if PLACES.contains(w) {
                assert_eq!(
                    words[i - 2..i],
                    ["to", "the"],
                    "a place outside a fact: {story}"
                );
                let person = words[i - 4];
                if person == who {
                    last = Some(*w);
                }
            }
        }
        assert_eq!(Some(answer.trim_end_matches([' ', '.'])), last, "{text}");
        // No place token in the noise: places appear exactly as often as the moves.
        let moves = words.windows(2).filter(|w| w == &["to", "the"]).count();
        let named = sample.tokens[..start]
            .iter()
            .filter(|t| places.contains(t))
            .count();
        assert_eq!(named, moves, "{text}");
    }
}

fn minilm_rmt(minilm: &Path, memory_tokens: usize, segment_len: usize, train: bool) -> Model {
    let arch = Architecture::open(minilm).unwrap();
    let config = ModelConfig {
        kind: ModelKind::Rmt,
        memory_tokens,
        segment_len,
        tokenizer: Some(Tokenizer::Pretrained {
            path: minilm.to_path_buf(),
        }),
        backbone: Some(BackboneConfig {
            path: minilm.to_path_buf(),
            train,
            digest: None,
        }),
        ..ModelConfig::default()
    }
    .with_backbone(&arch);
    assert_eq!(config.layout, Layout::Encoder);
    config.validate().unwrap();
    Model::build(&config, 1, &Device::flex().autodiff()).unwrap()
}

fn ids(text: &str, minilm: &Path, len: usize) -> Tensor<2, Int> {
    let tokenizer = Tokenizer::Pretrained {
        path: minilm.to_path_buf(),
    };
    let mut ids: Vec<i64> = tokenizer
        .encode(text, usize::MAX)
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    ids.resize(len, 0);
    Tensor::from_data(TensorData::new(ids, [1, len]), &Device::flex().autodiff())
}

#[test]
fn memory_on_minilm_carries_the_first_segment_and_trains_through_it() {
    let Some(minilm) = common::minilm_dir() else {
        return;
    };
    let model = minilm_rmt(&minilm, 4, 12, false);
    let device = Device::flex().autodiff();
    let question = ids("where is mary?", &minilm, 12);
    let after = |first: &str| {
        let state = model.init_state(1, &device);
        let (_, state) = model.step(ids(first, &minilm, 12), state, false);
        model.step(question.clone(), state, false).0.logits
    };
    let kitchen = after("mary went to the kitchen.");
    let garden = after("mary went to the garden.");
    let diff = common::max_abs_diff(&values(kitchen.clone()), &values(garden));
    assert!(
        diff > 1e-4,
        "the second segment does not see the first ({diff})"
    );

    // The loss on the second segment reaches the initial memory through the first; the frozen
    // backbone gets no gradient.
    let loss = kitchen.slice(s![.., 3..4, ..]).sum();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    // The initial memory, the read layer's weight and bias, the answer head's transform (weight,
    // bias) and its word bias: 6 tensors, none of the backbone's.
    assert_eq!(grads.len(), 6);
}

#[test]
fn train_and_evaluate_rmt_on_minilm_from_the_command_line() {
    let Some(minilm) = common::minilm_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("books");
    std::fs::create_dir(&data).unwrap();
    corpus(&data);
    let run = tmp.path().join("run");
    let (b, d, r) = (
        minilm.to_str().unwrap(),
        data.to_str().unwrap(),
        run.to_str().unwrap(),
    );
    let common = ["--quiet", "--device", "cpu"];
    let flags = [
        "train",
        "--backbone",
        b,
        "--task",
        "qa1",
        "--data",
        d,
        "--segments",
        "2",
        "--segment-len",
        "48",
        "--memory-tokens",
        "4",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--eval-every",
        "2",
        "--eval-samples",
        "2",
        "--run-dir",
        r,
    ];
    check(&remem(&[&flags[..], &common[..]].concat()));
    // The frozen backbone stays in its file; the checkpoint holds what trained.
    let bytes = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = file.names();
    names.sort();
    assert_eq!(
        names,
        [
            "head.bias",
            "head.weight",
            "head_bias",
            "memory",
            "read.bias",
            "read.weight",
            "remem.optimizer"
        ]
    );
    // Evaluated far past its training length, streamed.
    let out = check(&remem(
        &[
            &[
                "eval",
                "--checkpoint",
                r,
                "--segments",
                "12",
                "--samples",
                "3",
                "--json",
            ][..],
            &common[..],
        ]
        .concat(),
    ));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let exact = json["exact_match"].as_f64().unwrap();
    assert!(
        (0.0..=1.0).contains(&exact) && json["samples"] == 3,
        "{json}"
    );

    // Streaming a question through it prints an answer: a place.
    let answer = check(&remem(
        &[
            &[
                "stream",
                "--checkpoint",
                r,
                "--text",
                "Mary went to the kitchen. The garden-gate was shut.\nWhere is Mary? ",
            ][..],
            &common[..],
        ]
        .concat(),
    ));
    let answer = answer.trim();
    assert!(
        answer
            .split(|c: char| !c.is_ascii_alphabetic())
            .any(|w| !w.is_empty()),
        "no answer: {answer:?}"
    );

    // A BERT answers retention questions; it does not predict text.
    let text = remem(&[&["train", "--backbone", b, "--data", d][..], &common[..]].concat());
    fails_with(&text, "encoder");
    let wide = remem(
        &[
            &[
                "train",
                "--backbone",
                b,
                "--task",
                "qa1",
                "--data",
                d,
                "--segment-len",
                "510",
            ][..],
            &common[..],
        ]
        .concat(),
    );
    fails_with(&wide, "at most 512 positions");
}

/// MiniLM with 4 memory tokens, fine-tuned for 80 steps, answers RMT-1M's memorize task across
/// a segment boundary: the fact opens the first of 2 segments of 16 tokens, the question ends
/// the second, so only memory carries the answer over (chance: 1 in 6).
#[test]
fn minilm_with_memory_learns_to_carry_a_fact_across_segments() {
    let Some(minilm) = common::minilm_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("books");
    std::fs::create_dir(&data).unwrap();
    corpus(&data);
    let run = tmp.path().join("run");
    let flags = [
        "train",
        "--backbone",
        minilm.to_str().unwrap(),
        "--train-backbone",
        "--task",
        "memorize",
        "--data",
        data.to_str().unwrap(),
        "--segments",
        "2",
        "--segment-len",
        "16",
        "--memory-tokens",
        "4",
        "--steps",
        "80",
        "--batch-size",
        "8",
        "--lr",
        "1e-4",
        "--eval-every",
        "80",
        "--eval-samples",
        "64",
        "--run-dir",
        run.to_str().unwrap(),
        "--quiet",
        "--device",
        "cpu",
    ];
    check(&remem(&flags));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .rfind(|v| v["event"] == "eval")
        .expect("an evaluation");
    let exact = last["exact_match"].as_f64().unwrap();
    assert!(exact >= 0.9, "held-out exact match {exact} (chance 1/6)");

    // `remem stream` answers a question about a fact read one segment earlier: 6 tokens of
    // fact, 14 of noise, 4 of question and the 8 answer slots fill the 2 segments of 16 as in
    // training.
    for (fact, who, place) in [
        ("Mary went to the kitchen.", "Mary", "kitchen"),
        ("John moved to the garden.", "John", "garden"),
    ] {
        let text = format!(
            "{fact} Nobody came! Then the gate was shut; who knew? It was\nWhere is {who}? "
        );
        let out = remem(&[
            "stream",
            "--checkpoint",
            run.to_str().unwrap(),
            "--text",
            &text,
            "--quiet",
            "--device",
            "cpu",
        ]);
        assert_eq!(check(&out).trim(), format!("{place}."), "{text}");
    }
}
