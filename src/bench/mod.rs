//! Benchmarks that print figures, never pass or fail: training throughput, streaming over long
//! inputs (time and resident memory), and achieved FLOP/s against the device's measured matmul
//! FLOP/s. Run by `remem bench` and `cargo bench`.
//!
//! The matmul is sampled during each figure, not only once at the start ([`MatmulProbe`]):
//! between training steps and at each point of a stream, off the clock. A shared machine, or a
//! laptop that throttles, changes speed from one minute to the next; each figure's fraction of
//! the matmul is against the speed the device had while that figure was taken.

pub mod flops;
pub mod launches;

use std::time::Instant;

use burn::optim::AdamWConfig;
use burn::prelude::*;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::infer::Session;
use crate::model::{Model, ModelConfig, ModelKind, xl::MAX_POSITIONS};
use crate::task::Batch;
use crate::tokenizer::Tokenizer;
use crate::train;

/// A fixed model and batch shape, so figures compare with other implementations.
#[derive(Debug, Clone, Serialize)]
pub struct Preset {
    /// Name on the command line.
    pub name: &'static str,
    /// The RMT config; the other models change `kind` only.
    pub model: ModelConfig,
    /// Segments per training sequence.
    pub segments: usize,
    /// Sequences per training step.
    pub batch: usize,
}

/// The benchmark configs: `remem train`'s default model (2 layers, d_model 64, the copy task in 3
/// segments of 8), the RMT paper's copy setting and a byte-level medium model.
pub fn presets() -> Vec<Preset> {
    let base = ModelConfig {
        n_layers: 4,
        n_heads: 4,
        dropout: 0.0,
        ..ModelConfig::default()
    };
    vec![
        Preset {
            name: "default",
            model: ModelConfig {
                vocab_size: 12,
                tokenizer: Some(Tokenizer::symbols(10)),
                ..ModelConfig::default()
            },
            segments: 3,
            batch: 32,
        },
        Preset {
            name: "copy-small",
            model: ModelConfig {
                vocab_size: 12,
                d_model: 128,
                d_ff: 256,
                memory_tokens: 10,
                segment_len: 24,
                tokenizer: Some(Tokenizer::symbols(10)),
                ..base.clone()
            },
            segments: 3,
            batch: 32,
        },
        Preset {
            name: "medium",
            model: ModelConfig {
                vocab_size: 256,
                d_model: 256,
                d_ff: 1024,
                memory_tokens: 16,
                segment_len: 256,
                tokenizer: Some(Tokenizer::Bytes),
                ..base
            },
            segments: 4,
            batch: 8,
        },
    ]
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Presets by name.
    pub presets: Vec<String>,
    /// Models to train: rmt, xl, memxl, transformer, infinity.
    pub train_models: Vec<ModelKind>,
    /// Timed training steps per model (after two warm-up steps).
    pub train_steps: usize,
    /// Models to stream; `ModelKind::Transformer` streams as full attention over a growing
    /// cache, up to the positions it can reach.
    pub stream_models: Vec<ModelKind>,
    /// Stream lengths at which figures are taken (one stream per model, in increasing order).
    pub stream_tokens: Vec<usize>,
}

/// Training throughput of one model.
#[derive(Debug, Clone, Serialize)]
pub struct TrainFigure {
    /// Preset name.
    pub preset: String,
    /// Model name.
    pub model: String,
    /// Input tokens per second.
    pub tokens_per_s: f64,
    /// Milliseconds per optimiser step.
    pub ms_per_step: f64,
    /// Training FLOPs per input token, counted from the config.
    pub flops_per_token: f64,
    /// `flops_per_token * tokens_per_s`.
    pub achieved_flops: f64,
    /// The matmul's FLOP/s while the steps ran: the median of samples (each the best of three
    /// products) taken between them.
    pub matmul_flops: f64,
    /// `achieved_flops` over `matmul_flops`.
    pub matmul_fraction: f64,
}

