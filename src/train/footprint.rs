//! How much memory a training run will need, estimated from its config before anything is
//! allocated, so a model or batch that cannot fit is an error naming the setting rather than an
//! abort inside the allocator.

use crate::error::{Error, Result};
use crate::model::{Layout, ModelConfig, ModelKind};

use super::config::RunConfig;

/// Bytes per f32.
const F32: f64 = 4.0;

/// The estimate, in bytes, split by what the memory holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Footprint {
    /// Weights, their gradients and AdamW's two moments: 4 copies of every parameter.
    pub parameters: f64,
    /// What one training step keeps for its backward pass, over every segment.
    pub activations: f64,
    /// The part of `activations` that is logits (rows times the vocabulary).
    pub logits: f64,
}

impl Footprint {
    /// The estimate for training `config` (resolved) with its batch size and segments.
    pub fn of(config: &RunConfig) -> Self {
        let m = &config.model;
        // Segments whose graph a step holds: all of them, but on the CPU a retention task (its
        // answer in the last segment) under `bptt_depth` k holds only the last window's k + 1;
        // the windows before run without autodiff (`train::loss`).
        let segments = match (m.kind.whole_input(), m.bptt_depth) {
            (true, _) => 1.0,
            (false, Some(k)) if crate::task::retention::is_retention(config.task.kind) => {
                config.task.segments.min(k + 1) as f64
            }
            (false, _) => config.task.segments as f64,
        };
        let step_len = if m.kind.whole_input() {
            (config.task.segments * m.segment_len) as f64
        } else {
            m.segment_len as f64
        };
        // Rows a layer attends from and to in one step.
        let rows = step_len
            + match (m.kind, m.layout) {
                (ModelKind::Rmt, Layout::Decoder) | (ModelKind::Memxl, _) => {
                    2.0 * m.memory_len() as f64
                }
                _ => m.memory_len() as f64,
            };
        let keys = rows + m.cache_len() as f64;
        let (d, ff, heads) = (m.d_model as f64, m.d_ff as f64, m.n_heads as f64);
        // Per layer and row: the normed input, q/k/v, the context, the output, the residuals
        // and the feed-forward's hidden values and slopes; per head, the attention weights.
        let per_layer = rows * (12.0 * d + 3.0 * ff) + 2.0 * heads * rows * keys;
        let batch = config.train.batch_size as f64;
        let logits = F32 * batch * segments * rows * m.vocab_size as f64;
        let activations = F32 * batch * segments * m.n_layers as f64 * per_layer + logits;
        Footprint {
            parameters: 4.0 * F32 * parameter_count(m),
            activations,
            logits,
        }
    }

    /// Both parts together.
    pub fn total(&self) -> f64 {
        self.parameters + self.activations
    }

    /// An error naming the setting that makes the run too large for `available` bytes, if it is.
    pub fn check(&self, config: &RunConfig, available: f64) -> Result<()> {
        if self.total() <= available {
            return Ok(());
        }
        let m = &config.model;
        let setting = if self.parameters >= self.activations {
            let (embed, layers) = parameter_split(m);
            if embed >= layers {
                "model.vocab_size"
            } else if m.d_ff > 2 * m.d_model {
                "model.d_ff"
            } else {
                "model.d_model"
            }
        } else if self.parameters + self.activations / config.train.batch_size as f64 > available
            || m.segment_len + 2 * m.memory_tokens > 64 * config.train.batch_size
        {
            // One sequence alone is too large: its logits, or its rows.
            if self.logits >= self.activations / 2.0 {
                "model.vocab_size"
            } else if 2 * m.memory_tokens > m.segment_len {
                "model.memory_tokens"
            } else {
                "model.segment_len"
            }
        } else {
            "train.batch_size"
        };
        Err(Error::config(
            setting,
            format!(
                "training would need about {} (weights and optimiser {}, one step's activations \
                 {}), more than the {} of memory available",
                gib(self.total()),
                gib(self.parameters),
                gib(self.activations),
                gib(available)
            ),
        ))
    }
}

/// Bytes an evaluation of `config` (resolved) in batches of `batch` sequences needs: the
/// weights once, every segment's logits (the loss reads them all), the host's copy of the rows
/// (inputs, targets, answer flags and greedy predictions) and one segment's activations.
pub fn evaluation(config: &RunConfig, batch: usize) -> f64 {
    let m = &config.model;
    let tokens = (config.task.segments * m.segment_len) as f64;
    let rows = m.segment_len as f64 + 2.0 * m.memory_len() as f64 + m.cache_len() as f64;
    let per_segment = m.n_layers as f64
        * rows
        * (12.0 * m.d_model as f64 + 3.0 * m.d_ff as f64 + 2.0 * m.n_heads as f64 * rows);
    F32 * parameter_count(m)
        + batch as f64 * (tokens * (F32 * m.vocab_size as f64 + 4.0 * 4.0) + F32 * per_segment)
}

