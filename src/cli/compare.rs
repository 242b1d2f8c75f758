//! `remem compare`: models x segment counts x seeds on one budget.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use remem::device::DeviceChoice;
use remem::model::ModelKind;
use remem::task::TaskKind;
use remem::train::{self, RunConfig};

use super::{parse_device, parse_enum};

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Base run config (model sizes, training budget); the grid overrides model, segments, seed.
    #[arg(long)]
    config: Option<PathBuf>,
    /// copy, reverse, associative or quadratic.
    #[arg(long, value_parser = parse_enum::<TaskKind>)]
    task: Option<TaskKind>,
    /// Input tokens in total, split evenly into each segment count (default: the base config's
    /// segments * segment_len).
    #[arg(long)]
    length: Option<usize>,
    /// Segment counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3,6,9")]
    segments: Vec<usize>,
    /// Models, comma-separated: rmt, transformer, xl, memxl.
    #[arg(long, value_delimiter = ',', default_value = "transformer,xl,rmt,memxl", value_parser = parse_enum::<ModelKind>)]
    models: Vec<ModelKind>,
    /// Seeds per cell (seeds 1..=N).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Optimiser steps of every run.
    #[arg(long)]
    steps: Option<usize>,
    /// Memory tokens (RMT, MemTr-XL), and by default Transformer-XL's cache length.
    #[arg(long)]
    memory_tokens: Option<usize>,
    /// Transformer-XL's cache length (default: --memory-tokens).
    #[arg(long)]
    mem_len: Option<usize>,
    /// Output folder (default: runs/compare-<task>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// auto, wgpu, vulkan, metal, dx12 or cpu.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceChoice,
    /// Stop after training this many runs (the rest follow when compare runs again).
    #[arg(long, hide = true)]
    max_runs: Option<usize>,
}

