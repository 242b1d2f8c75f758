//! The model's configuration: which model, its sizes, and how memory is trained.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::{LtmConfig, StoreRule};
use crate::tokenizer::Tokenizer;

/// Which model to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Recurrent Memory Transformer.
    #[default]
    Rmt,
    /// Plain causal Transformer over the whole input as one segment (the full-attention baseline).
    Transformer,
    /// Transformer-XL: each layer attends over a detached cache of the previous segments' states
    /// (`mem_len` of them, by default `memory_tokens`, the same budget as RMT's memory).
    Xl,
    /// Transformer-XL with RMT's memory tokens (MemTr-XL).
    Memxl,
    /// The infinity-former: Transformer-XL plus a continuous long-term memory per layer, fed by
    /// the states that leave the cache (settings in `ltm`).
    Infinity,
    /// The Associative Recurrent Memory Transformer (Rodkin et al. 2024): RMT's write memory
    /// tokens feed a key-value store in every layer, rewritten by the delta rule and read by
    /// every row (see [`crate::nn::AssociativeMemory`]).
    Armt,
}

impl ModelKind {
    /// Whether the model reads the whole input as a single segment.
    pub fn whole_input(self) -> bool {
        self == ModelKind::Transformer
    }
}

/// How RMT tells positions apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// A learned vector added to each row of the layout (the RMT paper's BERT and GPT-2 form).
    #[default]
    Learned,
    /// Rotary positions (RoPE) over the layout's rows in every attention layer, as remem's
    /// Transformer-XL, MemTr-XL, Transformer and infinity-former have: scores depend on the
    /// distance between rows only, so attending to the bytes just before needs nothing learned
    /// (the RMT paper's language models sat on Transformer-XL's relative positions).
    Rotary,
}

impl Positions {
    /// Whether this is the default (learned), which configs leave unwritten.
    pub fn is_learned(&self) -> bool {
        *self == Positions::Learned
    }
}

/// Where RMT puts its memory tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[read memory | segment | write memory]` with the paper's three-part mask; next-token
    /// prediction.
    #[default]
    Decoder,
    /// `[memory | segment]` with bidirectional attention, memory read and written at the start
    /// (the encoder variant of arXiv 2304.11062); answer tokens are hidden from the input and
    /// predicted at their own positions.
    Encoder,
}

