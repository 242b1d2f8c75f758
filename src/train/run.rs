//! The training loop (needs the `train` feature: Burn's autodiff).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::data::dataloader::batcher::Batcher;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::device::SelectedDevice;
use crate::error::{Error, Result};
use crate::model::{Model, SegmentModel, State};
use crate::task::{Batch, Sample, SegmentBatcher, Task, TaskDataset};

use super::checkpoint::{Checkpoint, Progress};
use super::config::Measure;
use super::config::RunConfig;
use super::eval::{EvalReport, evaluate_task};
use super::loss::Stats;
use super::{
    CHECKPOINT, CONFIG, LEGACY_CHECKPOINT, METRICS, SUMMARY, clip, loss, metrics, schedule,
};

/// How a run starts.
#[allow(clippy::large_enum_variant)] // built once per run
#[derive(Debug, Clone)]
pub enum Start {
    /// A new run with this config; the run folder must not hold a checkpoint yet.
    Fresh(RunConfig),
    /// Continue the run folder's checkpoint, optionally with a new total number of steps.
    Resume {
        /// New `train.steps`, if given.
        steps: Option<usize>,
        /// With `steps`: stretch the learning rate's decay over the new total instead of
        /// keeping the schedule the run had (`train.decay_steps`), so the extra steps train at
        /// a rate above `min_lr` again.
        stretch: bool,
    },
}

/// What [`train`] reports at the end.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Summary {
    /// Steps done in total (including before a resume).
    pub steps: usize,
    /// The final held-out evaluation.
    pub eval: EvalReport,
    /// Wall seconds in total (including before a resume), evaluations and checkpoints
    /// included, up to the last step (the final evaluation comes after it).
    pub elapsed_s: f64,
    /// Mean training throughput of this invocation in input tokens per second: the time in
    /// optimiser steps only, not the evaluations and checkpoints between them.
    pub tokens_per_s: f64,
    /// Where the checkpoint is.
    pub checkpoint: PathBuf,
    /// Peak resident memory of the process in bytes, where the platform reports it (Linux).
    pub peak_rss_bytes: Option<u64>,
    /// Segments of the last training stage: fewer than the task's when a curriculum ran out of
    /// steps before reaching it (0 in summaries written before this field existed).
    #[serde(default)]
    pub trained_segments: usize,
}

/// The process's peak resident set size (`VmHWM` in `/proc/self/status`), on Linux.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_bytes("VmHWM:")
}

/// The process's resident set size now (`VmRSS`), on Linux.
pub fn rss_bytes() -> Option<u64> {
    proc_status_bytes("VmRSS:")
}

/// A `kB` line of `/proc/self/status`, in bytes.
fn proc_status_bytes(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Options that are not part of the run config.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The run folder (created if missing).
    pub run_dir: PathBuf,
    /// Draw a progress bar (on a terminal).
    pub progress: bool,
    /// Stop after this many steps in this invocation without a final checkpoint, as a killed
    /// run would (tests use it to check that `--resume` continues exactly).
    pub stop_after: Option<usize>,
    /// Print each evaluation, curriculum move and warning to stderr (the command line does).
    /// Off, training prints nothing: a program reads the same from the run folder's
    /// `metrics.jsonl` and the returned [`Summary`].
    pub report: bool,
}

#[derive(Serialize)]
struct StepRecord {
    event: &'static str,
    step: usize,
    loss: f64,
    accuracy: f64,
    lr: f64,
    grad_norm: f64,
    /// The batch's teacher-forced exact match, where counted (on the CPU always, on GPUs
    /// when the curriculum moves on it or with late stories).
    #[serde(skip_serializing_if = "Option::is_none")]
    exact_match: Option<f64>,
    /// With late stories (`task.late_facts`), the late stories' exact match in the batch and
    /// the other stories' (where the batch has any of each).
    #[serde(skip_serializing_if = "Option::is_none")]
    exact_match_late: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exact_match_rest: Option<f64>,
    segments: usize,
    tokens_per_s: f64,
}