/// `bytes` in GiB, for messages.
pub fn gib(bytes: f64) -> String {
    format!("{:.1} GiB", bytes / (1u64 << 30) as f64)
}

/// Parameters of `m`, counted from its config (as f64: a config may ask for more than fits in
/// any integer type's worth of memory).
pub fn parameter_count(m: &ModelConfig) -> f64 {
    let (embed, layers) = parameter_split(m);
    embed + layers
}

/// (embeddings, positions, memory and head; the layers with their long-term memories).
fn parameter_split(m: &ModelConfig) -> (f64, f64) {
    let (d, ff, v) = (m.d_model as f64, m.d_ff as f64, m.vocab_size as f64);
    // Learned positions over the layout: RMT's only (the Transformer-XL family is rotary).
    let positions = match (m.kind, m.layout) {
        (ModelKind::Rmt, Layout::Decoder) => m.segment_len + 2 * m.memory_len(),
        (ModelKind::Rmt, Layout::Encoder) => m.segment_len + m.memory_len(),
        (ModelKind::Armt, _) if m.positions.is_learned() => m.segment_len + m.memory_len(),
        _ => 0,
    } as f64;
    let embed = 2.0 * v * d + v + positions * d + m.memory_len() as f64 * d + 2.0 * d;
    let block = 4.0 * (d * d + d) + 2.0 * d * ff + ff + d + 4.0 * d;
    let ltm = match m.kind {
        ModelKind::Infinity => {
            let gate = if m.ltm.gate { 3.0 * d * d + d } else { 0.0 };
            4.0 * (d * d + d) + 2.0 * (m.ltm.basis as f64 + 1.0) + gate
        }
        // The associative memory: queries and keys `d -> key_dim`, values `d -> d`, the
        // write strength `d -> 1` with its bias.
        ModelKind::Armt => {
            let k = m.associative_key_dim() as f64;
            2.0 * d * k + d * d + d + 1.0
        }
        _ => 0.0,
    };
    (embed, m.n_layers as f64 * (block + ltm))
}

/// Memory the system can still give this process, on Linux (`MemAvailable`); `None` elsewhere.
pub fn available_memory() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;
    use burn::module::Module;
    use burn::prelude::Device;

    /// The count from the config equals the parameters the model really has, for every kind.
    #[test]
    fn parameter_count_matches_the_model() {
        for (kind, layout, gate) in [
            (ModelKind::Rmt, Layout::Decoder, false),
            (ModelKind::Rmt, Layout::Encoder, false),
            (ModelKind::Transformer, Layout::Decoder, false),
            (ModelKind::Xl, Layout::Decoder, false),
            (ModelKind::Memxl, Layout::Decoder, false),
            (ModelKind::Infinity, Layout::Decoder, false),
            (ModelKind::Infinity, Layout::Decoder, true),
            (ModelKind::Armt, Layout::Decoder, false),
        ] {
            let mut config = ModelConfig {
                kind,
                layout,
                vocab_size: 11,
                d_model: 16,
                n_heads: 2,
                d_ff: 24,
                memory_tokens: 3,
                segment_len: 5,
                ..ModelConfig::default()
            };
            config.ltm.gate = gate;
            let model = Model::new(&config, 0, &Device::flex());
            let real = model.num_params() as f64;
            let counted = parameter_count(&config);
            assert!(
                (counted - real).abs() <= 0.02 * real,
                "{kind:?}: counted {counted}, the model has {real}"
            );
        }
    }

    /// Under `bptt_depth` k a retention task holds the graph of its last k + 1 segments only;
    /// any other task all of them.
    #[test]
    fn a_truncated_retention_task_holds_one_window() {
        let mut config = RunConfig::default();
        config.resolve().unwrap();
        let other = config.task.kind;
        config.task.kind = crate::task::TaskKind::Qa1;
        config.task.segments = 64;
        let full = Footprint::of(&config).activations;
        config.model.bptt_depth = Some(3);
        let cut = Footprint::of(&config).activations;
        assert!(
            (cut * 16.0 - full).abs() < 1e-9 * full,
            "{cut} against {full}"
        );
        config.task.kind = other;
        assert_eq!(Footprint::of(&config).activations, full);
    }

    #[test]
    fn too_large_names_the_setting() {
        let mut config = RunConfig::default();
        config.resolve().unwrap();
        let small = Footprint::of(&config);
        assert!(small.check(&config, 1e9).is_ok(), "{small:?}");
        config.model.d_model = 1 << 20;
        config.model.n_heads = 1;
        let err = Footprint::of(&config)
            .check(&config, 1e9)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.d_model") && err.contains("GiB"),
            "{err}"
        );
        let mut config = RunConfig::default();
        config.resolve().unwrap();
        config.train.batch_size = 1 << 24;
        let err = Footprint::of(&config)
            .check(&config, 1e9)
            .unwrap_err()
            .to_string();
        assert!(err.contains("train.batch_size"), "{err}");
    }
}