/// A pretrained model to put memory on (`[model.backbone]`, or `--backbone PATH`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneConfig {
    /// A Llama-family GGUF file, or a Hugging Face folder (`config.json`, `model.safetensors`)
    /// of a Llama or a BERT.
    pub path: std::path::PathBuf,
    /// Train the backbone's weights too; by default they stay as loaded and only the memory
    /// (and the layer that reads it) learns.
    #[serde(default)]
    pub train: bool,
    /// The weights file's digest ([`crate::model::llama::file_digest`]), recorded when a run
    /// starts: a model trained on one backbone is not silently run on another file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Sizes and memory settings of a model. Unknown keys in a config file are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Which model.
    pub kind: ModelKind,
    /// Decoder or encoder memory layout (RMT).
    pub layout: Layout,
    /// Vocabulary size. Set from the task when 0.
    pub vocab_size: usize,
    /// Model width.
    pub d_model: usize,
    /// Number of transformer layers.
    pub n_layers: usize,
    /// Attention heads per layer.
    pub n_heads: usize,
    /// Feed-forward hidden width.
    pub d_ff: usize,
    /// Dropout probability.
    pub dropout: f64,
    /// Number of memory tokens M; 0 gives the plain segment-level Transformer.
    pub memory_tokens: usize,
    /// RMT's positions: learned (default) or rotary.
    #[serde(skip_serializing_if = "Positions::is_learned")]
    pub positions: Positions,
    /// RMT from scratch: blend each new memory with the old one through a learned gate
    /// (`old + g * (new - old)`, `g` a sigmoid of both, per memory token and feature) instead
    /// of replacing it, so a segment with nothing to remember can leave the memory as it was.
    /// Not in the RMT paper; off by default.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub memory_gate: bool,
    /// ARMT: width of the associative memory's keys before DPFP-3 (`None` = `d_model / 4`);
    /// each layer's store is `[6 * key_dim, d_model + 1]` per sequence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_dim: Option<usize>,
    /// ARMT: how the associative stores are read and written, `normalised` (default, the
    /// paper's) or `delta` (no normaliser; see [`StoreRule`]).
    #[serde(skip_serializing_if = "StoreRule::is_normalised")]
    pub store: StoreRule,
    /// Tokens per segment T.
    pub segment_len: usize,
    /// Each segment's loss reaches back through the memory of at most this many earlier
    /// segments, and the last segment's through exactly this many (windows counted back from
    /// the last segment, see [`crate::model::cuts_before`]); `None` = full BPTT, 0 = no
    /// gradient through memory.
    pub bptt_depth: Option<usize>,
    /// Cached states per layer (Transformer-XL, MemTr-XL); `None` = `memory_tokens`.
    pub mem_len: Option<usize>,
    /// How the model's ids read as text; `None` = the task's (filled in by
    /// [`crate::train::RunConfig::resolve`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<Tokenizer>,
    /// The infinity-former's long-term memory (`[model.ltm]`; written only when not the default).
    #[serde(skip_serializing_if = "LtmConfig::is_default")]
    pub ltm: LtmConfig,
    /// A pretrained model the memory is added to (a Llama decoder or a BERT encoder); its
    /// sizes replace `vocab_size`, `d_model`, `n_layers`, `n_heads` and `d_ff`, and its kind
    /// the layout ([`ModelConfig::with_backbone`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backbone: Option<BackboneConfig>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            kind: ModelKind::Rmt,
            layout: Layout::Decoder,
            vocab_size: 0,
            d_model: 64,
            n_layers: 2,
            n_heads: 4,
            d_ff: 128,
            dropout: 0.0,
            memory_tokens: 8,
            positions: Positions::Learned,
            memory_gate: false,
            key_dim: None,
            store: StoreRule::Normalised,
            segment_len: 8,
            bptt_depth: None,
            mem_len: None,
            tokenizer: None,
            ltm: LtmConfig::default(),
            backbone: None,
        }
    }
}