/// The fraction of `rows` right among those `late` picks and among the others (`None` for a
/// group with no rows).
fn split_rows(rows: &[bool], late: impl Fn(usize) -> bool) -> (Option<f64>, Option<f64>) {
    let (mut right, mut count) = ([0usize; 2], [0usize; 2]);
    for (i, &r) in rows.iter().enumerate() {
        let g = usize::from(!late(i));
        count[g] += 1;
        right[g] += usize::from(r);
    }
    let share = |g: usize| (count[g] > 0).then(|| right[g] as f64 / count[g] as f64);
    (share(0), share(1))
}

#[derive(Serialize)]
struct EvalRecord<'a> {
    event: &'static str,
    step: usize,
    segments: usize,
    #[serde(flatten)]
    report: &'a EvalReport,
}

/// Print a line above the progress bar, or plainly when there is no bar; nothing unless
/// `report`.
fn say(report: bool, bar: &ProgressBar, line: String) {
    if !report {
        return;
    }
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}

/// The dropout seed of one step, from the run's seed and the step alone, so a resumed run draws
/// the same masks.
fn step_seed(seed: u64, step: usize) -> u64 {
    use crate::nn::init::{Purpose, purpose_seed, substream};
    substream(purpose_seed(seed, Purpose::Dropout), step as u64)
}

/// The model id a checkpoint's carried memory is saved under: it belongs to the weights of the
/// same file, so it names no model of its own.
pub const CARRIED_ID: &str = "training";

/// The lock file inside a run folder.
const LOCK: &str = ".lock";

/// An exclusive operating-system lock on a run folder's lock file, released when dropped or
/// when the process ends however it ends (so a killed run never leaves its folder locked).
#[derive(Debug)]
struct RunLock {
    _file: std::fs::File,
}

