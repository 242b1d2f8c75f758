//! The command line: `remem train` and `remem eval`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use remem::device::{self, DeviceChoice};
use remem::model::{Layout, ModelKind};
use remem::task::TaskKind;
use remem::train::{self, Checkpoint, RunConfig, Start, TrainOptions};

/// Memory-augmented transformers (RMT) on Burn: train and evaluate on any GPU or the CPU.
#[derive(Parser, Debug)]
#[command(name = "remem", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once
enum Command {
    /// Train a model (default: RMT on copy over 3 segments) and evaluate it on a held-out split.
    Train(TrainArgs),
    /// Evaluate a checkpoint on a held-out split: teacher-forced and greedy accuracy.
    Eval(EvalArgs),
    /// Train models x segment counts x seeds on one budget; tabulate and plot held-out accuracy.
    Compare(CompareArgs),
}

#[derive(Args, Debug)]
struct CompareArgs {
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

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse().map_err(|e: remem::Error| e.to_string())
}

fn parse_depth(s: &str) -> Result<Option<usize>, String> {
    match s {
        "full" | "none" | "unbounded" => Ok(None),
        n => n
            .parse()
            .map(Some)
            .map_err(|_| format!("`{n}` is not a number or `full`")),
    }
}

fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_ascii_lowercase()))
        .map_err(|e| e.to_string())
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// A TOML run config (see configs/); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// auto, wgpu, vulkan, metal, dx12 or cpu.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceChoice,
    /// Run folder for metrics and checkpoints (default: runs/<task>-<model>-N, a new one).
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Continue the checkpoint in --run-dir (its config is used; --steps may extend it).
    #[arg(long, requires = "run_dir")]
    resume: bool,
    /// Seed for weights, data and dropout.
    #[arg(long)]
    seed: Option<u64>,
    /// Optimiser steps.
    #[arg(long)]
    steps: Option<usize>,
    /// Sequences per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// copy, reverse, associative or quadratic.
    #[arg(long, value_parser = parse_enum::<TaskKind>)]
    task: Option<TaskKind>,
    /// Number of segments the input is split into.
    #[arg(long)]
    segments: Option<usize>,
    /// Tokens per segment.
    #[arg(long)]
    segment_len: Option<usize>,
    /// The model: rmt, transformer (full attention over the whole input), xl (Transformer-XL)
    /// or memxl (Transformer-XL with memory tokens).
    #[arg(long, value_parser = parse_enum::<ModelKind>)]
    model: Option<ModelKind>,
    /// RMT memory layout: decoder or encoder.
    #[arg(long, value_parser = parse_enum::<Layout>)]
    layout: Option<Layout>,
    /// Memory tokens (0 = no memory).
    #[arg(long)]
    memory_tokens: Option<usize>,
    /// Gradient flows through at most this many memory transitions (`full` = unbounded).
    #[arg(long, value_parser = parse_depth)]
    bptt_depth: Option<Option<usize>>,
    /// Cached states per layer for xl and memxl (default: --memory-tokens).
    #[arg(long)]
    mem_len: Option<usize>,
    /// Model width.
    #[arg(long)]
    d_model: Option<usize>,
    /// Transformer layers.
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    heads: Option<usize>,
    /// Feed-forward width.
    #[arg(long)]
    d_ff: Option<usize>,
    /// Evaluate every N steps.
    #[arg(long)]
    eval_every: Option<usize>,
    /// Held-out samples per evaluation.
    #[arg(long)]
    eval_samples: Option<usize>,
    /// Checkpoint every N steps.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Stop once greedy exact match on the held-out split reaches this (0..1).
    #[arg(long)]
    target_exact: Option<f64>,
    /// Curriculum: start with this many segments and add one whenever training accuracy
    /// passes the threshold.
    #[arg(long)]
    curriculum_from: Option<usize>,
    /// Stop after N steps of this invocation (leaves a resumable checkpoint).
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// The checkpoint file (runs/<name>/checkpoint.remem) or its run folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// auto, wgpu, vulkan, metal, dx12 or cpu.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceChoice,
    /// Held-out samples.
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Evaluate on this many segments instead of the trained number.
    #[arg(long)]
    segments: Option<usize>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