/// One point of a stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamFigure {
    /// Preset name.
    pub preset: String,
    /// Model name.
    pub model: String,
    /// Tokens read so far.
    pub tokens: usize,
    /// Seconds since the stream began.
    pub seconds: f64,
    /// Tokens per second since the previous point.
    pub tokens_per_s: f64,
    /// Milliseconds per segment since the previous point.
    pub ms_per_segment: f64,
    /// Forward FLOPs of the segments since the previous point, per second.
    pub achieved_flops: f64,
    /// The matmul's FLOP/s over the same stretch: the mean of the samples at its two ends.
    pub matmul_flops: f64,
    /// `achieved_flops` over `matmul_flops`.
    pub matmul_fraction: f64,
    /// Peak resident memory of the process during this stream (bytes, Linux).
    pub peak_rss_bytes: Option<u64>,
    /// Resident memory when this stream began: the peak's baseline, which includes what the
    /// allocator kept from earlier work in the process.
    pub start_rss_bytes: Option<u64>,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The device, in words.
    pub device: String,
    /// Measured FLOP/s of a 1024 x 1024 x 1024 f32 matmul at the start (each figure has its
    /// own, sampled while it was taken).
    pub matmul_flops: f64,
    /// Training throughput.
    pub train: Vec<TrainFigure>,
    /// Streaming figures.
    pub stream: Vec<StreamFigure>,
    /// Kernels launched per training step and per streaming segment (GPU devices only).
    pub launches: Vec<LaunchFigure>,
}

/// Kernels one model launches per unit of work, counted from the runtime.
#[derive(Debug, Clone, Serialize)]
pub struct LaunchFigure {
    /// Preset name.
    pub preset: String,
    /// Model name.
    pub model: String,
    /// `segment` (streaming: feed one segment, then predict the next token) or `step` (one
    /// training step: forward over every segment, backward, optimiser).
    pub unit: String,
    /// The counts.
    pub launches: launches::Launches,
}

/// Display name of a model kind.
pub fn model_name(kind: ModelKind, streaming: bool) -> String {
    match kind {
        ModelKind::Transformer if streaming => "full (cached)".into(),
        k => crate::compare::model_name(crate::compare::Contender::of(k)),
    }
}

/// Run the benchmark on `device`, calling `note` with each figure as it is taken.
pub fn run(
    options: &BenchOptions,
    device: &Device,
    description: &str,
    mut note: impl FnMut(&str),
) -> Result<BenchReport> {
    let presets: Vec<Preset> = options
        .presets
        .iter()
        .map(|name| {
            presets()
                .into_iter()
                .find(|p| p.name == name)
                .ok_or_else(|| {
                    Error::Input(format!(
                        "unknown preset `{name}`: use default, copy-small or medium"
                    ))
                })
        })
        .collect::<Result<_>>()?;
    let probe = MatmulProbe::new(device);
    let matmul = probe.best_of(5);
    note(&format!("matmul: {:.1} GFLOP/s", matmul / 1e9));
    let mut report = BenchReport {
        device: description.to_string(),
        matmul_flops: matmul,
        train: Vec::new(),
        stream: Vec::new(),
        launches: Vec::new(),
    };
    for preset in &presets {
        for &kind in &options.stream_models {
            let (figures, counted) = stream(preset, kind, &options.stream_tokens, device, &probe)?;
            if let Some(launches) = counted {
                note(&format!(
                    "stream {} {}: {:.1} kernels per segment",
                    preset.name,
                    model_name(kind, true),
                    launches.per_unit
                ));
                report.launches.push(LaunchFigure {
                    preset: preset.name.into(),
                    model: model_name(kind, true),
                    unit: "segment".into(),
                    launches,
                });
            }
            for fig in figures {
                note(&format!(
                    "stream {} {} {} tokens: {:.0} tokens/s, {:.2} ms/segment",
                    fig.preset, fig.model, fig.tokens, fig.tokens_per_s, fig.ms_per_segment
                ));
                report.stream.push(fig);
            }
        }
        // Training after streaming, so the streams' memory baseline is not training's.
        for &kind in &options.train_models {
            let (fig, counted) =
                train_throughput(preset, kind, options.train_steps, device, &probe)?;
            if let Some(launches) = counted {
                note(&format!(
                    "train {} {}: {:.1} kernels per step",
                    preset.name,
                    model_name(kind, false),
                    launches.per_unit
                ));
                report.launches.push(LaunchFigure {
                    preset: preset.name.into(),
                    model: model_name(kind, false),
                    unit: "step".into(),
                    launches,
                });
            }
            note(&format!(
                "train {} {}: {:.0} tokens/s, {:.1}% of matmul FLOP/s",
                fig.preset,
                fig.model,
                fig.tokens_per_s,
                100.0 * fig.matmul_fraction
            ));
            report.train.push(fig);
        }
    }
    Ok(report)
}

