//! BERT, the encoder RMT-1M put memory on: learned absolute positions, post-norm layers, exact
//! GELU. Loads Hugging Face's files (`config.json`, and `model.safetensors` with BERT's tensor
//! names) through Burn's store; `scripts/fetch_models.py` fetches all-MiniLM-L6-v2.
//!
//! ```text
//! x = norm(words[ids] + positions[0..seq] + token_types[0])
//! for each layer: x = norm(x + attn(x)); x = norm(x + ff(x))      (ff = out(gelu(in(x))))
//! ```

use std::path::Path;

use burn::nn::Embedding;
use burn::prelude::*;
use burn::store::{KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::{Block, BlockConfig, Init, LayerNorm, LayerNormConfig};

/// A BERT architecture, as Hugging Face's `config.json` states it (other keys are ignored).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Vocabulary size (WordPiece ids `0..vocab_size`).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: usize,
    /// Hidden width of the feed-forward layers.
    pub intermediate_size: usize,
    /// Learned positions: the longest input a segment can be.
    pub max_position_embeddings: usize,
    /// Segment-type embeddings (`token_type_ids`); remem uses type 0.
    #[serde(default = "two")]
    pub type_vocab_size: usize,
    /// The layer norms' epsilon.
    #[serde(default = "bert_epsilon")]
    pub layer_norm_eps: f64,
    /// The feed-forward activation; only `gelu` (the exact, erf form) is supported.
    #[serde(default = "gelu")]
    pub hidden_act: String,
    /// Only `absolute` positions are supported.
    #[serde(default = "absolute")]
    pub position_embedding_type: String,
}

fn two() -> usize {
    2
}
fn bert_epsilon() -> f64 {
    1e-12
}
fn gelu() -> String {
    "gelu".into()
}
fn absolute() -> String {
    "absolute".into()
}

impl BertConfig {
    /// Read and check a Hugging Face `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::ConfigFile {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config: BertConfig =
            serde_json::from_str(&text).map_err(|e| bad(format!("not a BERT config: {e}")))?;
        config.check().map_err(bad)?;
        Ok(config)
    }

    /// Why this architecture cannot be built, if it cannot.
    pub fn check(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} is 0"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.hidden_act != "gelu" {
            return Err(format!(
                "hidden_act `{}` is not supported (only `gelu`)",
                self.hidden_act
            ));
        }
        if self.position_embedding_type != "absolute" {
            return Err(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            ));
        }
        Ok(())
    }
}

/// A BERT encoder (no pooler, no head).
#[derive(Module, Debug)]
pub struct Bert {
    words: Embedding,
    positions: Embedding,
    token_types: Embedding,
    norm: LayerNorm,
    layers: Vec<Block>,
}

/// Hugging Face's BERT names to [`Bert`]'s, applied in order (after Burn's PyTorch adapter
/// transposes linear weights and renames the norms' `weight`/`bias` to `gamma`/`beta`).
const NAMES: &[(&str, &str)] = &[
    (r"^bert\.", ""),
    (r"^embeddings\.word_embeddings\.", "words."),
    (r"^embeddings\.position_embeddings\.", "positions."),
    (r"^embeddings\.token_type_embeddings\.", "token_types."),
    (r"^embeddings\.LayerNorm\.", "norm."),
    (
        r"^encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.",
        "layers.$1.attn.$2.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.",
        "layers.$1.attn.output.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.",
        "layers.$1.norm_attn.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.intermediate\.dense\.",
        "layers.$1.ff_in.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.output\.dense\.",
        "layers.$1.ff_out.",
    ),
    (
        r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.",
        "layers.$1.norm_ff.",
    ),
];

/// Tensors of a BERT file that the encoder does not use: the pooler and the position-id buffer.
fn unused_is_fine(name: &str) -> bool {
    name.starts_with("pooler.") || name.ends_with("position_ids")
}

impl Bert {
    /// This encoder for a streaming session (see [`crate::nn::Attention::for_inference`]).
    pub(crate) fn for_inference(self) -> Self {
        Self {
            layers: self.layers.into_iter().map(Block::for_inference).collect(),
            ..self
        }
    }

    /// A BERT of `config` with fresh weights drawn from `seed` on `device`.
    pub fn new(config: &BertConfig, seed: u64, device: &Device) -> Self {
        let mut init = Init::new(seed, device);
        let d = config.hidden_size;
        let block = BlockConfig::new(d, config.num_attention_heads, config.intermediate_size)
            .with_post_norm(true)
            .with_norm_epsilon(config.layer_norm_eps);
        Bert {
            words: init.embedding(config.vocab_size, d),
            positions: init.embedding(config.max_position_embeddings, d),
            token_types: init.embedding(config.type_vocab_size, d),
            norm: LayerNormConfig::new(d)
                .with_epsilon(config.layer_norm_eps)
                .init(device),
            layers: (0..config.num_hidden_layers)
                .map(|_| block.init(&mut init))
                .collect(),
        }
    }

