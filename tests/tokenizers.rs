//! Pretrained tokenizers give the ids the models were trained on: all-MiniLM-L6-v2's WordPiece
//! (from `vocab.txt` and from `tokenizer.json`) against tests/fixtures/minilm.json, SmolLM2's
//! byte-level BPE rebuilt from its GGUF file against tests/fixtures/smollm2.json (both written
//! by transformers); text comes back from the ids; bad files and ids are errors.

mod common;

use common::{fixture, ids};

use remem::gguf::Gguf;
use remem::tokenizer::Tokenizer;
use remem::tokenizer::pretrained::Pretrained;

#[test]
fn minilm_wordpiece_matches_transformers() {
    let Some(dir) = common::minilm_dir() else {
        return;
    };
    let fixture = fixture("minilm.json");
    for file in ["vocab.txt", "tokenizer.json"] {
        let tokenizer = Pretrained::from_file(&dir.join(file)).unwrap();
        assert_eq!(tokenizer.vocab_size(), 30_522, "{file}");
        assert_eq!(tokenizer.token_id("[CLS]"), Some(101));
        for case in fixture["cases"].as_array().unwrap() {
            let Some(text) = case["text"].as_str() else {
                continue;
            };
            let want = ids(&case["ids"]);
            // The fixture's ids are wrapped in [CLS] ... [SEP]; encoding adds no special tokens.
            let got = tokenizer.encode(text).unwrap();
            assert_eq!(got, want[1..want.len() - 1], "{file}: {text}");
            let back = tokenizer.decode(&got).unwrap();
            assert_eq!(back, text.to_lowercase(), "{file}");
        }
    }
}

#[test]
fn smollm2_bpe_from_gguf_matches_transformers() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let gguf = Gguf::read(&path).unwrap();
    let tokenizer = Pretrained::from_gguf(&gguf, &path).unwrap();
    assert_eq!(tokenizer.vocab_size(), 49_152);
    for case in fixture("smollm2.json")["texts"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let got = tokenizer.encode(text).unwrap();
        assert_eq!(got, ids(&case["ids"]), "{text:?}");
        assert_eq!(tokenizer.decode(&got).unwrap(), text);
    }
    // The file's pre-tokenizer (`smollm`) splits digits one by one, as SmolLM2 was trained.
    let digits = tokenizer.encode("In 1813.").unwrap();
    let pieces: Vec<String> = digits
        .iter()
        .map(|&id| tokenizer.decode(&[id]).unwrap())
        .collect();
    assert_eq!(pieces, ["In", " ", "1", "8", "1", "3", "."]);
    // Streamed in chunks of any size (cut inside words and characters), the ids are those of
    // the whole text.
    let text = "Chapter 1\n\nIt is a truth universally acknowledged, that a single man — naïve —\n\
                in possession of a good fortune\n must be in want of a wife.\n"
        .repeat(5);
    let whole = tokenizer.encode(&text).unwrap();
    let streamed = Tokenizer::Pretrained { path: path.clone() };
    for chunk in [1, 7, 64] {
        let mut encoder = streamed.encoder(49_152);
        let mut ids = Vec::new();
        for piece in text.as_bytes().chunks(chunk) {
            ids.extend(encoder.push(piece).unwrap());
        }
        ids.extend(encoder.finish().unwrap());
        assert_eq!(ids, whole, "chunks of {chunk} bytes");
    }
    // Control tokens are single ids.
    let im_start = tokenizer.token_id("<|im_start|>").unwrap();
    assert_eq!(tokenizer.encode("<|im_start|>").unwrap(), [im_start]);
}

#[test]
fn bad_tokenizer_files_and_ids_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("tokenizer.json");
    std::fs::write(&junk, "{ not json").unwrap();
    let e = Pretrained::from_file(&junk).unwrap_err().to_string();
    assert!(
        e.contains("tokenizer.json") && e.contains("not a tokenizer.json"),
        "{e}"
    );
    let missing = tmp.path().join("vocab.txt");
    let e = Pretrained::from_file(&missing).unwrap_err().to_string();
    assert!(e.contains("no such file"), "{e}");
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    assert!(Pretrained::from_file(&empty).is_err());

    let vocab = tmp.path().join("small.txt");
    std::fs::write(&vocab, "[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\nworld\n").unwrap();
    let tokenizer = Pretrained::from_file(&vocab).unwrap();
    assert_eq!(tokenizer.encode("Hello world").unwrap(), [4, 5]);
    let e = tokenizer.decode(&[4, 99]).unwrap_err().to_string();
    assert!(e.contains("token id 99"), "{e}");
    // A tokenizer with more ids than the model has embeddings is not its pair.
    let e = tokenizer.check_vocab(4).unwrap_err().to_string();
    assert!(e.contains("6 tokens") && e.contains("only 4"), "{e}");
    tokenizer.check_vocab(6).unwrap();
}
