//! The command line: `remem train`, `eval`, `compare`, `stream`, `bench`, `export` and `data`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

mod bench;
mod compare;
mod stream;

use remem::device::{self, DeviceChoice};
use remem::model::{BackboneConfig, Layout, ModelKind, Positions};
use remem::nn::{LtmSampling, StoreRule};
use remem::task::TaskKind;
use remem::task::text::{Corpus, Split};
use remem::train::{self, Checkpoint, Measure, RunConfig, Start, TrainOptions};

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
    Compare(compare::CompareArgs),
    /// Stream a file or stdin of any length through a trained model and print what comes next.
    Stream(stream::StreamArgs),
    /// Measure training and streaming speed, memory and FLOP/s (a table and JSON).
    Bench(bench::BenchArgs),
    /// Write a checkpoint's model without its optimiser state (for inference: the web page).
    Export(ExportArgs),
    /// List the documents of a text corpus and their split, or write one split's text.
    Data(DataArgs),
}

/// A checkpoint file, or the checkpoint inside a run folder.
pub(crate) fn checkpoint_path(path: &Path) -> PathBuf {
    if path.is_dir() {
        // A run folder of an earlier build holds only the old checkpoint: name it, so the
        // error says what it is and how to convert it.
        let legacy = path.join(train::LEGACY_CHECKPOINT);
        if !path.join(train::CHECKPOINT).exists() && legacy.exists() {
            return legacy;
        }
        path.join(train::CHECKPOINT)
    } else {
        path.to_path_buf()
    }
}

pub(crate) fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse().map_err(|e: remem::Error| e.to_string())
}

/// `--bptt-depth`: a number of memory transitions, or `full` (no limit).
#[derive(Debug, Clone, Copy)]
struct Depth(Option<usize>);

fn parse_depth(s: &str) -> Result<Depth, String> {
    match s {
        "full" | "none" | "unbounded" => Ok(Depth(None)),
        n => n
            .parse()
            .map(|d| Depth(Some(d)))
            .map_err(|_| format!("`{n}` is not a number or `full`")),
    }
}