/// Take `dir` for this process, or fail with [`Error::Busy`] if another process holds it.
fn lock_run_dir(dir: &std::path::Path) -> Result<RunLock> {
    let path = dir.join(LOCK);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(RunLock { _file: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Busy(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// One optimiser step on `batch`: forward through the segments, backward, clip the global
/// gradient norm to `grad_clip`, update. Returns the model, the batch's answer scores (with
/// `count_rows` its exact match too) and the gradient norm before clipping.
pub fn optimise(
    model: Model,
    optim: &mut ModuleOptimizer,
    batch: &Batch,
    seg_len: usize,
    lr: f64,
    grad_clip: Option<f64>,
    count_rows: bool,
) -> (Model, Stats, f64) {
    let out = loss::forward_batch_counting_rows(&model, batch, seg_len, count_rows);
    update(model, optim, out, lr, grad_clip)
}

/// [`optimise`] for a batch that continues the text `carried` ended with
/// (`train.carry_memory`): returns the state after the batch, detached, as well.
#[allow(clippy::too_many_arguments)] // optimise's arguments and the carried state
pub fn optimise_carrying(
    model: Model,
    optim: &mut ModuleOptimizer,
    batch: &Batch,
    seg_len: usize,
    lr: f64,
    grad_clip: Option<f64>,
    carried: State,
    count_rows: bool,
) -> (Model, Stats, f64, State) {
    let (out, next) = loss::forward_batch_carrying(&model, batch, seg_len, carried, count_rows);
    let (model, stats, grad_norm) = update(model, optim, out, lr, grad_clip);
    (model, stats, grad_norm, next.detach())
}

/// Backward from `out`'s loss, clip, update.
fn update(
    model: Model,
    optim: &mut ModuleOptimizer,
    out: loss::BatchOutput,
    lr: f64,
    grad_clip: Option<f64>,
) -> (Model, Stats, f64) {
    let stats = out.stats();
    let mut grads = GradientsParams::from_grads(out.loss.backward(), &model);
    let grad_norm = match grad_clip {
        Some(max) => clip::clip_global_norm(&model, &mut grads, max),
        None => clip::global_norm(&model, &grads),
    };
    (optim.step(lr, model, grads), stats, grad_norm)
}

/// Train a model as `start` says, in `options.run_dir`, on `device`.
pub fn train(start: Start, device: &SelectedDevice, options: &TrainOptions) -> Result<Summary> {
    let dir = &options.run_dir;
    let ck_path = dir.join(CHECKPOINT);
    let fresh = matches!(start, Start::Fresh(_));
    let legacy = dir.join(LEGACY_CHECKPOINT);
    if !ck_path.exists() && legacy.exists() {
        return Err(Error::Checkpoint {
            path: legacy,
            reason: "written by an earlier remem build (format 1), so the run cannot resume or \
                     be trained over; `remem export` converts its weights for eval and stream"
                .into(),
        });
    }
    let (mut config, resumed) = match start {
        Start::Fresh(config) => (config, None),
        // Killed before its first checkpoint: the run starts again from its config.
        Start::Resume { steps, .. } if !ck_path.exists() && dir.join(CONFIG).exists() => {
            let mut config = RunConfig::load(&dir.join(CONFIG))?;
            if let Some(steps) = steps {
                config.train.steps = steps;
            }
            (config, None)
        }
        Start::Resume { .. } if !ck_path.exists() => {
            return Err(Error::Checkpoint {
                path: ck_path,
                reason: format!(
                    "missing, and the folder holds no {CONFIG} either: nothing to resume (start \
                     the run without --resume)"
                ),
            });
        }
        Start::Resume { steps, stretch } => {
            let ck = Checkpoint::load(&ck_path)?;
            let mut config = ck.config.clone();
            if let Some(steps) = steps {
                if steps < ck.progress.step {
                    return Err(Error::config(
                        "train.steps",
                        format!(
                            "--steps {steps} is below the {} steps the run has done: a resume can \
                             only extend it",
                            ck.progress.step
                        ),
                    ));
                }
                // The steps already taken followed the old schedule; the extension keeps it
                // (its rate stays at the floor the old total ended on) unless asked to stretch.
                // A run whose old total ended within the warmup has no decay to keep.
                let t = &mut config.train;
                if stretch {
                    t.decay_steps = None;
                } else if steps > t.steps && t.steps > t.warmup_steps && t.decay_steps.is_none() {
                    t.decay_steps = Some(t.steps);
                }
                t.steps = steps;
            }
            (config, Some(ck))
        }
    };
    let task = config.resolve()?;
    // On the CPU, a model or batch that cannot fit is an error naming the setting, not an
    // abort in the allocator. (A GPU's free memory is not known before allocating.)
    if !device.wgpu
        && let Some(available) = super::footprint::available_memory()
    {
        super::footprint::Footprint::of(&config).check(&config, available)?;
    }
    let ad = device.device.clone().autodiff();
    let tc = config.train.clone();
    let mut optim: ModuleOptimizer = AdamWConfig::new()
        .with_weight_decay(tc.weight_decay as f32)
        .init();
    // The model and optimiser are built (a resumed run's read and checked) before anything is
    // written, so a checkpoint that cannot resume changes nothing.
    let (mut model, mut progress) = match &resumed {
        None => (
            match &tc.init_from {
                None => Model::build(&config.model, config.seed, &ad)?,
                Some(path) => {
                    let (model, fresh) =
                        Checkpoint::load(path)?.init_into(&config.model, config.seed, path, &ad)?;
                    if options.report && !fresh.is_empty() {
                        eprintln!(
                            "init from {}: {} tensor(s) it lacks start fresh: {}",
                            path.display(),
                            fresh.len(),
                            crate::io::name_list(fresh)
                        );
                    }
                    model
                }
            },
            Progress {
                step: 0,
                segments: tc
                    .curriculum
                    .as_ref()
                    .map_or(task.config().segments, |c| c.start_segments),
                recent_accuracy: Vec::new(),
                elapsed_s: 0.0,
                streamed: 0,
            },
        ),
        Some(ck) => {
            if ck.optimizer.is_empty() {
                return Err(Error::Checkpoint {
                    path: ck_path.clone(),
                    reason: "it holds no optimiser state (written by `remem export` for \
                             inference); resume from the run's own checkpoint"
                        .into(),
                });
            }
            let model = ck.load_model(&ck_path, &ad)?;
            optim = optim
                .from_bytes(Bytes::from_bytes_vec(ck.optimizer.clone()))
                .map_err(|e| record_error(&ck_path, "unreadable optimiser state", e))?;
            (model, ck.progress.clone())
        }
    };
    // The memory each training stream carries into its next window (train.carry_memory).
    let mut carried: Option<State> = match &resumed {
        Some(ck) if tc.carry_memory && !ck.carried.is_empty() => Some(
            State::from_bytes(&ck.carried, CARRIED_ID, &ad)
                .map_err(|e| record_error(&ck_path, "unreadable carried memory", e))?,
        ),
        _ => None,
    };
    // Nothing is written before here: a run refused above leaves no folder behind. A resumed
    // run's folder exists (its checkpoint was read).
    if fresh {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    // Held until training returns: a second process in this folder gets Error::Busy.
    let _lock = lock_run_dir(dir)?;
    if fresh && ck_path.exists() {
        return Err(Error::Checkpoint {
            path: ck_path,
            reason: "the run folder already holds a checkpoint: pass --resume to continue it, or choose another --run-dir".into(),
        });
    }
    // Probe that the folder is writable before spending time on training.
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"").map_err(|e| Error::io(dir, e))?;
    let _ = std::fs::remove_file(&probe);
    // Written whole or not at all: a reader never sees half a config.
    super::checkpoint::write_atomic(&dir.join(CONFIG), config.to_toml().as_bytes())?;

    if options.report {
        eprintln!("run folder: {}", dir.display());
        if let Some(end) = tc.decay_steps.filter(|&end| end < tc.steps) {
            eprintln!(
                "learning rate: at its floor ({}) from step {end} to step {} (on a resume, \
                 --stretch-schedule decays it over the new total instead)",
                tc.min_lr, tc.steps
            );
        }
    }
    let mut log = metrics::MetricsLog::open(&dir.join(METRICS), Some(progress.step))?;

    let mut stage = task.with_segments(progress.segments)?;
    let bar = if options.progress {
        ProgressBar::new(tc.steps as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} {msg} [{elapsed_precise}<{eta_precise}]",
        )
        .expect("valid template"),
    );
    bar.set_position(progress.step as u64);

    let save = |model: &Model,
                optim: &ModuleOptimizer,
                progress: &Progress,
                carried: &Option<State>|
     -> Result<()> {
        let optim_bytes = optim
            .into_bytes()
            .map_err(|e| record_error(&ck_path, "cannot serialise optimiser", e))?;
        let carried = match carried {
            Some(state) => state.to_bytes(CARRIED_ID)?,
            None => Vec::new(),
        };
        Checkpoint::new(
            model,
            config.clone(),
            progress.clone(),
            optim_bytes.to_vec(),
        )?
        .with_carried(carried)
        .save(&ck_path)
    };
    let eval_now = |model: &Model, stage: &Task| {
        evaluate_task(
            &model.valid(),
            stage,
            config.seed,
            tc.eval_samples,
            tc.batch_size.max(64),
            &device.device,
        )
    };

    let began = Instant::now();
    let elapsed_before = progress.elapsed_s;
    let mut tokens_done = 0usize;
    // Seconds inside optimiser steps (batch, forward, backward, update): the throughput's
    // denominator, without the evaluations and checkpoints between steps.
    let mut step_s = 0.0f64;
    let mut steps_here = 0usize;
    let mut last_eval: Option<EvalReport> = None;
    let mut saved_at = progress.step;
    // The batch's exact match: on the CPU always (a few element-wise operations per
    // segment), on GPUs only when the curriculum moves on it.
    let count_rows = crate::device::is_cpu(&device.device)
        || config.task.late_facts > 0.0
        || tc
            .curriculum
            .as_ref()
            .is_some_and(|c| c.measure == Measure::ExactMatch);
    while progress.step < tc.steps {
        if options.stop_after.is_some_and(|n| steps_here >= n) {
            // Behave like a killed process: whatever came after the last checkpoint is lost.
            saved_at = progress.step;
            break;
        }
        let step = progress.step;
        let t0 = Instant::now();
        model.noise().reseed(step_seed(config.seed, step));
        let batcher = SegmentBatcher::new(config.model.layout, stage.input_len());
        let data = TaskDataset::new(stage.clone(), config.seed, tc.steps * tc.batch_size);
        let items: Vec<Sample> = match tc.carry_memory {
            true => (0..tc.batch_size)
                .map(|b| stage.stream_sample(b, tc.batch_size, progress.streamed))
                .collect::<Result<_>>()?,
            false => (0..tc.batch_size)
                .map(|i| data.try_sample(step * tc.batch_size + i))
                .collect::<Result<_>>()?,
        };
        let batch = batcher.batch(items, &ad);
        let lr = schedule::learning_rate(
            step,
            tc.decay_end(),
            tc.lr,
            tc.min_lr,
            tc.warmup_steps,
            tc.decay,
        );
        let seg_len = model.step_len(stage.input_len());
        let (next, stats, grad_norm) = match tc.carry_memory {
            true => {
                // A memory past its lifetime (`train.carry_windows`) starts fresh.
                let expired = tc.carry_windows.is_some_and(|n| step % n == 0);
                let state = match carried.take() {
                    Some(state) if !expired => state,
                    _ => model.init_state(tc.batch_size, &ad),
                };
                let (next, stats, grad_norm, state) = optimise_carrying(
                    model,
                    &mut optim,
                    &batch,
                    seg_len,
                    lr,
                    tc.grad_clip,
                    state,
                    count_rows,
                );
                carried = Some(state);
                progress.streamed += stage.input_len() as u64;
                (next, stats, grad_norm)
            }
            false => optimise(
                model,
                &mut optim,
                &batch,
                seg_len,
                lr,
                tc.grad_clip,
                count_rows,
            ),
        };
        model = next;

        let tokens = tc.batch_size * stage.input_len();
        tokens_done += tokens;
        steps_here += 1;
        // Late stories apart from the others: whether training their writes costs the rest.
        let (late, rest) = match !tc.carry_memory && stage.config().late_facts > 0.0 {
            true => split_rows(&stats.rows, |i| data.is_late(step * tc.batch_size + i)),
            false => (None, None),
        };
        let loss = stats.nll / batch.answer_tokens.max(1) as f64;
        let accuracy = stats.correct / batch.answer_tokens.max(1) as f64;
        let this_step_s = t0.elapsed().as_secs_f64();
        step_s += this_step_s;
        let tps = tokens as f64 / this_step_s;
        progress.step += 1;
        progress.elapsed_s = elapsed_before + began.elapsed().as_secs_f64();
        log.write(&StepRecord {
            event: "train",
            step: progress.step,
            loss,
            accuracy,
            lr,
            grad_norm,
            exact_match: stats.exact_match,
            exact_match_late: late,
            exact_match_rest: rest,
            segments: stage.config().segments,
            tokens_per_s: tps,
        })?;
        bar.set_position(progress.step as u64);
        let exact = stats
            .exact_match
            .map(|e| format!(" exact {e:.3}"))
            .unwrap_or_default();
        let exact = match (late, rest) {
            (Some(l), Some(r)) => format!("{exact} (late {l:.3}, rest {r:.3})"),
            _ => exact,
        };
        bar.set_message(format!(
            "loss {loss:.4} acc {accuracy:.3}{exact} {:.1}k tok/s seg {}",
            tps / 1e3,
            stage.config().segments
        ));

        if let Some(c) = &tc.curriculum {
            // A batch without answers (none in the retention and copy tasks) says nothing.
            let measured = match c.measure {
                Measure::AnswerTokens => Some(accuracy),
                Measure::ExactMatch => stats.exact_match,
            };
            progress.recent_accuracy.extend(measured);
            if progress.recent_accuracy.len() > c.window {
                progress.recent_accuracy.remove(0);
            }
            let mean = progress.recent_accuracy.iter().sum::<f64>()
                / progress.recent_accuracy.len() as f64;
            let next = c.stages(&task).into_iter().find(|&s| s > progress.segments);
            if let Some(next) = next
                && progress.recent_accuracy.len() == c.window
                && mean >= c.threshold
            {
                progress.segments = next;
                progress.recent_accuracy.clear();
                stage = task.with_segments(progress.segments)?;
                say(
                    options.report,
                    &bar,
                    format!(
                        "step {}: curriculum moves to {} segments",
                        progress.step, progress.segments
                    ),
                );
            }
        }

        let last = progress.step == tc.steps;
        if progress.step % tc.eval_every == 0 || last {
            // A large evaluation takes a while: say so instead of freezing the bar.
            bar.set_message(format!(
                "evaluating {} held-out samples at step {}",
                tc.eval_samples, progress.step
            ));
            let report = eval_now(&model, &task)?;
            log.write(&EvalRecord {
                event: "eval",
                step: progress.step,
                segments: task.config().segments,
                report: &report,
            })?;
            say(
                options.report,
                &bar,
                match report.bits_per_byte {
                    Some(bpb) => format!(
                        "step {:>6}: validation {bpb:.4} bits per byte  next-token acc {:.4}",
                        progress.step, report.token_accuracy
                    ),
                    None => format!(
                        "step {:>6}: eval loss {:.4}  token acc {:.4}  greedy exact {:.4}{}{}",
                        progress.step,
                        report.loss,
                        report.token_accuracy,
                        report.exact_match,
                        super::eval::survival_line(&report.survival)
                            .map(|l| format!("  ({l})"))
                            .unwrap_or_default(),
                        super::eval::interference_line(&report.interference)
                            .map(|l| format!("  ({l})"))
                            .unwrap_or_default()
                    ),
                },
            );
            let exact = report.exact_match;
            last_eval = Some(report);
            if tc.target_exact.is_some_and(|t| exact >= t)
                && progress.segments == task.config().segments
            {
                say(
                    options.report,
                    &bar,
                    format!(
                        "step {}: reached the target exact match, stopping",
                        progress.step
                    ),
                );
                break;
            }
        }
        if progress.step % tc.checkpoint_every == 0 {
            save(&model, &optim, &progress, &carried)?;
            saved_at = progress.step;
        }
    }
    bar.finish_and_clear();
    if progress.step != saved_at {
        save(&model, &optim, &progress, &carried)?;
    }
    let eval = match last_eval {
        Some(e) => e,
        None => eval_now(&model, &task)?,
    };
    let summary = Summary {
        steps: progress.step,
        eval,
        elapsed_s: progress.elapsed_s,
        tokens_per_s: tokens_done as f64 / step_s.max(1e-9),
        checkpoint: ck_path,
        peak_rss_bytes: peak_rss_bytes(),
        trained_segments: progress.segments,
    };
    if options.report && progress.segments < task.config().segments {
        eprintln!(
            "warning: the curriculum reached {} of {} segments: the model was never trained on the \
             length it is evaluated on (more --steps, or a lower curriculum threshold)",
            progress.segments,
            task.config().segments
        );
    }
    if options.stop_after.is_none() || progress.step == tc.steps {
        let path = dir.join(SUMMARY);
        let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
        super::checkpoint::write_atomic(&path, json.as_bytes())?;
    }
    Ok(summary)
}

fn record_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        reason: crate::error::summarise(&format!("{what}: {e}"), 300),
    }
}

#[cfg(test)]
mod tests {
    use super::split_rows;

    /// The late rows' and the other rows' shares are counted apart, and a group without rows
    /// has none.
    #[test]
    fn late_and_other_rows_are_scored_apart() {
        let rows = [true, false, true, true, false];
        assert_eq!(
            split_rows(&rows, |i| i % 2 == 0),
            (Some(2.0 / 3.0), Some(0.5))
        );
        assert_eq!(split_rows(&rows, |_| false), (None, Some(0.6)));
        assert_eq!(split_rows(&[], |_| true), (None, None));
    }
}