/// The device's matmul speed, sampled as often as a benchmark asks: a 1024^3 f32 product
/// through the same path the models' products take.
pub struct MatmulProbe {
    a: Tensor<2>,
    b: Tensor<2>,
}

impl MatmulProbe {
    const N: usize = 1024;

    /// Factors on `device`, and one product to warm up (kernel compilation on wgpu).
    pub fn new(device: &Device) -> Self {
        let n = Self::N;
        let random = || Tensor::<2>::random([n, n], burn::tensor::Distribution::Default, device);
        let probe = Self {
            a: random(),
            b: random(),
        };
        probe.sample();
        probe
    }

    /// FLOP/s of one product.
    pub fn sample(&self) -> f64 {
        let t = Instant::now();
        let c = crate::ops::matmul::matmul(self.a.clone(), self.b.clone());
        // Reading one value back waits for the device.
        let _ = c.slice(s![0..1, 0..1]).into_data();
        2.0 * (Self::N as f64).powi(3) / t.elapsed().as_secs_f64()
    }

    /// The best of `n` samples.
    pub fn best_of(&self, n: usize) -> f64 {
        (0..n.max(1)).map(|_| self.sample()).fold(0.0, f64::max)
    }
}

fn config_for(preset: &Preset, kind: ModelKind) -> ModelConfig {
    ModelConfig {
        kind,
        ..preset.model.clone()
    }
}

/// Random tokens as a next-token batch with every position scored.
fn random_batch(batch: usize, len: usize, vocab: usize, device: &Device) -> Batch {
    let tokens = Tensor::<2, Int>::random(
        [batch, len + 1],
        burn::tensor::Distribution::Uniform(0.0, vocab as f64),
        device,
    );
    Batch {
        inputs: tokens.clone().slice(s![.., 0..len]),
        targets: tokens.slice(s![.., 1..len + 1]),
        weights: Tensor::ones([batch, len], device),
        answer_tokens: batch * len,
    }
}

fn train_throughput(
    preset: &Preset,
    kind: ModelKind,
    steps: usize,
    device: &Device,
    probe: &MatmulProbe,
) -> Result<(TrainFigure, Option<launches::Launches>)> {
    let config = config_for(preset, kind);
    config.validate()?;
    let ad = device.clone().autodiff();
    let len = preset.segments * config.segment_len;
    let seg_len = if kind.whole_input() {
        len
    } else {
        config.segment_len
    };
    let mut model = Model::new(&config, 0, &ad);
    let mut optim = AdamWConfig::new().init();
    let batch = random_batch(preset.batch, len, config.vocab_size, &ad);
    // The step `remem train` takes on this device: on the CPU it also counts the rows
    // answered exactly (for the log), on GPUs only when a curriculum asks.
    let count_rows = crate::device::is_cpu(device);
    let mut timed = 0.0;
    let mut samples = Vec::new();
    const WARM_UP: usize = 2;
    for step in 0..steps.max(1) + WARM_UP {
        let t = Instant::now();
        model = train::optimise(
            model,
            &mut optim,
            &batch,
            seg_len,
            1e-4,
            Some(1.0),
            count_rows,
        )
        .0;
        if step >= WARM_UP {
            timed += t.elapsed().as_secs_f64();
        }
        if step + 1 >= WARM_UP {
            samples.push(probe.best_of(3));
        }
    }
    let matmul = median(&mut samples);
    // Kernels per step, off the clock.
    let counted = launches::count(&ad, 2, || {
        model = train::optimise(
            model.clone(),
            &mut optim,
            &batch,
            seg_len,
            1e-4,
            Some(1.0),
            count_rows,
        )
        .0;
        Ok(())
    })?;
    let per_step = timed / steps.max(1) as f64;
    let tokens_per_s = (preset.batch * len) as f64 / per_step;
    let flops_per_token = if kind.whole_input() {
        flops::train_per_token(&config, 1, len)
    } else {
        flops::train_per_token(&config, preset.segments, config.segment_len)
    };
    let achieved = flops_per_token * tokens_per_s;
    let figure = TrainFigure {
        preset: preset.name.into(),
        model: model_name(kind, false),
        tokens_per_s,
        ms_per_step: per_step * 1e3,
        flops_per_token,
        achieved_flops: achieved,
        matmul_flops: matmul,
        matmul_fraction: achieved / matmul,
    };
    Ok((figure, counted))
}

