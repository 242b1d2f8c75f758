//! BERT from Hugging Face's files: all-MiniLM-L6-v2's real weights give what transformers gives
//! (tests/fixtures/minilm.json, written by scripts/bert_fixture.py), and a file that does not fit
//! its config is an error naming the tensors.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use burn::prelude::*;
use common::{floats, max_abs_diff, values};
use remem::model::{Bert, BertConfig};
use serde_json::Value;

#[test]
fn minilm_matches_transformers() {
    let Some(dir) = common::minilm_dir() else {
        return;
    };
    let device = Device::flex();
    let (bert, config) = Bert::load(&dir, &device).unwrap();
    assert_eq!(config.hidden_size, 384);
    let fixture = common::fixture("minilm.json");
    for case in fixture["cases"].as_array().unwrap() {
        let ids: Vec<i64> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        let n = ids.len();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [1, n]), &device);
        if let Some(want) = case.get("embeddings_first16") {
            let got = values(bert.embed(ids.clone()).slice(s![.., .., 0..16]));
            let diff = max_abs_diff(&got, &floats(want));
            assert!(diff < 1e-4, "embeddings differ by {diff}");
        }
        let hidden = bert.forward(ids);
        let got = values(hidden.clone().slice(s![.., .., 0..16]));
        let diff = max_abs_diff(&got, &floats(&case["hidden_first16"]));
        assert!(diff < 1e-3, "{n} tokens: hidden states differ by {diff}");
        eprintln!("{n} tokens: hidden states within {diff:.1e} of transformers");
        let sums = values(hidden.sum_dim(2));
        let diff = max_abs_diff(&sums, &floats(&case["hidden_sum"]));
        assert!(diff < 1e-3 * 384.0, "{n} tokens: row sums differ by {diff}");
    }
}

/// A copy of the model folder whose weights file holds the tensors `edit` leaves.
fn edited(
    dir: &Path,
    out: &Path,
    edit: impl FnOnce(&mut BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) {
    std::fs::create_dir_all(out).unwrap();
    std::fs::copy(dir.join("config.json"), out.join("config.json")).unwrap();
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: BTreeMap<_, _> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, (v.dtype(), v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut tensors);
    common::write_safetensors(
        &out.join("model.safetensors"),
        tensors.iter().map(|(n, (d, s, b))| (n, *d, &s[..], &b[..])),
    );
}

#[test]
fn a_bert_file_that_does_not_fit_is_an_error_naming_the_tensor() {
    let Some(dir) = common::minilm_dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let err = |path: &Path| Bert::load(path, &device).unwrap_err().to_string();

    let missing = tmp.path().join("missing");
    edited(&dir, &missing, |t| {
        t.remove("encoder.layer.3.attention.self.key.weight");
    });
    let e = err(&missing);
    assert!(
        e.contains("missing") && e.contains("layers.3.attn.key.weight"),
        "{e}"
    );

    let extra = tmp.path().join("extra");
    edited(&dir, &extra, |t| {
        let copy = t["encoder.layer.0.output.dense.bias"].clone();
        t.insert("encoder.layer.0.output.extra.bias".into(), copy);
    });
    let e = err(&extra);
    assert!(e.contains("encoder.layer.0.output.extra.bias"), "{e}");

    let shape = tmp.path().join("shape");
    edited(&dir, &shape, |t| {
        let (d, _, b) = t["embeddings.LayerNorm.weight"].clone();
        let half = b[..b.len() / 2].to_vec();
        t.insert("embeddings.LayerNorm.weight".into(), (d, vec![192], half));
    });
    let e = err(&shape);
    assert!(e.contains("norm.gamma") && e.contains("192"), "{e}");

    // A config that disagrees with the weights: more layers than the file has.
    let config = tmp.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let mut json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    json["num_hidden_layers"] = 7.into();
    std::fs::write(config.join("config.json"), json.to_string()).unwrap();
    std::os::unix::fs::symlink(
        dir.join("model.safetensors"),
        config.join("model.safetensors"),
    )
    .unwrap();
    let e = err(&config);
    assert!(e.contains("missing") && e.contains("layers.6."), "{e}");

    // Not safetensors at all; a config that is not BERT's.
    let junk = tmp.path().join("junk");
    std::fs::create_dir(&junk).unwrap();
    std::fs::copy(dir.join("config.json"), junk.join("config.json")).unwrap();
    std::fs::write(junk.join("model.safetensors"), b"GGUF not this").unwrap();
    let e = err(&junk);
    assert!(e.contains("model.safetensors"), "{e}");
    json["num_hidden_layers"] = 6.into();
    json["hidden_act"] = "relu".into();
    std::fs::write(junk.join("config.json"), json.to_string()).unwrap();
    let e = err(&junk);
    assert!(e.contains("hidden_act"), "{e}");
    assert!(BertConfig::from_file(&junk.join("nothing.json")).is_err());
}
