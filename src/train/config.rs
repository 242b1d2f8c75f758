//! A run's configuration: seed, model, task and training settings, read from TOML.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::schedule::Decay;
use crate::error::{Error, Result};
use crate::model::ModelConfig;
use crate::task::{Task, TaskConfig};
use crate::tokenizer::Tokenizer;

/// Curriculum over the number of segments (arXiv 2304.11062): start short, move to the next
/// segment count each time the model has learned the current length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Curriculum {
    /// Segments in the first stage.
    pub start_segments: usize,
    /// Move on once the mean of `measure` over the last `window` training steps reaches this.
    pub threshold: f64,
    /// Steps averaged for `threshold`.
    pub window: usize,
    /// What `threshold` applies to.
    #[serde(skip_serializing_if = "is_default_measure")]
    pub measure: Measure,
}

/// The training score a [`Curriculum`] moves on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measure {
    /// The fraction of answer tokens predicted right (teacher-forced).
    #[default]
    AnswerTokens,
    /// The fraction of samples whose answer tokens are all predicted right: the exact match.
    /// Stricter where one token carries the answer's difficulty (qa1's place names differ in
    /// their first byte; the bytes after it follow from it, so token accuracy stays high
    /// while the answers are wrong).
    ExactMatch,
}

fn is_default_measure(measure: &Measure) -> bool {
    *measure == Measure::AnswerTokens
}

impl Curriculum {
    /// The segment counts trained on, in order: `start_segments` up to the task's own count,
    /// skipping counts the task cannot fill (copy needs a multiple of 3 input tokens, so with
    /// 4-token segments it goes 3, 6, 9).
    pub fn stages(&self, task: &Task) -> Vec<usize> {
        (self.start_segments..=task.config().segments)
            .filter(|&s| task.with_segments(s).is_ok())
            .collect()
    }
}

impl Default for Curriculum {
    fn default() -> Self {
        Self {
            start_segments: 1,
            threshold: 0.95,
            window: 20,
            measure: Measure::AnswerTokens,
        }
    }
}

/// Optimiser, schedule, evaluation and checkpoint settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Optimiser steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Peak learning rate (AdamW).
    pub lr: f64,
    /// Learning rate at the end of the decay.
    pub min_lr: f64,
    /// Steps of linear warmup.
    pub warmup_steps: usize,
    /// Decay after warmup.
    pub decay: Decay,
    /// The step at which the decay reaches `min_lr` (default: `steps`); later steps train at
    /// `min_lr`. A resume that extends `steps` sets it to the old total, so the extension
    /// continues at the floor instead of raising the rate again (`--stretch-schedule` stretches
    /// the decay over the new total instead).
    pub decay_steps: Option<usize>,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Clip the global gradient norm to this; `None` = no clipping.
    pub grad_clip: Option<f64>,
    /// Evaluate on the held-out split every this many steps (and at the end).
    pub eval_every: usize,
    /// Held-out samples per evaluation.
    pub eval_samples: usize,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Stop early once greedy exact-match on the held-out split reaches this.
    pub target_exact: Option<f64>,
    /// Curriculum over the number of segments; `None` trains on `task.segments` from the start.
    pub curriculum: Option<Curriculum>,
    /// Text only: read the training text as `batch_size` streams of consecutive windows and
    /// start each window from the memory the previous window of its stream ended with
    /// (detached), as Transformer-XL's training carries its cache; `false` draws every window
    /// at random and starts it from the initial memory.
    pub carry_memory: bool,
    /// With `carry_memory`: every stream's memory starts fresh again every this many windows
    /// (all streams at once), so training sees memories of every age up to that many windows,
    /// as evaluation does when it reads each document from a fresh memory. `None` carries it
    /// from the run's first window to its last, so a long-lived memory (ARMT's stores) ends
    /// up holding what the weights of long ago wrote into it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carry_windows: Option<usize>,
    /// Start from the weights of this checkpoint (a run's, or one `remem export` wrote)
    /// instead of fresh ones: fine-tuning on a harder stage of a task, another task, or RMT
    /// over a Transformer. Every weight there must be one of the model's, of the same shape;
    /// tensors the model adds (RMT's memory) start fresh. The optimiser and the schedule start
    /// afresh. Only read when the run starts: a resumed run has its own weights.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_from: Option<std::path::PathBuf>,
}

impl TrainConfig {
    /// The step at which the learning rate reaches `min_lr`: `decay_steps`, or `steps`.
    pub fn decay_end(&self) -> usize {
        self.decay_steps.unwrap_or(self.steps)
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 3000,
            batch_size: 32,
            lr: 2e-3,
            min_lr: 1e-4,
            warmup_steps: 100,
            decay: Decay::Cosine,
            decay_steps: None,
            weight_decay: 0.01,
            grad_clip: Some(1.0),
            eval_every: 500,
            eval_samples: 1000,
            checkpoint_every: 500,
            target_exact: None,
            curriculum: None,
            carry_memory: false,
            carry_windows: None,
            init_from: None,
        }
    }
}