/// The middle value (the mean of the middle two for an even count).
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n == 0 {
        return f64::NAN;
    }
    (xs[(n - 1) / 2] + xs[n / 2]) / 2.0
}

fn stream(
    preset: &Preset,
    kind: ModelKind,
    points: &[usize],
    device: &Device,
    probe: &MatmulProbe,
) -> Result<(Vec<StreamFigure>, Option<launches::Launches>)> {
    let mut config = config_for(preset, kind);
    let t = config.segment_len;
    // The full-attention model streams as Transformer-XL caching everything it can reach.
    let reach = MAX_POSITIONS - t;
    if kind == ModelKind::Transformer {
        config.kind = ModelKind::Xl;
        config.mem_len = Some(reach);
    }
    config.validate()?;
    // What earlier streams freed goes back to the system, so this stream's peak is its own.
    crate::heap::release_freed_memory();
    let mut session = Session::new(Model::new(&config, 0, device), device)?;
    // Forward FLOPs of segment k, whose cache holds min(k t, cache_len) states.
    let segment_flops =
        |k: usize| flops::step_forward(&config, t, (k * t).min(config.cache_len()), true);
    let chunk: Vec<u32> = (0..t * 64)
        .map(|i| ((i * 2_654_435_761) % config.vocab_size) as u32)
        .collect();
    // Warm up (kernel compilation and autotuning on wgpu), then start over.
    session.feed(&chunk[..2 * t])?;
    session.predict()?;
    // Kernels per segment (feed one, predict the next token), off the clock.
    let mut at = 0;
    let counted = launches::count(device, 4, || {
        session.feed(&chunk[at..at + t])?;
        session.predict()?;
        at += t;
        Ok(())
    })?;
    session.reset();
    // Matmul samples at each point, off the clock; the first before the memory baseline.
    let sample = || probe.best_of(3);
    let mut last_matmul = sample();
    reset_peak_rss();
    let start_rss = train::rss_bytes();
    let mut figures = Vec::new();
    let began = Instant::now();
    let mut off_clock = 0.0;
    let (mut fed, mut last_tokens, mut last_s) = (0usize, 0usize, 0.0);
    for &point in points {
        if kind == ModelKind::Transformer && point > reach {
            break;
        }
        while fed < point {
            let n = (point - fed).min(chunk.len());
            session.feed(&chunk[..n])?;
            fed += n;
        }
        // Wait for the device before reading the clock.
        session.predict()?;
        let seconds = began.elapsed().as_secs_f64() - off_clock;
        let rate = (fed - last_tokens) as f64 / (seconds - last_s);
        let paused = Instant::now();
        let now = sample();
        let matmul = (last_matmul + now) / 2.0;
        last_matmul = now;
        off_clock += paused.elapsed().as_secs_f64();
        let achieved =
            (last_tokens / t..fed / t).map(segment_flops).sum::<f64>() / (seconds - last_s);
        figures.push(StreamFigure {
            preset: preset.name.into(),
            model: model_name(kind, true),
            tokens: fed,
            seconds,
            tokens_per_s: rate,
            ms_per_segment: 1e3 * t as f64 / rate,
            achieved_flops: achieved,
            matmul_flops: matmul,
            matmul_fraction: achieved / matmul,
            peak_rss_bytes: train::peak_rss_bytes(),
            start_rss_bytes: start_rss,
        });
        (last_tokens, last_s) = (fed, seconds);
    }
    Ok((figures, counted))
}

