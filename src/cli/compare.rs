//! `remem compare`: models x segment counts x seeds on one budget.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;

use remem::compare::Contender;
use remem::device::DeviceChoice;
use remem::nn::LtmSampling;
use remem::task::TaskKind;
use remem::train::{self, RunConfig};

use super::{parse_device, parse_enum};

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Base run config (model sizes, training budget); the grid overrides model, segments, seed.
    #[arg(long)]
    config: Option<PathBuf>,
    /// copy, reverse, associative, quadratic, sort, text, or a retention task (memorize, detect,
    /// reasoning, qa1, qa2, qa3, needle, needles, variables; these need --data).
    #[arg(long, value_parser = parse_enum::<TaskKind>)]
    task: Option<TaskKind>,
    /// Input tokens in total, split evenly into each segment count (default: the base config's
    /// segments * segment_len).
    #[arg(long, conflicts_with = "segment_len")]
    length: Option<usize>,
    /// Keep segments this long instead, so each segment count is another input length (how
    /// the sorting task grows beyond a cache).
    #[arg(long)]
    segment_len: Option<usize>,
    /// Segment counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,3,6,9")]
    segments: Vec<usize>,
    /// Models, comma-separated: rmt, rmt-rotary, armt, armt-rotary, transformer, xl, memxl,
    /// infinity, infinity-sticky.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "transformer,xl,rmt,memxl"
    )]
    models: Vec<Contender>,
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
    /// Text files or folders: the text task (or a retention task's noise with --task).
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Output folder (default: runs/compare-<task>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// auto, wgpu, vulkan, metal, dx12 or cpu.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceChoice,
    /// Runs trained at once (each child gets an equal share of the CPU threads).
    #[arg(long, default_value_t = 1)]
    jobs: usize,
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
    if !args.data.is_empty() {
        base.task.data = args.data.clone();
        if args.task.is_none() {
            base.task.kind = TaskKind::Text;
        }
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
    if args.segments.is_empty() || args.models.is_empty() || args.seeds == 0 || args.jobs == 0 {
        bail!("--segments, --models, --seeds and --jobs must each be at least one");
    }
    let length = args
        .length
        .unwrap_or(base.task.segments * base.model.segment_len);
    let segment_len_of = |segments: usize| -> Result<usize> {
        match args.segment_len {
            Some(t) => Ok(t),
            None if segments > 0 && length.is_multiple_of(segments) => Ok(length / segments),
            None => bail!("--length {length} does not split into {segments} equal segments"),
        }
    };
    // Every cell must be a valid run before anything is trained.
    let config_for = |spec: &RunSpec| -> Result<RunConfig> {
        let mut c = base.clone();
        c.model.kind = spec.model.kind;
        if spec.model.sticky {
            c.model.ltm.sampling = LtmSampling::Sticky;
        }
        if spec.model.rotary {
            c.model.positions = remem::model::Positions::Rotary;
        }
        if spec.model.delta {
            c.model.store = remem::nn::StoreRule::Delta;
        }
        c.task.segments = spec.segments;
        c.model.segment_len = segment_len_of(spec.segments)?;
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

    let summary_of = |spec: &RunSpec| -> Result<train::Summary> {
        let path = out.join("runs").join(spec.name()).join(train::SUMMARY);
        let text = std::fs::read_to_string(path)?;
        Ok(serde_json::from_str(&text)?)
    };
    let mut todo: Vec<(usize, RunSpec)> = runs
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, spec)| summary_of(spec).is_err())
        .collect();
    if let Some(max) = args.max_runs
        && todo.len() > max
    {
        todo.truncate(max);
        eprintln!("training {max} runs; run the same command again to continue");
    }
    let total = todo.len();
    let exe = std::env::current_exe().context("cannot find the remem executable")?;
    let device = args.device.to_string();
    // Each child gets an equal share of the threads unless the user chose a count.
    let threads = std::env::var_os("RAYON_NUM_THREADS").is_none().then(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / args.jobs).max(1).to_string()
    });
    let train_one = |spec: &RunSpec| -> Result<train::Summary, String> {
        let dir = out.join("runs").join(spec.name());
        let c = config_for(spec).map_err(|e| e.to_string())?;
        let mut cmd = std::process::Command::new(&exe);
        cmd.args(["train", "--quiet", "--device", &device]);
        if dir.join(train::CHECKPOINT).exists() {
            // An interrupted run: continue it from its checkpoint.
            cmd.arg("--resume");
        } else {
            cmd.arg("--config")
                .arg(&base_path)
                .args([
                    "--model",
                    &compare::model_name(remem::compare::Contender::of(c.model.kind)),
                ])
                .args(["--segments", &spec.segments.to_string()])
                .args(["--segment-len", &c.model.segment_len.to_string()])
                .args(["--seed", &spec.seed.to_string()]);
            if spec.model.sticky {
                cmd.args(["--ltm-sampling", "sticky"]);
            }
            if spec.model.rotary {
                cmd.args(["--positions", "rotary"]);
            }
            if spec.model.delta {
                cmd.args(["--store", "delta"]);
            }
        }
        cmd.arg("--run-dir").arg(&dir);
        if let Some(n) = &threads {
            cmd.env("RAYON_NUM_THREADS", n);
        }
        let output = cmd
            .output()
            .map_err(|e| format!("cannot start a training run: {e}"))?;
        if output.status.success() {
            summary_of(spec).map_err(|e| format!("no summary: {e}"))
        } else {
            let err = String::from_utf8_lossy(&output.stderr);
            Err(err.lines().last().unwrap_or("training failed").to_string())
        }
    };

    let began = Instant::now();
    let queue = std::sync::Mutex::new(todo.into_iter());
    let done = std::sync::Mutex::new(0usize);
    let failures = std::sync::Mutex::new(std::collections::HashMap::new());
    std::thread::scope(|scope| {
        for _ in 0..args.jobs.min(total.max(1)) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue").next();
                    let Some((i, spec)) = next else { break };
                    eprintln!("[{}/{}] {} started", i + 1, runs.len(), spec.name());
                    let outcome = train_one(&spec);
                    let mut finished = done.lock().expect("count");
                    *finished += 1;
                    let per = began.elapsed().as_secs_f64() / *finished as f64;
                    let left = (total - *finished) as f64 * per / args.jobs as f64 / 60.0;
                    match &outcome {
                        Ok(s) => eprintln!(
                            "      {}: token accuracy {:.3}, {}, {:.0} tokens/s, {:.0} s (about {left:.0} min left)",
                            spec.name(),
                            s.eval.token_accuracy,
                            match s.eval.bits_per_byte {
                                Some(bpb) => format!("{bpb:.3} bits per byte"),
                                None => format!("exact match {:.3}", s.eval.exact_match),
                            },
                            s.tokens_per_s,
                            s.elapsed_s
                        ),
                        Err(e) => eprintln!("      {}: failed: {e}", spec.name()),
                    }
                    if let Err(e) = outcome {
                        failures.lock().expect("failures").insert(i, e);
                    }
                }
            });
        }
    });
    // Finished runs, and the runs that failed now with why; runs not trained yet
    // (--max-runs) are left out.
    let mut failures = failures.into_inner().expect("failures");
    let results: Vec<RunResult> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, spec)| {
            let outcome = match summary_of(spec) {
                Ok(summary) => Ok(summary),
                Err(_) => Err(failures.remove(&i)?),
            };
            Some(RunResult {
                spec: *spec,
                outcome,
            })
        })
        .collect();

    let md = out.join("results.md");
    let csv = out.join("results.csv");
    let png = out.join("accuracy.png");
    let inputs = match args.segment_len {
        Some(t) => format!("segments of {t} tokens"),
        None => format!("{length} input tokens"),
    };
    let header = format!(
        "{} runs of {} ({task_name}, {inputs}, {} steps each, held-out samples {}).\n\n",
        results.len(),
        runs.len(),
        base.train.steps,
        base.train.eval_samples
    );
    std::fs::write(&md, header + &compare::table::markdown(&results))
        .with_context(|| format!("{}", md.display()))?;
    std::fs::write(&csv, compare::table::csv(&results))
        .with_context(|| format!("{}", csv.display()))?;
    if base.task.kind == TaskKind::Text {
        let bits = |s: &train::Summary| s.eval.bits_per_byte.unwrap_or(f64::NAN);
        let range = compare::plot::fitted_range(
            results
                .iter()
                .filter_map(|r| r.outcome.as_ref().ok().map(bits)),
        );
        compare::plot::accuracy_png(&results, ("BITS PER BYTE", bits), range, &png)?;
    } else {
        compare::plot::accuracy_png(
            &results,
            ("TOKEN ACCURACY", |s| s.eval.token_accuracy),
            (0.0, 1.0),
            &png,
        )?;
    }
    print!("{}", compare::table::markdown(&results));
    println!(
        "wrote {}, {} and {}",
        md.display(),
        csv.display(),
        png.display()
    );
    Ok(())
}
