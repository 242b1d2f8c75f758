//! Every shipped config parses and describes a model and task that fit together.

use remem::train::RunConfig;

#[test]
fn every_config_in_configs_resolves() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let mut config = RunConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
            config
                .resolve()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
    }
    assert!(n >= 4, "expected the paper configs, found {n}");
}
