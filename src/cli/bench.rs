//! `remem bench`: training and streaming figures as a table and as JSON; nothing is asserted.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use remem::bench::{self, BenchOptions};
use remem::device::{self, DeviceChoice};
use remem::model::ModelKind;

use super::{parse_device, parse_enum};

/// A comma-separated list of models; `none` (or nothing) for none.
#[derive(Debug, Clone)]
struct Models(Vec<ModelKind>);

fn parse_models(s: &str) -> Result<Models, String> {
    s.split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && *m != "none")
        .map(parse_enum::<ModelKind>)
        .collect::<Result<_, _>>()
        .map(Models)
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// auto, wgpu, vulkan, metal, dx12 or cpu.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceChoice,
    /// Presets, comma-separated: default (`remem train`'s model), copy-small, medium.
    #[arg(long, value_delimiter = ',', default_value = "copy-small,medium")]
    presets: Vec<String>,
    /// Models to train, comma-separated, or `none`.
    #[arg(long, default_value = "rmt,xl,memxl,transformer,infinity", value_parser = parse_models)]
    train_models: Models,
    /// Timed training steps per model.
    #[arg(long, default_value_t = 10)]
    train_steps: usize,
    /// Models to stream, comma-separated, or `none` (transformer = full attention over a
    /// growing cache, as far as it reaches).
    #[arg(long, default_value = "rmt,xl,memxl,transformer,infinity", value_parser = parse_models)]
    stream_models: Models,
    /// Stream lengths at which figures are taken.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4096,16384,65536,1048576"
    )]
    stream_tokens: Vec<usize>,
    /// Write the figures as JSON here.
    #[arg(long, default_value = "runs/bench.json")]
    json: PathBuf,
}

/// Run `remem bench`.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.stream_tokens.contains(&0) {
        bail!("--stream-tokens: each stream length must be at least 1 token");
    }
    if args.train_steps == 0 && !args.train_models.0.is_empty() {
        bail!("--train-steps must be at least 1 (or pass --train-models none)");
    }
    // Found out before the measurements, not after them.
    if args.json.is_dir() {
        bail!("--json {} is a folder: name a file", args.json.display());
    }
    if let Some(file) = args
        .json
        .ancestors()
        .skip(1)
        .find(|a| a.exists() && !a.is_dir())
    {
        bail!(
            "--json {}: {} is not a folder",
            args.json.display(),
            file.display()
        );
    }
    let mut stream_tokens = args.stream_tokens.clone();
    stream_tokens.sort_unstable();
    stream_tokens.dedup();
    let options = BenchOptions {
        presets: args.presets,
        train_models: args.train_models.0,
        train_steps: args.train_steps,
        stream_models: args.stream_models.0,
        stream_tokens,
    };
    let selected = device::select(args.device)?;
    eprintln!("device: {}", selected.description);
    let report = bench::run(&options, &selected.device, &selected.description, |line| {
        eprintln!("{line}")
    })?;
    print!("{}", bench::markdown(&report));
    if let Some(dir) = args.json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("{}", args.json.display()))?;
    println!("wrote {}", args.json.display());
    Ok(())
}