impl ModelConfig {
    /// This config with the sizes of the backbone `arch` (vocabulary, width, layers, heads,
    /// feed-forward width) in place of its own, and its layout: a BERT is an encoder, a Llama
    /// a decoder.
    pub fn with_backbone(&self, arch: &crate::model::Architecture) -> Self {
        use crate::model::Architecture;
        let (vocab_size, d_model, n_layers, n_heads, d_ff, layout) = match arch {
            Architecture::Llama(c) => (
                c.vocab_size,
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.intermediate_size,
                Layout::Decoder,
            ),
            Architecture::Bert(c) => (
                c.vocab_size,
                c.hidden_size,
                c.num_hidden_layers,
                c.num_attention_heads,
                c.intermediate_size,
                Layout::Encoder,
            ),
        };
        ModelConfig {
            vocab_size,
            d_model,
            n_layers,
            n_heads,
            d_ff,
            layout,
            ..self.clone()
        }
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("model.vocab_size", self.vocab_size),
            ("model.d_model", self.d_model),
            ("model.n_layers", self.n_layers),
            ("model.n_heads", self.n_heads),
            ("model.d_ff", self.d_ff),
            ("model.segment_len", self.segment_len),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(Error::config(field, "must be at least 1"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(Error::config(
                "model.n_heads",
                format!(
                    "d_model {} is not divisible by n_heads {}",
                    self.d_model, self.n_heads
                ),
            ));
        }
        if let Some(t) = &self.tokenizer {
            t.validate(self.vocab_size)?;
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::config("model.dropout", "must be in [0, 1)"));
        }
        if self.layout == Layout::Encoder && self.kind != ModelKind::Rmt {
            return Err(Error::config(
                "model.layout",
                "the encoder layout is an RMT option; use decoder",
            ));
        }
        if self.positions == Positions::Rotary
            && (!matches!(self.kind, ModelKind::Rmt | ModelKind::Armt) || self.backbone.is_some())
        {
            return Err(Error::config(
                "model.positions",
                "rotary is an option of RMT and ARMT from scratch (the other models and the \
                 backbones have their own positions)",
            ));
        }
        if self.kind == ModelKind::Armt && self.memory_tokens == 0 {
            return Err(Error::config(
                "model.memory_tokens",
                "ARMT writes its associative memory from its memory tokens: at least one",
            ));
        }
        match self.key_dim {
            Some(_) if self.kind != ModelKind::Armt => {
                return Err(Error::config(
                    "model.key_dim",
                    "the associative memory's key width is an ARMT setting",
                ));
            }
            Some(0) => return Err(Error::config("model.key_dim", "must be at least 1")),
            _ => {}
        }
        if !self.store.is_normalised() && self.kind != ModelKind::Armt {
            return Err(Error::config(
                "model.store",
                "the associative store's rule is an ARMT setting",
            ));
        }
        if self.memory_gate
            && (self.kind != ModelKind::Rmt || self.backbone.is_some() || self.memory_tokens == 0)
        {
            return Err(Error::config(
                "model.memory_gate",
                "the memory gate is an option of RMT from scratch with memory tokens",
            ));
        }
        if self.kind == ModelKind::Memxl && self.memory_tokens == 0 {
            return Err(Error::config(
                "model.memory_tokens",
                "MemTr-XL needs at least one memory token",
            ));
        }
        if self.layout == Layout::Encoder && self.memory_tokens == 0 {
            return Err(Error::config(
                "model.memory_tokens",
                "the encoder layout needs at least one memory token",
            ));
        }
        if self.kind == ModelKind::Infinity {
            self.ltm.validate()?;
        }
        if self.backbone.is_some() {
            if !matches!(
                self.kind,
                ModelKind::Rmt | ModelKind::Transformer | ModelKind::Infinity
            ) {
                return Err(Error::config(
                    "model.kind",
                    "a backbone takes `rmt`, `infinity` or `transformer` (the others are not \
                     built on one yet)",
                ));
            }
            if self.kind == ModelKind::Infinity && self.cache_len() > 0 {
                return Err(Error::config(
                    "model.mem_len",
                    "the infinity-former on a backbone reads its segment and its long-term \
                     memory only (no Transformer-XL cache on a backbone yet): set mem_len = 0",
                ));
            }
            if self.dropout != 0.0 {
                return Err(Error::config(
                    "model.dropout",
                    "a backbone runs without dropout: set 0",
                ));
            }
        }
        const MAX_LAYOUT: usize = 1 << 16;
        if 2 * self.memory_tokens + self.segment_len > MAX_LAYOUT {
            let field = if 2 * self.memory_tokens > self.segment_len {
                "model.memory_tokens"
            } else {
                "model.segment_len"
            };
            return Err(Error::config(
                field,
                format!("2 * memory_tokens + segment_len must stay below {MAX_LAYOUT}"),
            ));
        }
        Ok(())
    }

    /// The transformer layers of this config, with weights from `init`.
    pub fn blocks(&self, init: &mut crate::nn::Init) -> Vec<crate::nn::Block> {
        (0..self.n_layers)
            .map(|_| {
                crate::nn::BlockConfig::new(self.d_model, self.n_heads, self.d_ff)
                    .with_dropout(self.dropout)
                    .init(init)
            })
            .collect()
    }

    /// The learned initial memory `[M, d]` (none when the model adds no memory tokens), at the
    /// scale of the token embeddings (N(0, 1), Burn's default), which is also the scale of the
    /// layer-normed states that replace it after one segment.
    pub fn initial_memory(
        &self,
        init: &mut crate::nn::Init,
    ) -> Option<burn::module::Param<burn::prelude::Tensor<2>>> {
        let m = self.memory_len();
        (m > 0).then(|| init.normal([m, self.d_model], 1.0))
    }

    /// Cached states per layer: `mem_len`, or `memory_tokens` when unset (XL kinds only).
    pub fn cache_len(&self) -> usize {
        match self.kind {
            ModelKind::Xl | ModelKind::Memxl | ModelKind::Infinity => {
                self.mem_len.unwrap_or(self.memory_tokens)
            }
            ModelKind::Rmt | ModelKind::Transformer | ModelKind::Armt => 0,
        }
    }

    /// ARMT's key width before DPFP: `key_dim`, or `d_model / 4` (at least 1) when unset.
    pub fn associative_key_dim(&self) -> usize {
        self.key_dim.unwrap_or((self.d_model / 4).max(1))
    }