pub(crate) fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
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
    /// With --resume --steps: stretch the learning rate's decay over the new total (the extra
    /// steps then train above the floor again) instead of keeping the run's schedule, whose
    /// rate stays at its floor after the old total.
    #[arg(long, requires_all = ["resume", "steps"])]
    stretch_schedule: bool,
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
    /// The learning rate's floor, reached at the last step.
    #[arg(long)]
    min_lr: Option<f64>,
    /// Steps over which the learning rate rises linearly to its peak.
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// copy, reverse, associative, quadratic, sort, text, or a retention task (memorize, detect,
    /// reasoning, qa1, qa2, qa3, needle, needles, variables; these need --data).
    #[arg(long, value_parser = parse_enum::<TaskKind>)]
    task: Option<TaskKind>,
    /// Number of segments the input is split into.
    #[arg(long)]
    segments: Option<usize>,
    /// Moves in a qa1 story (default 6)
    #[arg(long)]
    moves: Option<usize>,
    /// qa1 training: end each story with this many questions (up to 4), each about another
    /// person who moved, every answer scored; held-out stories ask one
    #[arg(long)]
    questions: Option<usize>,
    /// Retention training: this fraction of training stories (0 to 1) has every fact in its
    /// last --late-segments segments, where truncated BPTT reaches their writes
    #[arg(long)]
    late_facts: Option<f64>,
    /// The segments at a late story's end that hold its facts (with --late-facts)
    #[arg(long)]
    late_segments: Option<usize>,
    /// Tokens per segment.
    #[arg(long)]
    segment_len: Option<usize>,
    /// The model: rmt, transformer (full attention over the whole input), xl (Transformer-XL),
    /// memxl (Transformer-XL with memory tokens), infinity (the infinity-former) or armt (RMT
    /// with an associative memory in every layer).
    #[arg(long, value_parser = parse_enum::<ModelKind>)]
    model: Option<ModelKind>,
    /// RMT memory layout: decoder or encoder.
    #[arg(long, value_parser = parse_enum::<Layout>)]
    layout: Option<Layout>,
    /// Memory tokens (0 = no memory).
    #[arg(long)]
    memory_tokens: Option<usize>,
    /// RMT's positions: learned (default) or rotary.
    #[arg(long, value_parser = parse_enum::<Positions>)]
    positions: Option<Positions>,
    /// ARMT's stores: normalised (default, the paper's reads) or delta (no normaliser:
    /// nothing stored is magnified; better on text).
    #[arg(long, value_parser = parse_enum::<StoreRule>)]
    store: Option<StoreRule>,
    /// RMT: blend each new memory into the old one through a learned gate instead of
    /// replacing it (not in the paper).
    #[arg(long)]
    memory_gate: bool,
    /// Each segment's loss reaches back through the memory of at most this many earlier
    /// segments, the last segment's through exactly this many (`full` = unbounded).
    #[arg(long, value_parser = parse_depth)]
    bptt_depth: Option<Depth>,
    /// Cached states per layer for xl and memxl (default: --memory-tokens).
    #[arg(long)]
    mem_len: Option<usize>,
    /// The infinity-former's memory sampling: uniform or sticky.
    #[arg(long, value_parser = parse_enum::<LtmSampling>)]
    ltm_sampling: Option<LtmSampling>,
    /// The infinity-former's basis functions per layer.
    #[arg(long)]
    ltm_basis: Option<usize>,
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
    /// What the curriculum's threshold applies to: answer-tokens (the fraction of answer
    /// tokens right, the default) or exact-match (the fraction of samples answered right).
    #[arg(long, value_parser = parse_enum::<Measure>)]
    curriculum_on: Option<Measure>,
    /// Text: read the training text as --batch-size streams of consecutive windows, each
    /// window starting from the memory its stream's previous window ended with (as
    /// Transformer-XL's training carries its cache), instead of random windows from fresh
    /// memory.
    #[arg(long)]
    carry_memory: bool,
    /// With --carry-memory (which it implies): start every stream's memory fresh again every N
    /// windows, so training sees memories of every age up to N windows, as evaluation reading
    /// each document from a fresh memory does (default: carried for the whole run).
    #[arg(long)]
    carry_windows: Option<usize>,
    /// Start from the weights of this checkpoint (file or run folder) instead of fresh ones:
    /// fine-tune on a harder stage of the task, on another task, or RMT over a Transformer
    /// (its memory starts fresh). The optimiser and schedule start afresh.
    #[arg(long, conflicts_with = "resume")]
    init_from: Option<PathBuf>,
    /// Text files or folders to model byte by byte (the text task; implies `--task text`).
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// A pretrained decoder to add the memory to (a Llama-family GGUF file, or a Hugging Face
    /// folder with config.json and model.safetensors); its sizes and tokenizer replace the
    /// model's. Text task only.
    #[arg(long)]
    backbone: Option<PathBuf>,
    /// Train the backbone's weights too (default: frozen, only the memory learns).
    #[arg(long, requires = "backbone")]
    train_backbone: bool,
    /// Stop after N steps of this invocation (leaves a resumable checkpoint).
    #[arg(long, hide = true)]
    stop_after: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// The checkpoint file (runs/<name>/checkpoint.safetensors) or its run folder.
    #[arg(long, required_unless_present = "backbone")]
    checkpoint: Option<PathBuf>,
    /// Evaluate a pretrained decoder alone (no memory, no checkpoint) on --data, reading
    /// --segment-len tokens at a time, each segment on its own.
    #[arg(long, conflicts_with = "checkpoint", requires_all = ["data", "segment_len"])]
    backbone: Option<PathBuf>,
    /// Tokens per segment (with --backbone).
    #[arg(long, requires = "backbone")]
    segment_len: Option<usize>,
    /// auto, wgpu, vulkan, metal, dx12 or cpu.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    device: DeviceChoice,
    /// Text files or folders to evaluate on (text models; default: the run's own data).
    #[arg(long, num_args = 1..)]
    data: Vec<PathBuf>,
    /// Held-out samples (synthetic tasks).
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    /// Text: read at most this many bytes of the test documents (default: all of them).
    #[arg(long)]
    max_bytes: Option<u64>,
    /// Text: start every segment from the initial memory instead of the previous segment's (a
    /// control: what the learned memory gives without carrying anything).
    #[arg(long, conflicts_with = "foreign_memory")]
    reset_memory: bool,
    /// Text: give every segment the memory the model left after as many segments of another
    /// test document (a control: what the memory holds of this document, against what
    /// reading any text gives). Reads every segment twice.
    #[arg(long)]
    foreign_memory: bool,
    /// Evaluate on this many segments instead of the trained number.
    #[arg(long)]
    segments: Option<usize>,
    /// qa1: evaluate on stories of this many moves instead of the trained number.
    #[arg(long)]
    moves: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct ExportArgs {
    /// The checkpoint file (runs/<name>/checkpoint.safetensors) or its run folder.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Where to write the model-only checkpoint.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Debug, Args)]
struct DataArgs {
    /// Text files or folders, as `train --data` reads them.
    #[arg(long, num_args = 1.., required = true)]
    data: Vec<PathBuf>,
    /// Write this split's documents (train, validation or test) to `--out`.
    #[arg(long, value_parser = parse_split)]
    split: Option<Split>,
    /// Where to write the split's text (atomically).
    #[arg(long, requires = "split")]
    out: Option<PathBuf>,
    /// Most bytes to write.
    #[arg(long, default_value_t = 1 << 20)]
    max_bytes: usize,
}

fn parse_split(s: &str) -> Result<Split, String> {
    match s {
        "train" => Ok(Split::Train),
        "validation" => Ok(Split::Validation),
        "test" => Ok(Split::Test),
        _ => Err(format!("`{s}` is not a split: train, validation or test")),
    }
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
        set!(c.train.min_lr, self.min_lr);
        set!(c.train.warmup_steps, self.warmup_steps);
        set!(c.task.kind, self.task);
        if !self.data.is_empty() {
            c.task.data = self.data.clone();
            // Files alone mean the text task, unless the config's task already reads files
            // (a retention task hides its facts in them).
            let reads_files =
                c.task.kind == TaskKind::Text || remem::task::retention::is_retention(c.task.kind);
            if self.task.is_none() && !reads_files {
                c.task.kind = TaskKind::Text;
            }
        }
        set!(c.task.segments, self.segments);
        set!(c.task.moves, self.moves);
        set!(c.task.questions, self.questions);
        set!(c.task.late_facts, self.late_facts);
        set!(c.task.late_segments, self.late_segments);
        set!(c.model.segment_len, self.segment_len);
        set!(c.model.kind, self.model);
        set!(c.model.layout, self.layout);
        set!(c.model.memory_tokens, self.memory_tokens);
        set!(c.model.positions, self.positions);
        set!(c.model.store, self.store);
        if self.memory_gate {
            c.model.memory_gate = true;
        }
        if let Some(Depth(depth)) = self.bptt_depth {
            c.model.bptt_depth = depth;
        }
        if self.mem_len.is_some() {
            c.model.mem_len = self.mem_len;
        }
        set!(c.model.d_model, self.d_model);
        set!(c.model.n_layers, self.layers);
        set!(c.model.n_heads, self.heads);
        set!(c.model.d_ff, self.d_ff);
        set!(c.model.ltm.sampling, self.ltm_sampling);
        set!(c.model.ltm.basis, self.ltm_basis);
        set!(c.train.eval_every, self.eval_every);
        set!(c.train.eval_samples, self.eval_samples);
        set!(c.train.checkpoint_every, self.checkpoint_every);
        if self.target_exact.is_some() {
            c.train.target_exact = self.target_exact;
        }
        if let Some(path) = &self.backbone {
            c.model.backbone = Some(BackboneConfig {
                path: path.clone(),
                train: self.train_backbone,
                digest: None,
            });
        }
        if self.curriculum_on.is_some()
            && self.curriculum_from.is_none()
            && c.train.curriculum.is_none()
        {
            bail!(
                "--curriculum-on says what a curriculum moves on, and there is none: give \
                 --curriculum-from N or a [train.curriculum] table in the config"
            );
        }
        if self.curriculum_from.is_some() || self.curriculum_on.is_some() {
            let mut cur = c.train.curriculum.clone().unwrap_or_default();
            set!(cur.start_segments, self.curriculum_from);
            set!(cur.measure, self.curriculum_on);
            c.train.curriculum = Some(cur);
        }
        if self.carry_memory || self.carry_windows.is_some() {
            c.train.carry_memory = true;
        }
        if self.carry_windows.is_some() {
            c.train.carry_windows = self.carry_windows;
        }
        if let Some(path) = &self.init_from {
            // Absolute, so a run restarted from elsewhere (killed before its first checkpoint)
            // still finds it; a path that does not exist is named as given when read.
            let path = checkpoint_path(path);
            c.train.init_from = Some(std::fs::canonicalize(&path).unwrap_or(path));
        }
        Ok(c)
    }
}

