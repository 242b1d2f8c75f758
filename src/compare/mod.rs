//! `remem compare`: train every model x segment count x seed on one budget, evaluate each on the
//! same held-out split, and tabulate (Markdown, CSV) and plot (PNG) the results.
//!
//! Every run is its own run folder under `<out>/runs/`, trained by a child `remem train` process
//! (so each run's peak memory is its own). A run folder with a `summary.json` is finished and is
//! never trained again, which is how an interrupted compare resumes.

pub mod plot;
pub mod table;

use serde::{Deserialize, Serialize};

use crate::model::ModelKind;
use crate::train::Summary;

/// A model as compare names it: a kind, for the infinity-former how it samples its memory
/// (`infinity` uniform, `infinity-sticky` sticky), and for RMT and ARMT their positions
/// (`rmt` learned, `rmt-rotary` rotary; `armt`, `armt-rotary`), and for ARMT its store's rule
/// (`armt-delta`, `armt-rotary-delta`: [`crate::nn::StoreRule::Delta`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contender {
    /// The model kind.
    pub kind: ModelKind,
    /// Sticky sampling of the long-term memory (infinity-former only).
    pub sticky: bool,
    /// Rotary positions (RMT and ARMT only).
    #[serde(default)]
    pub rotary: bool,
    /// The delta rule's stores, without the normaliser (ARMT only).
    #[serde(default)]
    pub delta: bool,
}

impl Contender {
    /// A plain kind (uniform sampling where that applies).
    pub fn of(kind: ModelKind) -> Self {
        Contender {
            kind,
            sticky: false,
            rotary: false,
            delta: false,
        }
    }
}

impl std::str::FromStr for Contender {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(armt) = lower
            .strip_suffix("-delta")
            .filter(|b| b.starts_with("armt"))
        {
            let model: Contender = armt.parse()?;
            return Ok(Contender {
                delta: true,
                ..model
            });
        }
        match lower.as_str() {
            "infinity-sticky" => {
                return Ok(Contender {
                    sticky: true,
                    ..Contender::of(ModelKind::Infinity)
                });
            }
            "rmt-rotary" | "armt-rotary" => {
                let kind = if lower == "rmt-rotary" {
                    ModelKind::Rmt
                } else {
                    ModelKind::Armt
                };
                return Ok(Contender {
                    rotary: true,
                    ..Contender::of(kind)
                });
            }
            _ => {}
        }
        serde_json::from_value(serde_json::Value::String(lower))
            .map(Contender::of)
            .map_err(|_| {
                format!(
                    "unknown model `{s}`: rmt, rmt-rotary, armt, armt-rotary, armt-delta, \
                     armt-rotary-delta, transformer, xl, memxl, infinity or infinity-sticky"
                )
            })
    }
}

/// One cell of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The model.
    pub model: Contender,
    /// Segments the input is split into.
    pub segments: usize,
    /// Seed of this run.
    pub seed: u64,
}

impl RunSpec {
    /// The run folder's name, `rmt-s3-seed1`.
    pub fn name(&self) -> String {
        format!(
            "{}-s{}-seed{}",
            model_name(self.model),
            self.segments,
            self.seed
        )
    }
}

/// The lowercase name of a model, as the CLI spells it (`infinity-sticky` for the sticky
/// infinity-former, `rmt-rotary` for RMT with rotary positions).
pub fn model_name(model: Contender) -> String {
    let kind = serde_json::to_value(model.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", model.kind).to_lowercase());
    let name = match (model.sticky, model.rotary) {
        (true, _) => kind + "-sticky",
        (_, true) => kind + "-rotary",
        _ => kind,
    };
    if model.delta { name + "-delta" } else { name }
}

/// What one run produced: its summary, or why it failed.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// Which run.
    pub spec: RunSpec,
    /// The run's summary, or the error that ended it.
    pub outcome: Result<Summary, String>,
}

/// Every run of the grid, in order: models, then segment counts, then seeds.
pub fn grid(models: &[Contender], segments: &[usize], seeds: &[u64]) -> Vec<RunSpec> {
    let mut runs = Vec::new();
    for &model in models {
        for &s in segments {
            for &seed in seeds {
                runs.push(RunSpec {
                    model,
                    segments: s,
                    seed,
                });
            }
        }
    }
    runs
}

/// Mean, min and max of the finished runs of one (model, segments) cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Mean.
    pub mean: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

impl Stats {
    /// Stats of `values`, or `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        Some(Stats {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }
}

/// The results of one (model, segments) cell, seeds in order.
pub fn cell(results: &[RunResult], model: Contender, segments: usize) -> Vec<&RunResult> {
    results
        .iter()
        .filter(|r| r.spec.model == model && r.spec.segments == segments)
        .collect()
}

/// Distinct values of `key` over `results`, in first-seen order.
pub fn distinct<T: PartialEq + Copy>(results: &[RunResult], key: impl Fn(&RunSpec) -> T) -> Vec<T> {
    let mut out = Vec::new();
    for r in results {
        let k = key(&r.spec);
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}
