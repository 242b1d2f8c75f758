//! GGUF files: SmolLM2-135M's real file reads as llama.cpp's `gguf` package reads it
//! (tests/fixtures/smollm2-gguf.json, written by scripts/gguf_fixture.py): metadata, the tensor
//! table, and Q8_0, Q4_1 and F32 tensors dequantised to the same weights. Q4_0 and F16 blocks are
//! checked against weights worked out by hand, and bad files are errors naming the problem.

mod common;

use remem::gguf::{Gguf, Kind, Value, dequantise};
use serde_json::Value as Json;

fn fixture() -> Json {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/smollm2-gguf.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn smollm2_reads_as_llama_cpp_reads_it() {
    let Some(path) = common::smollm2_gguf() else {
        return;
    };
    let file = Gguf::read(&path).unwrap();
    let fixture = fixture();
    assert_eq!(file.version, 3);
    assert_eq!(
        file.tensors.len() as u64,
        fixture["tensor_count"].as_u64().unwrap()
    );
    for (key, want) in fixture["metadata"].as_object().unwrap() {
        let got = file.get(key).unwrap();
        match want {
            Json::String(s) => assert_eq!(got.as_str(), Some(s.as_str()), "{key}"),
            Json::Number(n) => {
                let got = got.as_f64().unwrap();
                let want = n.as_f64().unwrap();
                assert!(
                    (got - want).abs() <= 1e-12 * want.abs(),
                    "{key}: {got} vs {want}"
                );
            }
            other => panic!("{key}: unexpected {other}"),
        }
    }
    for (key, n) in fixture["array_lengths"].as_object().unwrap() {
        let array = file.get(key).unwrap().as_array().unwrap();
        assert_eq!(array.len() as u64, n.as_u64().unwrap(), "{key}");
        let samples = fixture["array_samples"][key].as_array().unwrap();
        for (i, want) in [0, 1, 1000].into_iter().zip(samples) {
            assert_eq!(array[i].as_str(), want.as_str(), "{key}[{i}]");
        }
    }
    for (name, want) in fixture["tensors"].as_object().unwrap() {
        let info = file.info(name).unwrap();
        let kind = format!("{:?}", info.kind.clone().unwrap()).to_uppercase();
        assert_eq!(kind, want["type"].as_str().unwrap(), "{name}");
        let data = file.tensor(name).unwrap();
        let shape: Vec<usize> = want["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(data.shape().as_slice(), shape.as_slice(), "{name}");
        let values: Vec<f32> = data.try_to_vec().unwrap();
        let floats = |key: &str| -> Vec<f32> {
            want[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        };
        assert_eq!(values[..16], floats("first16")[..], "{name}: first weights");
        assert_eq!(
            values[values.len() - 16..],
            floats("last16")[..],
            "{name}: last weights"
        );
        let sum: f64 = values.iter().map(|&v| v as f64).sum();
        let want_sum = want["sum"].as_f64().unwrap();
        assert!(
            (sum - want_sum).abs() < 1e-6 * want_sum.abs().max(1.0),
            "{name}: sum {sum} vs {want_sum}"
        );
    }
}

#[test]
fn blocks_dequantise_to_the_weights_worked_out_by_hand() {
    // f16 1.5 = 0x3E00, f16 -2.0 = 0xC000, f16 0.25 = 0x3400.
    let (one_half, minus_two, quarter) = (0x3e00u16, 0xc000u16, 0x3400u16);
    // Q4_0: d = 1.5; byte j holds weight j (low nibble) and weight j + 16 (high nibble).
    let mut q4_0 = one_half.to_le_bytes().to_vec();
    q4_0.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    let w = dequantise(Kind::Q4_0, &q4_0);
    let want: Vec<f32> = (0..16)
        .map(|j| 1.5 * (j as f32 - 8.0))
        .chain((0..16).map(|j| 1.5 * ((15 - j) as f32 - 8.0)))
        .collect();
    assert_eq!(w, want);
    // Q4_1: d = 0.25, m = -2.
    let mut q4_1 = quarter.to_le_bytes().to_vec();
    q4_1.extend(minus_two.to_le_bytes());
    q4_1.extend((0..16u8).map(|j| j | (j << 4)));
    let w = dequantise(Kind::Q4_1, &q4_1);
    let want: Vec<f32> = (0..32).map(|j| 0.25 * (j % 16) as f32 - 2.0).collect();
    assert_eq!(w, want);
    // Q8_0: d = -2, signed bytes.
    let mut q8 = minus_two.to_le_bytes().to_vec();
    q8.extend((0..32).map(|j| (j as i8 - 16) as u8));
    let w = dequantise(Kind::Q8_0, &q8);
    let want: Vec<f32> = (0..32).map(|j| -2.0 * (j as f32 - 16.0)).collect();
    assert_eq!(w, want);
    // F16.
    let f16: Vec<u8> = [one_half, minus_two, quarter]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    assert_eq!(dequantise(Kind::F16, &f16), [1.5, -2.0, 0.25]);
}

/// A small GGUF file: one metadata entry and tensors given as (name, dims, type id, bytes).
fn gguf(tensors: &[(&str, &[u64], u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend(1u64.to_le_bytes());
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    };
    string(&mut out, "general.architecture");
    out.extend(8u32.to_le_bytes());
    string(&mut out, "llama");
    let mut offset = 0u64;
    for (name, dims, kind, bytes) in tensors {
        string(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        for d in *dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(kind.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += bytes.len().next_multiple_of(32) as u64;
    }
    out.resize(out.len().next_multiple_of(32), 0);
    for (_, _, _, bytes) in tensors {
        out.extend(bytes);
        out.resize(out.len().next_multiple_of(32), 0);
    }
    out
}

#[test]
fn bad_gguf_files_are_errors_naming_the_problem() {
    let weights: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let good = gguf(&[
        ("a.weight", &[2, 2], 0, weights.clone()),
        ("b.weight", &[256], 10, vec![0; 84]),
    ]);
    let file = Gguf::parse(good.clone(), "good.gguf").unwrap();
    assert_eq!(
        file.get("general.architecture").unwrap(),
        &Value::Str("llama".into())
    );
    let a = file.tensor("a.weight").unwrap();
    assert_eq!(a.shape().as_slice(), [2, 2]);
    assert_eq!(a.try_to_vec::<f32>().unwrap(), [1.0, 2.0, 3.0, 4.0]);
    let err = |r: remem::Result<()>| r.unwrap_err().to_string();
    // A type remem cannot dequantise is named, with the tensor.
    let e = err(file.tensor("b.weight").map(|_| ()));
    assert!(e.contains("b.weight") && e.contains("Q2_K"), "{e}");
    let e = err(file.tensor("c.weight").map(|_| ()));
    assert!(e.contains("no tensor `c.weight`"), "{e}");
    let e = err(file.get("llama.block_count").map(|_| ()));
    assert!(e.contains("llama.block_count"), "{e}");
    // Not GGUF; another version; truncated anywhere; a count that cannot be.
    let e = err(Gguf::parse(b"PK\x03\x04 a zip".to_vec(), "x.gguf").map(|_| ()));
    assert!(e.contains("not a GGUF file") && e.contains("x.gguf"), "{e}");
    let mut v9 = good.clone();
    v9[4] = 9;
    let e = err(Gguf::parse(v9, "v9.gguf").map(|_| ()));
    assert!(e.contains("version 9"), "{e}");
    // One f32 tensor: its 16 bytes end 16 bytes before the file does (padding).
    let small = gguf(&[("a.weight", &[2, 2], 0, weights)]);
    Gguf::parse(small.clone(), "small.gguf").unwrap();
    for cut in 4..small.len() - 16 {
        let e = err(Gguf::parse(small[..cut].to_vec(), "cut.gguf").map(|_| ()));
        assert!(
            e.contains("truncated") || e.contains("runs past the end"),
            "cut at {cut}: {e}"
        );
    }
    let mut huge = good.clone();
    huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let e = err(Gguf::parse(huge, "huge.gguf").map(|_| ()));
    assert!(e.contains("runs past the end"), "{e}");
}