impl TrainArgs {
    /// Every flag that sets a run's setting: the flag, the config field it sets, and whether
    /// it was given. `--steps` is left out: it extends a resumed run rather than changing it.
    fn settings(&self) -> [(&'static str, &'static str, bool); 38] {
        [
            ("--backbone", "model.backbone", self.backbone.is_some()),
            ("--config", "", self.config.is_some()),
            ("--seed", "seed", self.seed.is_some()),
            (
                "--batch-size",
                "train.batch_size",
                self.batch_size.is_some(),
            ),
            ("--lr", "train.lr", self.lr.is_some()),
            ("--min-lr", "train.min_lr", self.min_lr.is_some()),
            (
                "--warmup-steps",
                "train.warmup_steps",
                self.warmup_steps.is_some(),
            ),
            ("--task", "task.kind", self.task.is_some()),
            ("--data", "task.data", !self.data.is_empty()),
            ("--segments", "task.segments", self.segments.is_some()),
            ("--moves", "task.moves", self.moves.is_some()),
            ("--questions", "task.questions", self.questions.is_some()),
            ("--late-facts", "task.late_facts", self.late_facts.is_some()),
            (
                "--late-segments",
                "task.late_segments",
                self.late_segments.is_some(),
            ),
            (
                "--segment-len",
                "model.segment_len",
                self.segment_len.is_some(),
            ),
            ("--model", "model.kind", self.model.is_some()),
            ("--layout", "model.layout", self.layout.is_some()),
            ("--positions", "model.positions", self.positions.is_some()),
            ("--store", "model.store", self.store.is_some()),
            ("--memory-gate", "model.memory_gate", self.memory_gate),
            (
                "--memory-tokens",
                "model.memory_tokens",
                self.memory_tokens.is_some(),
            ),
            (
                "--bptt-depth",
                "model.bptt_depth",
                self.bptt_depth.is_some(),
            ),
            ("--mem-len", "model.mem_len", self.mem_len.is_some()),
            (
                "--ltm-sampling",
                "model.ltm.sampling",
                self.ltm_sampling.is_some(),
            ),
            ("--ltm-basis", "model.ltm.basis", self.ltm_basis.is_some()),
            ("--d-model", "model.d_model", self.d_model.is_some()),
            ("--layers", "model.n_layers", self.layers.is_some()),
            ("--heads", "model.n_heads", self.heads.is_some()),
            ("--d-ff", "model.d_ff", self.d_ff.is_some()),
            (
                "--eval-every",
                "train.eval_every",
                self.eval_every.is_some(),
            ),
            (
                "--eval-samples",
                "train.eval_samples",
                self.eval_samples.is_some(),
            ),
            (
                "--checkpoint-every",
                "train.checkpoint_every",
                self.checkpoint_every.is_some(),
            ),
            (
                "--target-exact",
                "train.target_exact",
                self.target_exact.is_some(),
            ),
            (
                "--curriculum-from",
                "train.curriculum.start_segments",
                self.curriculum_from.is_some(),
            ),
            (
                "--curriculum-on",
                "train.curriculum.measure",
                self.curriculum_on.is_some(),
            ),
            ("--carry-memory", "train.carry_memory", self.carry_memory),
            (
                "--carry-windows",
                "train.carry_windows",
                self.carry_windows.is_some(),
            ),
            ("--init-from", "train.init_from", self.init_from.is_some()),
        ]
    }