/// Reset the process's peak resident set size to the current one (Linux; elsewhere a no-op).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The report as Markdown tables, with the streaming ratios the README cites.
pub fn markdown(report: &BenchReport) -> String {
    let mut out = format!(
        "Device: {}; measured matmul (1024^3, f32) at the start: {:.1} GFLOP/s. Each row's \
         \"of matmul\" is against the matmul sampled while it ran (the \"matmul GFLOP/s\" column).\n\n",
        report.device,
        report.matmul_flops / 1e9
    );
    if !report.train.is_empty() {
        out += "| preset | model | train tokens/s | ms/step | GFLOP/token | GFLOP/s | matmul GFLOP/s | of matmul |\n";
        out += "|---|---|---:|---:|---:|---:|---:|---:|\n";
        for f in &report.train {
            out += &format!(
                "| {} | {} | {:.0} | {:.1} | {:.4} | {:.1} | {:.1} | {:.0}% |\n",
                f.preset,
                f.model,
                f.tokens_per_s,
                f.ms_per_step,
                f.flops_per_token / 1e9,
                f.achieved_flops / 1e9,
                f.matmul_flops / 1e9,
                100.0 * f.matmul_fraction
            );
        }
        out += "\n";
    }
    if !report.stream.is_empty() {
        out += "| preset | model | tokens | seconds | tokens/s | ms/segment | GFLOP/s | matmul GFLOP/s | of matmul | peak RSS MiB | growth MiB |\n";
        out += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for f in &report.stream {
            out += &format!(
                "| {} | {} | {} | {:.2} | {:.0} | {:.2} | {:.1} | {:.1} | {:.0}% | {} | {} |\n",
                f.preset,
                f.model,
                f.tokens,
                f.seconds,
                f.tokens_per_s,
                f.ms_per_segment,
                f.achieved_flops / 1e9,
                f.matmul_flops / 1e9,
                100.0 * f.matmul_fraction,
                mib(f.peak_rss_bytes),
                match (f.peak_rss_bytes, f.start_rss_bytes) {
                    (Some(p), Some(s)) => format!("{:.1}", (p as f64 - s as f64) / MIB),
                    _ => "-".into(),
                }
            );
        }
        out += &ratios(report);
    }
    if !report.launches.is_empty() {
        out += "\n| preset | model | per | kernels launched | distinct kernels | most launched |\n";
        out += "|---|---|---|---:|---:|---|\n";
        for f in &report.launches {
            let top: Vec<String> = (f.launches.by_kernel.iter().take(3))
                .map(|(k, n)| format!("{n:.0} {k}"))
                .collect();
            out += &format!(
                "| {} | {} | {} | {:.1} | {} | {} |\n",
                f.preset,
                f.model,
                f.unit,
                f.launches.per_unit,
                f.launches.distinct,
                top.join(", ")
            );
        }
    }
    out
}

const MIB: f64 = (1 << 20) as f64;

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("-".into(), |b| format!("{:.1}", b as f64 / MIB))
}

/// Time and peak-memory ratios of the longest stream point against shorter ones.
fn ratios(report: &BenchReport) -> String {
    let mut out = String::new();
    let mut keys: Vec<(&str, &str)> = report
        .stream
        .iter()
        .map(|f| (f.preset.as_str(), f.model.as_str()))
        .collect();
    keys.dedup();
    for (preset, model) in keys {
        let figs: Vec<&StreamFigure> = report
            .stream
            .iter()
            .filter(|f| f.preset == preset && f.model == model)
            .collect();
        let at = |n: usize| figs.iter().find(|f| f.tokens == n);
        if let (Some(long), Some(mid), Some(short)) = (at(1 << 20), at(1 << 16), at(1 << 14)) {
            out += &format!(
                "\n{preset} {model}: time(1M)/time(64k) = {:.2} (16 if linear); peak RSS(1M)/peak RSS(16k) = {}",
                long.seconds / mid.seconds,
                match (long.peak_rss_bytes, short.peak_rss_bytes) {
                    (Some(a), Some(b)) => format!("{:.3}", a as f64 / b as f64),
                    _ => "-".into(),
                }
            );
        }
    }
    if !out.is_empty() {
        out += "\n";
    }
    out
}