    /// Load a Hugging Face BERT folder (`config.json`, `model.safetensors`) onto `device`. A
    /// file with missing, extra or wrongly shaped tensors is an error naming them.
    pub fn load(dir: &Path, device: &Device) -> Result<(Self, BertConfig)> {
        let config = BertConfig::from_file(&dir.join("config.json"))?;
        let path = dir.join("model.safetensors");
        if !path.is_file() {
            return Err(Error::Backbone {
                path,
                reason: "missing (a BERT folder holds config.json and model.safetensors)".into(),
            });
        }
        let bad = |reason: String| Error::Backbone {
            path: path.clone(),
            reason: crate::error::summarise(&reason, 400),
        };
        let remap = KeyRemapper::from_patterns(NAMES.to_vec()).expect("the patterns compile");
        let mut store = SafetensorsStore::from_file(&path)
            .with_from_adapter(PyTorchToBurnAdapter)
            .remap(remap)
            .allow_partial(true)
            .validate(false);
        let mut bert = Bert::new(&config, 0, device);
        let result = bert
            .load_from(&mut store)
            .map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let list = crate::io::name_list;
        if !result.errors.is_empty() {
            return Err(bad(list(
                result.errors.iter().map(|e| e.to_string()).collect(),
            )));
        }
        if !result.missing.is_empty() {
            return Err(bad(format!(
                "missing tensors for this config: {}",
                list(result.missing.into_iter().map(|(n, _)| n).collect())
            )));
        }
        let extra: Vec<String> = result
            .unused
            .into_iter()
            .filter(|n| !unused_is_fine(n))
            .collect();
        if !extra.is_empty() {
            return Err(bad(format!(
                "tensors a BERT of this config does not have: {}",
                list(extra)
            )));
        }
        Ok((bert, config))
    }

    /// The last layer's hidden states, every position attending to every other (token type 0,
    /// positions from 0).
    ///
    /// # Shapes
    /// - ids: `[batch, seq]`, `seq <= max_position_embeddings`
    /// - output: `[batch, seq, hidden_size]`
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, seq] = ids.dims();
        let bias = Tensor::zeros([seq, seq], &ids.device());
        self.hidden(self.embed(ids), bias, false).0
    }

    /// The embedding layer's output.
    ///
    /// # Shapes
    /// - ids: `[batch, seq]`
    /// - output: `[batch, seq, hidden_size]`
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.embed_vectors(self.words.forward(ids))
    }

    /// The embedding layer's output for rows given as word vectors (a word's embedding, or a
    /// memory vector in the same space): positions from 0 and token type 0 added, then normed.
    ///
    /// # Shapes
    /// - words: `[batch, seq, hidden_size]`
    /// - output: `[batch, seq, hidden_size]`
    pub fn embed_vectors(&self, words: Tensor<3>) -> Tensor<3> {
        let [_, seq, _] = words.dims();
        let positions = self.positions.weight.val().slice(s![0..seq, ..]);
        let types = self.token_types.weight.val().slice(s![0..1, ..]);
        self.norm
            .forward(words + (positions + types).unsqueeze::<3>())
    }

    /// The layers over embedded rows `x` with the attention `bias` (0 = may attend), and each
    /// layer's attention weights when asked for.
    ///
    /// # Shapes
    /// - x: `[batch, seq, hidden_size]`; bias: `[seq, seq]`
    /// - output: `[batch, seq, hidden_size]`; weights: each `[batch, heads, seq, seq]`
    pub fn hidden(
        &self,
        x: Tensor<3>,
        bias: Tensor<2>,
        return_weights: bool,
    ) -> (Tensor<3>, Option<Vec<Tensor<4>>>) {
        let mut weights = return_weights.then(Vec::new);
        let mut x = x;
        for layer in &self.layers {
            let out = layer.forward(x, bias.clone(), return_weights);
            x = out.hidden;
            if let (Some(all), Some(w)) = (weights.as_mut(), out.weights) {
                all.push(w);
            }
        }
        (x, weights)
    }

    /// The word embedding table `[vocab_size, hidden_size]`.
    pub fn token_embedding(&self) -> &Embedding {
        &self.words
    }
}
