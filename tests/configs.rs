//! Every shipped config parses and describes a model and task that fit together.

mod common;

use std::path::{Path, PathBuf};

use remem::train::RunConfig;

/// The `.toml` files under `dir`, subfolders included.
fn tomls(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(tomls(&path));
        } else if path.extension().is_some_and(|e| e == "toml") {
            found.push(path);
        }
    }
    found
}

#[test]
fn every_config_in_configs_resolves() {
    let configs = tomls(&Path::new(env!("CARGO_MANIFEST_DIR")).join("configs"));
    for path in &configs {
        let mut config = RunConfig::load(path).unwrap_or_else(|e| panic!("{e}"));
        // Text configs leave the files to --data: they are checked against the book corpus.
        if config.task.kind == remem::task::TaskKind::Text
            || remem::task::retention::is_retention(config.task.kind)
        {
            let Some(books) = common::books_dir() else {
                continue;
            };
            config.task.data = vec![books];
        }
        // Backbone configs name a fetched model under the home folder: checked against the
        // copy the tests fetch (which $REMEM_DATA may put elsewhere).
        if let Some(backbone) = config.model.backbone.as_mut() {
            let fetched = match backbone.path.file_name().and_then(|n| n.to_str()) {
                Some("all-MiniLM-L6-v2") => common::minilm_dir(),
                _ => common::smollm2_gguf(),
            };
            let Some(fetched) = fetched else {
                continue;
            };
            assert!(
                backbone.path.ends_with(fetched.file_name().unwrap()),
                "{}: an unknown backbone",
                path.display()
            );
            backbone.path = fetched;
        }
        config
            .resolve()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    // The paper settings and the four comparison bases.
    assert!(configs.len() >= 8, "found only {configs:?}");
}
