//! Training: a custom segment loop with AdamW, warmup and decay, global-norm clipping, held-out
//! evaluation, JSON-lines metrics, atomic checkpoints, resume, and a curriculum over segments.
//!
//! Checkpoints and run configs are always built (inference needs them); the loop,
//! losses, evaluation and metrics need the `train` feature (on by default), which brings Burn's
//! autodiff. The web page builds without it.

pub mod checkpoint;
#[cfg(feature = "train")]
pub mod clip;
pub mod config;
#[cfg(feature = "train")]
pub mod eval;
#[cfg(feature = "train")]
pub mod footprint;
#[cfg(feature = "train")]
pub mod loss;
#[cfg(feature = "train")]
pub mod metrics;
#[cfg(feature = "train")]
mod run;
pub mod schedule;

pub use checkpoint::{Checkpoint, Progress};
pub use config::{Curriculum, Measure, RunConfig, TrainConfig};
#[cfg(feature = "train")]
pub use eval::{EvalReport, evaluate};
#[cfg(feature = "train")]
pub use run::*;

/// File name of the checkpoint inside a run folder.
pub const CHECKPOINT: &str = "checkpoint.safetensors";
/// File name of the checkpoint in run folders of earlier remem builds (remem's own format 1,
/// which `remem export` converts).
pub const LEGACY_CHECKPOINT: &str = "checkpoint.remem";
/// File name of the end-of-run summary inside a run folder (written last: a run folder with
/// it is finished).
pub const SUMMARY: &str = "summary.json";
/// File name of the run's settings inside a run folder (written atomically before training).
pub const CONFIG: &str = "config.toml";
/// File name of the metrics log inside a run folder.
pub const METRICS: &str = "metrics.jsonl";