    /// The first flag given that would change a run's settings, for refusing it with
    /// `--resume`.
    fn changes_the_run(&self) -> Option<&'static str> {
        self.settings()
            .into_iter()
            .find_map(|(flag, _, given)| given.then_some(flag))
    }

    /// `error`, led by the flag that set the field it names, if a flag did (`--segment-len:
    /// invalid config: model.segment_len: must be at least 1`).
    fn blame(&self, error: remem::Error) -> anyhow::Error {
        let flag = match &error {
            remem::Error::Config { field, .. }
                if field == "train.steps" && self.steps.is_some() =>
            {
                Some("--steps")
            }
            remem::Error::Config { field, .. } => self
                .settings()
                .into_iter()
                .find_map(|(flag, f, given)| (given && f == field).then_some(flag)),
            _ => None,
        };
        match flag {
            Some(flag) => anyhow::Error::new(error).context(flag),
            None => error.into(),
        }
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
        if let Some(flag) = args.changes_the_run() {
            bail!(
                "{flag} cannot change a run being resumed (it continues with the settings it \
                 started with; only --steps extends it): start a new run instead"
            );
        }
        let dir = args
            .run_dir
            .clone()
            .expect("clap requires --run-dir with --resume");
        (
            Start::Resume {
                steps: args.steps,
                stretch: args.stretch_schedule,
            },
            dir,
        )
    } else {
        let mut config = args.run_config()?;
        // Validate before opening a device or creating folders.
        config.resolve().map_err(|e| args.blame(e))?;
        let dir = args
            .run_dir
            .clone()
            .unwrap_or_else(|| fresh_run_dir(&config));
        (Start::Fresh(config), dir)
    };
    let device = device::select(args.device)?;
    eprintln!("device: {}", device.description);
    let options = TrainOptions {
        run_dir,
        progress: !args.quiet,
        stop_after: args.stop_after,
        report: true,
    };
    let summary = train::train(start, &device, &options).map_err(|e| args.blame(e))?;
    let held_out = match summary.eval.bits_per_byte {
        Some(bpb) => format!(
            "{bpb:.4} bits per byte, next-token accuracy {:.4} ({} validation documents)",
            summary.eval.token_accuracy, summary.eval.samples
        ),
        None => format!(
            "token accuracy {:.4}, greedy exact match {:.4} ({} samples)",
            summary.eval.token_accuracy, summary.eval.exact_match, summary.eval.samples
        ),
    };
    println!(
        "done: {} steps in {:.1} s ({:.0} tokens/s); held-out: {held_out}; checkpoint {}",
        summary.steps,
        summary.elapsed_s,
        summary.tokens_per_s,
        summary.checkpoint.display()
    );
    Ok(())
}