/// `remem compare`: train the grid (each run a child `remem train`, so a killed compare
/// resumes), then write the table, CSV and plot.
pub fn run(args: CompareArgs) -> Result<()> {
    use remem::compare::{self, RunResult, RunSpec};
    use std::time::Instant;

    let mut base = match &args.config {
        Some(path) => RunConfig::load(path)?,
        None => RunConfig::default(),
    };
    if let Some(task) = args.task {
        base.task.kind = task;
    }
    if let Some(steps) = args.steps {
        base.train.steps = steps;
    }
    if let Some(m) = args.memory_tokens {
        base.model.memory_tokens = m;
    }
    if args.mem_len.is_some() {
        base.model.mem_len = args.mem_len;
    }
    let length = args
        .length
        .unwrap_or(base.task.segments * base.model.segment_len);
    if args.segments.is_empty() || args.models.is_empty() || args.seeds == 0 {
        bail!("--segments, --models and --seeds must each name at least one");
    }
    // Every cell must be a valid run before anything is trained.
    let config_for = |spec: &RunSpec| -> Result<RunConfig> {
        if spec.segments == 0 || !length.is_multiple_of(spec.segments) {
            bail!(
                "--length {length} does not split into {} equal segments",
                spec.segments
            );
        }
        let mut c = base.clone();
        c.model.kind = spec.model;
        c.task.segments = spec.segments;
        c.model.segment_len = length / spec.segments;
        c.seed = spec.seed;
        if let Some(cur) = &mut c.train.curriculum {
            // A cell shorter than the curriculum's first stage trains on its own length.
            cur.start_segments = cur.start_segments.min(spec.segments);
        }
        c.resolve()
            .with_context(|| format!("run {}", spec.name()))?;
        Ok(c)
    };
    let seeds: Vec<u64> = (1..=args.seeds).collect();
    let runs = compare::grid(&args.models, &args.segments, &seeds);
    for spec in &runs {
        config_for(spec)?;
    }
    let task_name = serde_json::to_value(base.task.kind)?
        .as_str()
        .unwrap_or("task")
        .to_string();
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| Path::new("runs").join(format!("compare-{task_name}")));
    std::fs::create_dir_all(out.join("runs")).with_context(|| format!("{}", out.display()))?;
    let base_path = out.join("base.toml");
    let base_text = base.to_toml();
    match std::fs::read_to_string(&base_path) {
        Ok(existing) if existing != base_text => bail!(
            "{} holds a comparison with another base config; choose another --out",
            out.display()
        ),
        _ => std::fs::write(&base_path, &base_text)
            .with_context(|| format!("{}", base_path.display()))?,
    }

    let exe = std::env::current_exe().context("cannot find the remem executable")?;
    let device = args.device.to_string();
    let began = Instant::now();
    let mut trained = 0usize;
    let mut results = Vec::new();
    for (i, spec) in runs.iter().enumerate() {
        let dir = out.join("runs").join(spec.name());
        let summary_path = dir.join(train::SUMMARY);
        let read_summary = || -> Result<train::Summary> {
            let text = std::fs::read_to_string(&summary_path)?;
            Ok(serde_json::from_str(&text)?)
        };
        if let Ok(summary) = read_summary() {
            results.push(RunResult {
                spec: *spec,
                outcome: Ok(summary),
            });
            continue;
        }
        if args.max_runs.is_some_and(|m| trained >= m) {
            eprintln!("stopping after {trained} runs; run the same command again to continue");
            break;
        }
        let eta = if trained > 0 {
            let per = began.elapsed().as_secs_f64() / trained as f64;
            let left = runs.len() - i;
            format!(", about {:.0} min left", per * left as f64 / 60.0)
        } else {
            String::new()
        };
        eprintln!("[{}/{}] {}{eta}", i + 1, runs.len(), spec.name());
        let c = config_for(spec)?;
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["train", "--quiet", "--device", &device, "--config"])
            .arg(&base_path)
            .args(["--model", &compare::model_name(spec.model)])
            .args(["--segments", &spec.segments.to_string()])
            .args(["--segment-len", &c.model.segment_len.to_string()])
            .args(["--seed", &spec.seed.to_string()])
            .arg("--run-dir")
            .arg(&dir);
        if dir.join(train::CHECKPOINT).exists() {
            // An interrupted run: continue it from its checkpoint.
            cmd = std::process::Command::new(&exe);
            cmd.args([
                "train",
                "--quiet",
                "--device",
                &device,
                "--resume",
                "--run-dir",
            ])
            .arg(&dir);
        }
        let output = cmd.output().context("cannot start a training run")?;
        trained += 1;
        let outcome = if output.status.success() {
            read_summary().map_err(|e| format!("no summary: {e}"))
        } else {
            let err = String::from_utf8_lossy(&output.stderr);
            Err(err.lines().last().unwrap_or("training failed").to_string())
        };
        match &outcome {
            Ok(s) => eprintln!(
                "      token accuracy {:.3}, exact match {:.3}, {:.0} tokens/s, {:.0} s",
                s.eval.token_accuracy, s.eval.exact_match, s.tokens_per_s, s.elapsed_s
            ),
            Err(e) => eprintln!("      failed: {e}"),
        }
        results.push(RunResult {
            spec: *spec,
            outcome,
        });
    }

    let md = out.join("results.md");
    let csv = out.join("results.csv");
    let png = out.join("accuracy.png");
    let header = format!(
        "{} runs of {} ({task_name}, {length} input tokens, {} steps each, held-out samples {}).\n\n",
        results.len(),
        runs.len(),
        base.train.steps,
        base.train.eval_samples
    );
    std::fs::write(&md, header + &compare::table::markdown(&results))
        .with_context(|| format!("{}", md.display()))?;
    std::fs::write(&csv, compare::table::csv(&results))
        .with_context(|| format!("{}", csv.display()))?;
    compare::plot::accuracy_png(
        &results,
        ("TOKEN ACCURACY", |s| s.eval.token_accuracy),
        &png,
    )?;
    print!("{}", compare::table::markdown(&results));
    println!(
        "wrote {}, {} and {}",
        md.display(),
        csv.display(),
        png.display()
    );
    Ok(())
}
