//! `cargo bench`: the same figures as `remem bench` with its defaults, on the best device found.
//! Nothing is asserted; the table goes to stdout and the JSON to `runs/bench.json`.

use remem::bench::{self, BenchOptions};
use remem::device::{self, DeviceChoice};
use remem::model::ModelKind;

fn main() -> anyhow::Result<()> {
    remem::heap::keep_freed_memory();
    remem::threads::run_on_pool(bench)
}

fn bench() -> anyhow::Result<()> {
    let selected = device::select(DeviceChoice::Auto)?;
    let models = vec![
        ModelKind::Rmt,
        ModelKind::Xl,
        ModelKind::Memxl,
        ModelKind::Transformer,
        ModelKind::Infinity,
    ];
    let options = BenchOptions {
        presets: vec!["copy-small".into(), "medium".into()],
        train_models: models.clone(),
        train_steps: 10,
        stream_models: models,
        stream_tokens: vec![4096, 16384, 65536, 1 << 20],
    };
    let report = bench::run(&options, &selected.device, &selected.description, |line| {
        eprintln!("{line}")
    })?;
    print!("{}", bench::markdown(&report));
    std::fs::create_dir_all("runs")?;
    std::fs::write("runs/bench.json", serde_json::to_string_pretty(&report)?)?;
    Ok(())
}