fn eval_cmd(args: EvalArgs) -> Result<()> {
    if args.max_bytes == Some(0) {
        bail!("--max-bytes must be at least 1");
    }
    // The memory controls are for text, where a memory is carried through whole documents.
    let control = match (args.reset_memory, args.foreign_memory) {
        (true, _) => Some("--reset-memory"),
        (_, true) => Some("--foreign-memory"),
        _ => None,
    };
    if let (Some(flag), Some(_)) = (control, &args.backbone) {
        bail!("{flag}: a backbone alone has no memory; give the --checkpoint of a memory model");
    }
    if let Some(backbone) = &args.backbone {
        return eval_backbone(&args, backbone);
    }
    let path = checkpoint_path(args.checkpoint.as_ref().expect("clap requires one"));
    let ck = Checkpoint::load(&path)?;
    let mut config = ck.config.clone();
    if let Some(s) = args.segments {
        config.task.segments = s;
    }
    if let Some(m) = args.moves {
        config.task.moves = m;
    }
    // The training curriculum's stages are no constraint on an evaluation (a first stage too
    // short for stories of more moves, or more segments than evaluated).
    config.train.curriculum = None;
    if !args.data.is_empty() {
        if config.task.data.is_empty() {
            bail!(
                "--data: this checkpoint's model was trained on {:?}, which reads no text",
                config.task.kind
            );
        }
        config.task.data = args.data.clone();
    }
    let task = config
        .resolve()
        .map_err(|e| match (&e, args.segments, args.moves) {
            (remem::Error::Config { field, .. }, _, Some(m)) if field == "task.moves" => {
                anyhow::Error::new(e).context(format!("--moves {m}"))
            }
            (remem::Error::Config { .. }, Some(s), _) => {
                anyhow::Error::new(e).context(format!("--segments {s}"))
            }
            _ => e.into(),
        })?;
    if args.samples == 0 {
        bail!("--samples must be at least 1");
    }
    if let Some(flag) = control
        && task.config().kind != TaskKind::Text
    {
        bail!(
            "{flag}: only text is read as whole documents with a memory carried through them; \
             this checkpoint's task is {:?}",
            task.config().kind
        );
    }
    // A retention task's noise comes from the test documents, never trained on.
    let task = task.with_noise(remem::task::text::Split::Test);
    // Text and the retention tasks (the tasks that read a corpus) are streamed segment by
    // segment in constant memory; the others hold whole batches.
    let streamed = task.corpus().is_some();
    let batch = if streamed {
        32.min(args.samples)
    } else {
        train::eval::batch_for(task.input_len()).min(args.samples)
    };
    let needed = train::footprint::evaluation(&config, batch);
    if let Some(available) = train::footprint::available_memory()
        && needed > available
        && !streamed
    {
        bail!(
            "--segments {}: evaluating {} tokens per sequence would need about {}, more than the \
             {} of memory available",
            config.task.segments,
            task.input_len(),
            train::footprint::gib(needed),
            train::footprint::gib(available)
        );
    }
    let device = device::select(args.device)?;
    eprintln!("device: {}", device.description);
    let model = ck.load_model(&path, &device.device)?;
    if let Some(corpus) = task
        .corpus()
        .filter(|_| task.config().kind == TaskKind::Text)
    {
        return eval_text(
            &args,
            &model,
            &task,
            corpus,
            &device.device,
            ck.progress.step,
        );
    }
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.samples as u64).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} eval [{elapsed_precise}] {bar:30} {pos}/{len} sequences (eta {eta})",
            )
            .expect("a valid template"),
        )
    };
    bar.tick();
    let progress = |done: usize| bar.set_position(done as u64);
    let report = if streamed {
        train::eval::evaluate_retention(
            &model,
            &task,
            config.seed,
            args.samples,
            batch,
            &device.device,
            progress,
        )?
    } else {
        train::eval::evaluate_with(
            &model,
            &task,
            config.seed,
            args.samples,
            batch,
            &device.device,
            progress,
        )
    };
    bar.finish_and_clear();
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
        if let Some(line) = train::eval::survival_line(&report.survival) {
            println!("exact match {line}");
        }
        if let Some(line) = train::eval::interference_line(&report.interference) {
            println!("exact match {line}");
        }
        if let Some(lines) =
            train::eval::interference_by_distance_lines(&report.interference_by_distance)
        {
            println!("exact match by facts written after it, then by segments back:");
            for line in lines {
                println!("  {line}");
            }
        }
    }
    Ok(())
}

