//! Training: a custom segment loop with AdamW, warmup and decay, global-norm clipping, held-out
//! evaluation, JSON-lines metrics, atomic checkpoints, resume, and a curriculum over segments.
//!
//! Checkpoints, run configs and [`load_model`] are always built (inference needs them); the loop,
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

use std::path::Path;

use burn::prelude::*;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;

use crate::error::{Error, Result};
use crate::model::Model;

pub use checkpoint::{Checkpoint, Progress};
pub use config::{Curriculum, RunConfig, TrainConfig};
#[cfg(feature = "train")]
pub use eval::{EvalReport, evaluate};
#[cfg(feature = "train")]
pub use run::*;

/// File name of the checkpoint inside a run folder.
pub const CHECKPOINT: &str = "checkpoint.remem";
/// File name of the end-of-run summary inside a run folder (written last: a run folder with
/// it is finished).
pub const SUMMARY: &str = "summary.json";
/// File name of the run's settings inside a run folder (written atomically before training).
pub const CONFIG: &str = "config.toml";
/// File name of the metrics log inside a run folder.
pub const METRICS: &str = "metrics.jsonl";

/// Load a model from checkpoint bytes onto `device`, refusing a record that does not fit.
pub fn load_model(checkpoint: &Checkpoint, path: &Path, device: &Device) -> Result<Model> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(checkpoint.model.clone()))
        .map_err(|e| record_error(path, "unreadable weights", e))?;
    Model::new(&checkpoint.config.model, checkpoint.config.seed, device)
        .try_load_record(record)
        .map_err(|e| record_error(path, "weights do not fit the model", e))
}

pub(crate) fn record_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        reason: crate::error::summarise(&format!("{what}: {e}"), 300),
    }
}