/// Everything a training run needs. Unknown keys in a config file are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Seed for weights, data and dropout.
    pub seed: u64,
    /// The model.
    pub model: ModelConfig,
    /// The task.
    pub task: TaskConfig,
    /// Training settings.
    pub train: TrainConfig,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            model: ModelConfig::default(),
            task: TaskConfig::default(),
            train: TrainConfig::default(),
        }
    }
}

impl RunConfig {
    /// Read a TOML file. Fields left out take their defaults.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text).map_err(|reason| Error::ConfigFile {
            path: path.to_path_buf(),
            reason,
        })
    }

    /// Parse TOML text.
    pub fn from_toml(text: &str) -> std::result::Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().replace('\n', " ").trim().to_string())
    }

    /// The config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a RunConfig always serialises")
    }

    /// Check every field, fill the model's vocabulary from the task, and return the task.
    pub fn resolve(&mut self) -> Result<Task> {
        if let Some(backbone) = self.model.backbone.as_mut() {
            // `~/` in a config file is the home folder, as in a shell.
            if let (Ok(rest), Some(home)) = (
                backbone.path.strip_prefix("~"),
                std::env::var_os("HOME").filter(|h| !h.is_empty()),
            ) {
                backbone.path = Path::new(&home).join(rest);
            }
            if backbone.digest.is_none() {
                backbone.digest = Some(crate::model::llama::file_digest(&backbone.path)?);
            }
        }
        if let Some(backbone) = &self.model.backbone {
            // The backbone's sizes, layout and tokenizer; the task reads text through the
            // tokenizer.
            let arch = crate::model::Architecture::open(&backbone.path)?;
            let tokenizer = Tokenizer::Pretrained {
                path: backbone.path.clone(),
            };
            self.model = self.model.with_backbone(&arch);
            self.model.tokenizer = Some(tokenizer.clone());
            let kind = self.task.kind;
            let encoder = matches!(arch, crate::model::Architecture::Bert(_));
            if kind != crate::task::TaskKind::Text && !crate::task::retention::is_retention(kind) {
                return Err(Error::config(
                    "task.kind",
                    format!(
                        "a backbone reads text through its own tokenizer: use the text task or a \
                         retention task ({kind:?} writes its own symbol ids)"
                    ),
                ));
            }
            if encoder && kind == crate::task::TaskKind::Text {
                return Err(Error::config(
                    "task.kind",
                    "a BERT backbone is an encoder: it answers the retention tasks, it does not \
                     predict the next token of text",
                ));
            }
            if encoder && self.model.kind != crate::model::ModelKind::Rmt {
                return Err(Error::config(
                    "model.kind",
                    "memory on a BERT backbone is RMT's (kind = \"rmt\")",
                ));
            }
            // RMT-1M's layout on BERT is `[CLS] memory [SEP] segment [SEP]`.
            let positions = match encoder {
                true => self.model.memory_len() + self.model.segment_len + 3,
                false => 2 * self.model.memory_len() + self.model.segment_len,
            };
            let most = arch.max_positions();
            let task =
                Task::new_with_tokenizer(self.task.clone(), self.model.segment_len, tokenizer)?;
            let whole = self.model.kind.whole_input().then(|| task.input_len());
            if whole.unwrap_or(positions) > most {
                return Err(Error::config(
                    "model.segment_len",
                    format!(
                        "the backbone reads at most {most} positions; this model would give it {}",
                        whole.unwrap_or(positions)
                    ),
                ));
            }
            self.model.validate()?;
            return self.check_training(task);
        }
        let task = Task::new(self.task.clone(), self.model.segment_len)?;
        if self.model.vocab_size == 0 {
            self.model.vocab_size = task.vocab_size();
        } else if self.model.vocab_size < task.vocab_size() {
            return Err(Error::config(
                "model.vocab_size",
                format!(
                    "{} is smaller than the task's {} token ids",
                    self.model.vocab_size,
                    task.vocab_size()
                ),
            ));
        }
        if self.model.tokenizer.is_none() {
            self.model.tokenizer = Some(task.tokenizer());
        }
        self.model.validate()?;
        if task.config().kind == crate::task::TaskKind::Text
            && self.model.layout == crate::model::Layout::Encoder
        {
            return Err(Error::config(
                "model.layout",
                "text is next-byte prediction: use the decoder layout",
            ));
        }
        self.check_training(task)
    }

    /// Check the training settings against `task`, and return it.
    fn check_training(&self, task: Task) -> Result<Task> {
        let t = &self.train;
        for (field, value) in [
            ("train.steps", t.steps),
            ("train.batch_size", t.batch_size),
            ("train.eval_every", t.eval_every),
            ("train.eval_samples", t.eval_samples),
            ("train.checkpoint_every", t.checkpoint_every),
        ] {
            if value == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(Error::config("train.lr", "must be a positive number"));
        }
        if !(t.min_lr >= 0.0 && t.min_lr <= t.lr) {
            return Err(Error::config("train.min_lr", "must be in [0, lr]"));
        }
        if t.decay_steps.is_some_and(|d| d <= t.warmup_steps) {
            return Err(Error::config(
                "train.decay_steps",
                "must be greater than train.warmup_steps (the decay starts after the warmup)",
            ));
        }
        if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
            return Err(Error::config("train.weight_decay", "must be >= 0"));
        }
        if let Some(c) = t.grad_clip
            && !(c > 0.0 && c.is_finite())
        {
            return Err(Error::config(
                "train.grad_clip",
                "must be a positive number",
            ));
        }
        if let Some(x) = t.target_exact
            && !(0.0..=1.0).contains(&x)
        {
            return Err(Error::config("train.target_exact", "must be in [0, 1]"));
        }
        match t.carry_windows {
            Some(0) => return Err(Error::config("train.carry_windows", "must be at least 1")),
            Some(_) if !t.carry_memory => {
                return Err(Error::config(
                    "train.carry_windows",
                    "says how long a carried memory lives: it needs train.carry_memory = true",
                ));
            }
            _ => {}
        }
        if t.carry_memory
            && (task.config().kind != crate::task::TaskKind::Text || self.model.backbone.is_some())
        {
            return Err(Error::config(
                "train.carry_memory",
                "carries the memory from one window of text to the next: it needs the text \
                 task read byte by byte (not a retention task, a synthetic task or a \
                 backbone's tokenizer)",
            ));
        }
        if let Some(c) = &t.curriculum {
            if c.start_segments == 0 || c.start_segments > self.task.segments {
                return Err(Error::config(
                    "train.curriculum.start_segments",
                    format!("must be in 1..={}", self.task.segments),
                ));
            }
            if c.window == 0 {
                return Err(Error::config(
                    "train.curriculum.window",
                    "must be at least 1",
                ));
            }
            // The first stage must be a valid task; later invalid counts are skipped.
            task.with_segments(c.start_segments).map_err(|e| {
                Error::config(
                    "train.curriculum.start_segments",
                    format!("stage with {} segments: {e}", c.start_segments),
                )
            })?;
        }
        Ok(task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_and_round_trip() {
        let mut config = RunConfig::default();
        let task = config.resolve().unwrap();
        assert_eq!(config.model.vocab_size, task.vocab_size());
        let back = RunConfig::from_toml(&config.to_toml()).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn typos_and_bad_values_are_named() {
        let err = RunConfig::from_toml("[train]\nstpes = 3").unwrap_err();
        assert!(err.contains("stpes"), "{err}");
        let err = RunConfig::from_toml("[task]\nkind = \"shuffle\"").unwrap_err();
        assert!(err.contains("shuffle"), "{err}");
        let mut config = RunConfig::from_toml("[train]\nbatch_size = 0").unwrap();
        let err = config.resolve().unwrap_err().to_string();
        assert!(err.contains("train.batch_size"), "{err}");
        let err = RunConfig::from_toml("[model]\nd_model = -4").unwrap_err();
        assert!(err.contains("d_model"), "{err}");
    }

    /// The curriculum's measure reads and writes by name, and a config that does not name
    /// one (every config before it existed) keeps the answer-token accuracy.
    #[test]
    fn the_curriculum_measure_defaults_to_answer_tokens() {
        let read = |toml: &str| toml::from_str::<Curriculum>(toml).ok().map(|c| c.measure);
        assert_eq!(read("threshold = 0.9"), Some(Measure::AnswerTokens));
        assert_eq!(read("measure = \"exact-match\""), Some(Measure::ExactMatch));
        assert_eq!(read("measure = \"exact\""), None);
        let written = |measure| {
            toml::to_string(&Curriculum {
                measure,
                ..Curriculum::default()
            })
            .unwrap()
        };
        assert!(!written(Measure::AnswerTokens).contains("measure"));
        assert!(written(Measure::ExactMatch).contains("measure = \"exact-match\""));
    }

    #[test]
    fn the_curriculum_skips_segment_counts_the_task_cannot_fill() {
        let mut config = RunConfig::default();
        config.task.segments = 9;
        config.model.segment_len = 4;
        config.train.curriculum = Some(Curriculum {
            start_segments: 3,
            ..Curriculum::default()
        });
        let task = config.resolve().unwrap();
        let stages = config.train.curriculum.as_ref().unwrap().stages(&task);
        assert_eq!(stages, vec![3, 6, 9]);
        // A first stage the task cannot fill is an error naming the field.
        config.train.curriculum.as_mut().unwrap().start_segments = 2;
        let err = config.resolve().unwrap_err().to_string();
        assert!(err.contains("train.curriculum.start_segments"), "{err}");
    }
}