/// `remem eval --backbone`: a pretrained decoder alone on the test documents of `--data`.
fn eval_backbone(args: &EvalArgs, backbone: &Path) -> Result<()> {
    let mut config = RunConfig::default();
    config.task.kind = TaskKind::Text;
    config.task.data = args.data.clone();
    config.task.segments = 1;
    config.model.memory_tokens = 0;
    config.model.segment_len = args.segment_len.expect("clap requires it");
    config.model.backbone = Some(BackboneConfig {
        path: backbone.to_path_buf(),
        train: false,
        digest: None,
    });
    let task = config
        .resolve()
        .map_err(|e| anyhow::Error::new(e).context("--backbone"))?;
    let device = device::select(args.device)?;
    eprintln!("device: {}", device.description);
    let model = remem::Model::build(&config.model, 0, &device.device)?;
    let corpus = task.corpus().expect("the text task has a corpus");
    eval_text(args, &model, &task, corpus, &device.device, 0)
}

/// `remem eval` of a text model: bits per byte on every test document, streamed whole.
fn eval_text(
    args: &EvalArgs,
    model: &remem::Model,
    task: &remem::task::Task,
    corpus: &remem::task::text::Corpus,
    device: &burn::tensor::Device,
    step: usize,
) -> Result<()> {
    use remem::task::text::Split;
    let total = corpus
        .bytes(Split::Test)
        .min(args.max_bytes.unwrap_or(u64::MAX));
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} eval [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} (eta {eta})",
            )
            .expect("a valid template"),
        )
    };
    bar.tick();
    let report = train::eval::evaluate_text_with(
        model,
        model.step_len(task.input_len()),
        corpus,
        Split::Test,
        total,
        match (args.reset_memory, args.foreign_memory) {
            (true, _) => train::eval::MemorySource::Reset,
            (_, true) => train::eval::MemorySource::Foreign,
            _ => train::eval::MemorySource::Carried,
        },
        device,
        |read| bar.set_position(read),
    )?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        let per_token = match remem::SegmentModel::config(model).backbone {
            Some(_) => format!(
                ", perplexity {:.3} per token, next-token accuracy",
                report.loss.exp()
            ),
            None => ", next-byte accuracy".into(),
        };
        println!(
            "text, {} test documents ({total} bytes; step {step}): {:.4} bits per byte{per_token} \
             {:.4}",
            report.samples,
            report.bits_per_byte.unwrap_or(f64::NAN),
            report.token_accuracy
        );
    }
    Ok(())
}