impl TrainArgs {
    fn run_config(&self) -> Result<RunConfig> {
        let mut c = match &self.config {
            Some(path) => RunConfig::load(path)?,
            None => RunConfig::default(),
        };
        macro_rules! set {
            ($field:expr, $value:expr) => {
                if let Some(v) = $value.clone() {
                    $field = v;
                }
            };
        }
        set!(c.seed, self.seed);
        set!(c.train.steps, self.steps);
        set!(c.train.batch_size, self.batch_size);
        set!(c.train.lr, self.lr);
        set!(c.task.kind, self.task);
        set!(c.task.segments, self.segments);
        set!(c.model.segment_len, self.segment_len);
        set!(c.model.kind, self.model);
        set!(c.model.layout, self.layout);
        set!(c.model.memory_tokens, self.memory_tokens);
        set!(c.model.bptt_depth, self.bptt_depth);
        if self.mem_len.is_some() {
            c.model.mem_len = self.mem_len;
        }
        set!(c.model.d_model, self.d_model);
        set!(c.model.n_layers, self.layers);
        set!(c.model.n_heads, self.heads);
        set!(c.model.d_ff, self.d_ff);
        set!(c.train.eval_every, self.eval_every);
        set!(c.train.eval_samples, self.eval_samples);
        set!(c.train.checkpoint_every, self.checkpoint_every);
        if self.target_exact.is_some() {
            c.train.target_exact = self.target_exact;
        }
        if let Some(start) = self.curriculum_from {
            let mut cur = c.train.curriculum.clone().unwrap_or_default();
            cur.start_segments = start;
            c.train.curriculum = Some(cur);
        }
        Ok(c)
    }
}

/// `runs/<task>-<model>-N` for the first N not taken.
fn fresh_run_dir(config: &RunConfig) -> PathBuf {
    let base = format!("{:?}-{:?}", config.task.kind, config.model.kind).to_lowercase();
    (1..)
        .map(|n| Path::new("runs").join(format!("{base}-{n}")))
        .find(|p| !p.exists())
        .expect("some run folder is free")
}

fn train_cmd(args: TrainArgs) -> Result<()> {
    let (start, run_dir) = if args.resume {
        let dir = args
            .run_dir
            .clone()
            .expect("clap requires --run-dir with --resume");
        (Start::Resume { steps: args.steps }, dir)
    } else {
        let mut config = args.run_config()?;
        // Validate before opening a device or creating folders.
        config.resolve()?;
        let dir = args
            .run_dir
            .clone()
            .unwrap_or_else(|| fresh_run_dir(&config));
        (Start::Fresh(config), dir)
    };
    let device = device::select(args.device)?;
    eprintln!("device: {}", device.description);
    eprintln!("run folder: {}", run_dir.display());
    let options = TrainOptions {
        run_dir,
        progress: !args.quiet,
        stop_after: args.stop_after,
    };
    let summary = train::train(start, &device, &options)?;
    println!(
        "done: {} steps in {:.1} s ({:.0} tokens/s); held-out: token accuracy {:.4}, greedy exact match {:.4} ({} samples); checkpoint {}",
        summary.steps,
        summary.elapsed_s,
        summary.tokens_per_s,
        summary.eval.token_accuracy,
        summary.eval.exact_match,
        summary.eval.samples,
        summary.checkpoint.display()
    );
    Ok(())
}

fn eval_cmd(args: EvalArgs) -> Result<()> {
    let path = if args.checkpoint.is_dir() {
        args.checkpoint.join(train::CHECKPOINT)
    } else {
        args.checkpoint.clone()
    };
    let ck = Checkpoint::load(&path)?;
    let mut config = ck.config.clone();
    if let Some(s) = args.segments {
        config.task.segments = s;
    }
    let task = config.resolve()?;
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    let device = device::select(args.device)?;
    eprintln!("device: {}", device.description);
    let model = train::load_model(&ck, &path, &device.device)?;
    let report = train::evaluate(
        &model,
        &task,
        config.seed,
        args.samples,
        128,
        &device.device,
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).context("report serialises")?
        );
    } else {
        println!(
            "{:?} with {} segments, {} held-out samples (step {}): loss {:.4}, token accuracy {:.4}, greedy token accuracy {:.4}, greedy exact match {:.4}",
            task.config().kind,
            task.config().segments,
            report.samples,
            ck.progress.step,
            report.loss,
            report.token_accuracy,
            report.greedy_token_accuracy,
            report.exact_match
        );
    }
    Ok(())
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train_cmd(args),
        Command::Eval(args) => eval_cmd(args),
        Command::Compare(args) => compare_cmd(args),
    }
}

fn compare_cmd(args: CompareArgs) -> Result<()> {
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