    /// Memory tokens the model really adds (none for the Transformer and Transformer-XL).
    pub fn memory_len(&self) -> usize {
        match self.kind {
            ModelKind::Rmt | ModelKind::Memxl | ModelKind::Armt => self.memory_tokens,
            ModelKind::Xl | ModelKind::Transformer | ModelKind::Infinity => 0,
        }
    }

    /// A short string that identifies the architecture (not the weights), used to refuse
    /// checkpoints and memory states that belong to another model.
    pub fn fingerprint(&self) -> String {
        let detail = match self.kind {
            ModelKind::Infinity => format!(
                "-n{}-{:?}{}{}",
                self.ltm.basis,
                self.ltm.sampling,
                if self.ltm.gate { "-gate" } else { "" },
                if self.ltm.bias { "" } else { "-nobias" }
            ),
            ModelKind::Armt => format!(
                "-k{}{}",
                self.associative_key_dim(),
                if self.store.is_normalised() {
                    ""
                } else {
                    "-delta"
                }
            ),
            _ => String::new(),
        };
        let base = format!(
            "{:?}-{:?}-v{}-d{}-l{}-h{}-ff{}-m{}-t{}-c{}",
            self.kind,
            self.layout,
            self.vocab_size,
            self.d_model,
            self.n_layers,
            self.n_heads,
            self.d_ff,
            self.memory_len(),
            self.segment_len,
            self.cache_len()
        );
        let backbone = match &self.backbone {
            Some(b) => format!(
                "-{}{}",
                match self.layout {
                    Layout::Decoder => "llama",
                    Layout::Encoder => "bert",
                },
                b.digest.as_deref().unwrap_or("")
            ),
            None => String::new(),
        };
        (base + &detail + &backbone).to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ModelConfig {
        ModelConfig {
            vocab_size: 12,
            ..ModelConfig::default()
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert!(valid().validate().is_ok());
        let err = ModelConfig {
            d_model: 0,
            ..valid()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("model.d_model"), "{err}");
        let err = ModelConfig {
            n_heads: 3,
            ..valid()
        }
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("model.n_heads"), "{err}");
    }

    /// ARMT needs memory tokens to write its stores from, and only ARMT takes a key width.
    #[test]
    fn armt_settings_are_checked() {
        let armt = ModelConfig {
            kind: ModelKind::Armt,
            ..valid()
        };
        assert!(armt.validate().is_ok());
        for (config, field) in [
            (
                ModelConfig {
                    memory_tokens: 0,
                    ..armt.clone()
                },
                "model.memory_tokens",
            ),
            (
                ModelConfig {
                    key_dim: Some(0),
                    ..armt.clone()
                },
                "model.key_dim",
            ),
            (
                ModelConfig {
                    key_dim: Some(8),
                    ..valid()
                },
                "model.key_dim",
            ),
            (
                ModelConfig {
                    layout: Layout::Encoder,
                    ..armt.clone()
                },
                "model.layout",
            ),
            (
                ModelConfig {
                    store: StoreRule::Delta,
                    ..valid()
                },
                "model.store",
            ),
        ] {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        let wider = ModelConfig {
            key_dim: Some(8),
            ..armt.clone()
        };
        assert_ne!(wider.fingerprint(), armt.fingerprint());
        // A store written under one rule means something else under the other.
        let delta = ModelConfig {
            store: StoreRule::Delta,
            ..armt.clone()
        };
        assert!(delta.validate().is_ok());
        assert_ne!(delta.fingerprint(), armt.fingerprint());
        // Configs written before the option read as the normalised rule, and it is left out.
        let old: ModelConfig = toml::from_str("kind = \"armt\"").unwrap();
        assert_eq!(old.store, StoreRule::Normalised);
        assert!(!toml::to_string(&armt).unwrap().contains("store"));
        let read: ModelConfig = toml::from_str(&toml::to_string(&delta).unwrap()).unwrap();
        assert_eq!(read.store, StoreRule::Delta);
    }

    #[test]
    fn typos_are_rejected() {
        let err = toml::from_str::<ModelConfig>("d_modle = 3").unwrap_err();
        assert!(err.to_string().contains("d_modle"), "{err}");
    }
}