fn export_cmd(args: ExportArgs) -> Result<()> {
    let path = checkpoint_path(&args.checkpoint);
    let bytes = std::fs::read(&path).map_err(|e| remem::Error::Checkpoint {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    // A checkpoint of an earlier build (remem's format 1) is converted: export is the way from
    // old files to safetensors.
    let legacy = Checkpoint::is_legacy(&bytes);
    let mut ck = if legacy {
        Checkpoint::from_legacy_bytes(&bytes, &path)?
    } else {
        Checkpoint::from_bytes(&bytes, &path)?
    };
    // A weights-only file over a run's checkpoint (its own, or another run's) would end that
    // run's ability to resume.
    let same = |a: &std::path::Path, b: &std::path::Path| {
        std::fs::canonicalize(a)
            .ok()
            .zip(std::fs::canonicalize(b).ok())
            .is_some_and(|(a, b)| a == b)
    };
    if same(&args.out, &path)
        || (args.out.exists() && Checkpoint::load(&args.out).is_ok_and(|c| !c.optimizer.is_empty()))
    {
        bail!(
            "--out {} is a run's checkpoint, which a weights-only export would replace (the run \
             could no longer resume): choose another file",
            args.out.display()
        );
    }
    // Only a checkpoint that loads is exported: its config validates and its weights fit it.
    ck.config.clone().resolve()?;
    ck.load_model(&path, &burn::tensor::Device::flex())?;
    ck.optimizer.clear();
    ck.carried.clear();
    ck.save(&args.out)?;
    let size = std::fs::metadata(&args.out)
        .with_context(|| format!("reading back {}", args.out.display()))?
        .len();
    eprintln!(
        "wrote {} ({} bytes: {:?} model, step {}, no optimiser state{})",
        args.out.display(),
        size,
        ck.config.model.kind,
        ck.progress.step,
        if legacy {
            ", converted from an earlier build's format"
        } else {
            ""
        }
    );
    Ok(())
}

fn data_cmd(args: DataArgs) -> Result<()> {
    let corpus = Corpus::open(&args.data)?;
    match (args.split, &args.out) {
        (Some(split), Some(out)) => {
            let text = corpus.text(split, args.max_bytes)?;
            remem::train::checkpoint::write_atomic(out, &text)?;
            eprintln!(
                "wrote {} ({} bytes of the {split:?} documents)",
                out.display(),
                text.len()
            );
        }
        (split, _) => {
            println!("{:<40} {:>10}  split", "document", "bytes");
            for doc in corpus
                .documents()
                .iter()
                .filter(|d| split.is_none_or(|s| d.split == s))
            {
                println!("{:<40} {:>10}  {:?}", doc.name, doc.len, doc.split);
            }
        }
    }
    Ok(())
}

/// Run the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let off = remem::ops::turned_off_names();
    if !off.is_empty() {
        eprintln!(
            "note: REMEM_WGSL_OFF={}: the WGSL kernels it names run as their reference in \
             Burn's operations",
            off.join(",")
        );
    }
    let result = match cli.command {
        Command::Train(args) => train_cmd(args),
        Command::Eval(args) => eval_cmd(args),
        Command::Compare(args) => compare::run(args),
        Command::Stream(args) => stream::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Export(args) => export_cmd(args),
        Command::Data(args) => data_cmd(args),
    };
    // A hand-written GPU kernel this adapter could not run took the reference path: say so.
    for line in remem::ops::fallbacks() {
        eprintln!("note: the WGSL kernel {line}; its reference in Burn's operations ran instead");
    }
    result
}
