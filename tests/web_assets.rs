//! The page's models (`web/assets/`): each loads, reaches the held-out accuracy that
//! `models.json` states next to it, and the download stays small.

mod common;

use std::path::Path;

use burn::prelude::*;
use remem::infer::Session;
use remem::train::{self, Checkpoint};
use serde_json::Value;

#[test]
fn every_web_model_reaches_the_accuracy_its_listing_states() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/assets");
    let listing: Value =
        serde_json::from_str(&std::fs::read_to_string(assets.join("models.json")).unwrap())
            .unwrap();
    let models = listing.as_array().unwrap();
    assert!(
        models.len() >= 4,
        "copy, associative retrieval, the infinity-former and memorize"
    );
    let device = Device::flex();
    let mut total = 0;
    for entry in models {
        let file = assets.join(entry["file"].as_str().unwrap());
        total += std::fs::metadata(&file).unwrap().len();
        let checkpoint = Checkpoint::load(&file).unwrap();
        assert!(
            checkpoint.optimizer.is_empty(),
            "{}: exported without optimiser state",
            file.display()
        );
        let mut config = checkpoint.config.clone();
        let eval = &entry["eval"];
        let samples = eval["samples"].as_u64().unwrap() as usize;
        // A retention model is evaluated as `remem eval --segments N` does: its facts buried
        // in the test documents of the book corpus (wherever this machine caches it), streamed.
        let retention = !config.task.data.is_empty();
        if retention {
            config.task.data = vec![common::books_dir().expect("the book corpus")];
            config.task.segments = eval["segments"].as_u64().unwrap() as usize;
        }
        let task = config.resolve().unwrap();
        let model = checkpoint.load_model(&file, &device).unwrap();
        let report = if retention {
            let task = task.with_noise(remem::task::text::Split::Test);
            train::eval::evaluate_retention(
                &model,
                &task,
                config.seed,
                samples,
                32,
                &device,
                |_| {},
            )
            .unwrap()
        } else {
            train::evaluate(&model, &task, config.seed, samples, 128, &device)
        };
        for (key, got) in [
            ("token_accuracy", report.token_accuracy),
            ("exact_match", report.exact_match),
        ] {
            let stated = eval[key].as_f64().unwrap();
            assert!(
                (got - stated).abs() < 0.005,
                "{}: {key} {got:.4}, models.json says {stated:.4}",
                file.display()
            );
        }
        assert!(
            report.token_accuracy > 2.0 * task.chance(),
            "{}: token accuracy {} is not above chance {}",
            file.display(),
            report.token_accuracy,
            task.chance()
        );
        // A trained checkpoint's session is the same model however it is loaded.
        let from_file = Session::from_checkpoint(&file, &device).unwrap();
        let in_memory = Session::new(model, &device).unwrap();
        assert_eq!(from_file.model_id(), in_memory.model_id());
    }
    assert!(total < 4_000_000, "the models weigh {total} bytes");
}
