//! A Llama-family decoder (Llama 2 and 3 without rope scaling, SmolLM, TinyLlama): RMSNorm,
//! rotary positions, grouped-query attention, a SwiGLU feed-forward layer, and an output layer
//! that may share the token embedding. Loads a GGUF file, or a Hugging Face folder
//! (`config.json` and `model.safetensors` with the hub's tensor names).
//!
//! ```text
//! x = words[ids]
//! for each layer: x = x + o(attn(rope(q(n1(x))), rope(k(n1(x))), v(n1(x))))
//!                 x = x + down(silu(gate(n2(x))) * up(n2(x)))
//! logits = head(norm(x))              (head = wordsᵀ when tied)
//! ```
//!
//! Rotary positions rotate the pairs `(i, i + d_head/2)` of each head (Hugging Face's
//! "half-split" convention). A GGUF file stores the query and key rows permuted for llama.cpp's
//! interleaved convention (pairs `(2i, 2i + 1)`); [`Llama::load`] permutes them back once, so one
//! forward pass serves both kinds of file. The rows come back exactly: `tests/llama.rs` checks
//! the logits of SmolLM2's GGUF against transformers and a hub-format file's against its
//! reference.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, Linear, RmsNorm};
use burn::prelude::*;
use burn::tensor::TensorData;
use burn::tensor::activation::silu;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::gguf::{Gguf, Value, is_gguf};
use crate::nn::{causal_mask, linear, masked_softmax, matmul};

/// A Llama architecture, as a Hugging Face `config.json` or a GGUF file's metadata states it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size (rows of the token embedding).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Hidden width of the SwiGLU feed-forward layers.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key and value heads (grouped-query attention: each serves
    /// `num_attention_heads / num_key_value_heads` query heads).
    pub num_key_value_heads: usize,
    /// RMSNorm's epsilon.
    pub rms_norm_eps: f64,
    /// The rotary positions' base.
    pub rope_theta: f64,
    /// The context the model was trained for.
    pub max_position_embeddings: usize,
    /// Whether the output layer is the token embedding, transposed.
    pub tie_word_embeddings: bool,
}

impl LlamaConfig {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Why this architecture cannot be built, if it cannot.
    pub fn check(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} is 0"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads)
            || !self.head_dim().is_multiple_of(2)
        {
            return Err(format!(
                "hidden_size {} over num_attention_heads {} is not an even head width",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads, self.num_key_value_heads
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return Err("rms_norm_eps and rope_theta must be positive".into());
        }
        Ok(())
    }

    /// Read a Hugging Face `config.json` of a Llama model. Anything the decoder does not
    /// implement (rope scaling, biases, another activation, a head width other than
    /// `hidden_size / num_attention_heads`) is an error, not a silently different model.
    pub fn from_json(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Backbone {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
        let model_type = json["model_type"].as_str().unwrap_or("");
        if model_type != "llama" {
            return Err(bad(format!(
                "model_type `{model_type}` is not a Llama (`llama`)"
            )));
        }
        let size = |key: &str| -> Result<usize> {
            json[key]
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("`{key}` is missing or not a whole number")))
        };
        let heads = size("num_attention_heads")?;
        let rope = &json["rope_parameters"];
        let rope_type = rope["rope_type"]
            .as_str()
            .or(json["rope_scaling"]["rope_type"].as_str())
            .unwrap_or("default");
        if rope_type != "default" {
            return Err(bad(format!("rope scaling `{rope_type}` is not supported")));
        }
        let config = LlamaConfig {
            vocab_size: size("vocab_size")?,
            hidden_size: size("hidden_size")?,
            intermediate_size: size("intermediate_size")?,
            num_hidden_layers: size("num_hidden_layers")?,
            num_attention_heads: heads,
            num_key_value_heads: json["num_key_value_heads"]
                .as_u64()
                .map_or(heads, |v| v as usize),
            rms_norm_eps: json["rms_norm_eps"].as_f64().unwrap_or(1e-6),
            rope_theta: rope["rope_theta"]
                .as_f64()
                .or(json["rope_theta"].as_f64())
                .unwrap_or(10_000.0),
            max_position_embeddings: size("max_position_embeddings")?,
            tie_word_embeddings: json["tie_word_embeddings"].as_bool().unwrap_or(false),
        };
        let unsupported = [
            (
                "hidden_act",
                json["hidden_act"].as_str().is_some_and(|a| a != "silu"),
            ),
            (
                "attention_bias",
                json["attention_bias"].as_bool() == Some(true),
            ),
            ("mlp_bias", json["mlp_bias"].as_bool() == Some(true)),
            (
                "head_dim",
                json["head_dim"]
                    .as_u64()
                    .is_some_and(|h| h as usize != config.head_dim()),
            ),
        ];
        if let Some((key, _)) = unsupported.iter().find(|(_, bad)| *bad) {
            return Err(bad(format!("`{key}` = {} is not supported", json[key])));
        }
        config.check().map_err(bad)?;
        Ok(config)
    }

    /// The architecture of the model at `path`: a GGUF file's metadata, or a Hugging Face
    /// folder's `config.json`.
    pub fn open(path: &Path) -> Result<Self> {
        if path.is_dir() {
            Self::from_json(&path.join("config.json"))
        } else if is_gguf(path)? {
            Self::from_gguf(&Gguf::read(path)?, path)
        } else {
            Err(not_a_model(path))
        }
    }

    /// The architecture a GGUF file's metadata states (`general.architecture` = `llama`).
    pub fn from_gguf(gguf: &Gguf, path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Backbone {
            path: path.to_path_buf(),
            reason,
        };
        let arch = gguf.get("general.architecture")?.as_str().unwrap_or("");
        if arch != "llama" {
            return Err(bad(format!(
                "general.architecture `{arch}` is not supported (only `llama`)"
            )));
        }
        let size = |key: &str| -> Result<usize> {
            gguf.get(&format!("llama.{key}"))?
                .as_u64()
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("`llama.{key}` is not a whole number")))
        };
        let float = |key: &str, default: f64| {
            gguf.metadata
                .get(&format!("llama.{key}"))
                .and_then(Value::as_f64)
                .unwrap_or(default)
        };
        let embedding = gguf
            .info("token_embd.weight")
            .ok_or_else(|| bad("no tensor `token_embd.weight`".into()))?;
        let heads = size("attention.head_count")?;
        let config = LlamaConfig {
            vocab_size: embedding.shape()[0],
            hidden_size: size("embedding_length")?,
            intermediate_size: size("feed_forward_length")?,
            num_hidden_layers: size("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: size("attention.head_count_kv").unwrap_or(heads),
            rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
            rope_theta: float("rope.freq_base", 10_000.0),
            max_position_embeddings: size("context_length")?,
            tie_word_embeddings: gguf.info("output.weight").is_none(),
        };
        if let Ok(dims) = size("rope.dimension_count")
            && dims != config.head_dim()
        {
            return Err(bad(format!(
                "rotary positions over {dims} of {} dimensions per head are not supported",
                config.head_dim()
            )));
        }
        if gguf.metadata.contains_key("llama.rope.scaling.type") {
            return Err(bad("rope scaling is not supported".into()));
        }
        config.check().map_err(bad)?;
        Ok(config)
    }
}

/// One decoder layer.
#[derive(Module, Debug)]
pub struct LlamaLayer {
    attn_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: RmsNorm,
    gate: Linear,
    up: Linear,
    down: Linear,
    n_heads: usize,
    n_kv_heads: usize,
}

/// A Llama-family decoder.
#[derive(Module, Debug)]
pub struct Llama {
    embed: Embedding,
    layers: Vec<LlamaLayer>,
    norm: RmsNorm,
    /// The output layer; `None` when it is the token embedding (tied).
    head: Option<Linear>,
    #[module(skip)]
    config: LlamaConfig,
}

/// Rotary positions for a list of positions: `cos` and `sin` `[seq, d_head]`, each angle
/// repeated for the two halves of a head.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor<2>,
    sin: Tensor<2>,
}

impl Rope {
    /// The rotations of `positions` for heads of `d_head` and base `theta`.
    pub fn new(positions: &[usize], d_head: usize, theta: f64, device: &Device) -> Self {
        let half = d_head / 2;
        let mut cos = Vec::with_capacity(positions.len() * d_head);
        let mut sin = Vec::with_capacity(positions.len() * d_head);
        for &p in positions {
            let angles: Vec<f64> = (0..half)
                .map(|i| p as f64 * theta.powf(-2.0 * i as f64 / d_head as f64))
                .collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos() as f32));
                sin.extend(angles.iter().map(|a| a.sin() as f32));
            }
        }
        let shape = [positions.len(), d_head];
        Rope {
            cos: Tensor::from_data(TensorData::new(cos, shape), device),
            sin: Tensor::from_data(TensorData::new(sin, shape), device),
        }
    }

    /// Rotate each head's pairs `(i, i + d_head/2)`.
    ///
    /// # Shapes
    /// - x: `[batch, heads, seq, d_head]`
    /// - output: as `x`
    pub fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let half = x.dims()[3] / 2;
        let first = x.clone().slice(s![.., .., .., 0..half]);
        let second = x.clone().slice(s![.., .., .., half..]);
        let rotated = Tensor::cat(vec![second.neg(), first], 3);
        x * self.cos.clone().unsqueeze() + rotated * self.sin.clone().unsqueeze()
    }
}

impl LlamaLayer {
    /// The layer over `x` under the additive attention `bias`, with the rotations `rope` of
    /// its rows' positions.
    ///
    /// # Shapes
    /// - x: `[batch, seq, d]`
    /// - bias: `[seq, seq]`
    /// - output: `[batch, seq, d]`, weights `[batch, heads, seq, seq]`
    pub fn forward(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        bias: Tensor<2>,
        return_weights: bool,
    ) -> (Tensor<3>, Option<Tensor<4>>) {
        self.forward_with(x, rope, bias, return_weights, None)
    }

    /// [`LlamaLayer::forward`] with a second attention branch: `side` gets the normed `x` the
    /// attention reads and its output is added to the attention's output before the residual
    /// (the infinity-former's long-term memory read).
    ///
    /// # Shapes
    /// as [`LlamaLayer::forward`]; `side` maps `[batch, seq, d]` to the same shape
    pub fn forward_with(
        &self,
        x: Tensor<3>,
        rope: &Rope,
        bias: Tensor<2>,
        return_weights: bool,
        side: Option<&mut dyn FnMut(Tensor<3>) -> Tensor<3>>,
    ) -> (Tensor<3>, Option<Tensor<4>>) {
        let [batch, seq, d] = x.dims();
        let (heads, kv_heads) = (self.n_heads, self.n_kv_heads);
        let d_head = d / heads;
        let split = |y: Tensor<3>, n: usize| y.reshape([batch, seq, n, d_head]).swap_dims(1, 2);
        // Each key and value head serves `heads / kv_heads` query heads, in order.
        let repeat = |y: Tensor<4>| {
            y.unsqueeze_dim::<5>(2)
                .expand([batch, kv_heads, heads / kv_heads, seq, d_head])
                .reshape([batch, heads, seq, d_head])
        };
        let h = self.attn_norm.forward(x.clone());
        let extra = side.map(|f| f(h.clone()));
        let q = rope.apply(split(linear(&self.q, h.clone()), heads));
        let k = repeat(rope.apply(split(linear(&self.k, h.clone()), kv_heads)));
        let v = repeat(split(linear(&self.v, h), kv_heads));
        let scale = 1.0 / (d_head as f64).sqrt();
        let weights = masked_softmax(matmul(q, k.swap_dims(2, 3)), bias, scale);
        let returned = return_weights.then(|| weights.clone());
        let mixed = matmul(weights, v).swap_dims(1, 2).reshape([batch, seq, d]);
        let attended = linear(&self.o, mixed);
        let x = match extra {
            Some(extra) => x + attended + extra,
            None => x + attended,
        };
        let h = self.ffn_norm.forward(x.clone());
        let ff = silu(linear(&self.gate, h.clone())) * linear(&self.up, h);
        (x + linear(&self.down, ff), returned)
    }
}

impl Llama {
    /// The architecture.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Load a Llama from a GGUF file or a Hugging Face folder (`config.json`,
    /// `model.safetensors`) onto `device`. Missing, extra or wrongly shaped tensors, and tensor
    /// types remem cannot read, are errors naming them.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        let (config, mut weights) = if path.is_dir() {
            let config = LlamaConfig::from_json(&path.join("config.json"))?;
            (
                config,
                Weights::safetensors(&path.join("model.safetensors"))?,
            )
        } else if is_gguf(path)? {
            let gguf = Gguf::read(path)?;
            let config = LlamaConfig::from_gguf(&gguf, path)?;
            let weights = Weights::gguf(&gguf, &config, path)?;
            (config, weights)
        } else {
            return Err(not_a_model(path));
        };
        let llama = Self::from_weights(config, &mut weights, device)?;
        weights.finish()?;
        Ok(llama)
    }

    fn from_weights(config: LlamaConfig, w: &mut Weights, device: &Device) -> Result<Self> {
        let (d, ff, vocab) = (
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
        );
        let kv = config.num_key_value_heads * config.head_dim();
        let eps = config.rms_norm_eps;
        let norm = |w: &mut Weights, name: &str| -> Result<RmsNorm> {
            Ok(RmsNorm {
                gamma: Param::from_tensor(Tensor::from_data(w.take(name, &[d])?, device)),
                epsilon: eps,
            })
        };
        // Hugging Face stores linear weights `[out, in]`; Burn's `Linear` holds `[in, out]`.
        let linear = |w: &mut Weights, name: &str, d_in: usize, d_out: usize| -> Result<Linear> {
            let data = w.take(name, &[d_out, d_in])?;
            Ok(Linear {
                weight: Param::from_tensor(Tensor::from_data(transpose(data), device)),
                bias: None,
            })
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(LlamaLayer {
                attn_norm: norm(w, &format!("{p}.input_layernorm.weight"))?,
                q: linear(w, &format!("{p}.self_attn.q_proj.weight"), d, d)?,
                k: linear(w, &format!("{p}.self_attn.k_proj.weight"), d, kv)?,
                v: linear(w, &format!("{p}.self_attn.v_proj.weight"), d, kv)?,
                o: linear(w, &format!("{p}.self_attn.o_proj.weight"), d, d)?,
                ffn_norm: norm(w, &format!("{p}.post_attention_layernorm.weight"))?,
                gate: linear(w, &format!("{p}.mlp.gate_proj.weight"), d, ff)?,
                up: linear(w, &format!("{p}.mlp.up_proj.weight"), d, ff)?,
                down: linear(w, &format!("{p}.mlp.down_proj.weight"), ff, d)?,
                n_heads: config.num_attention_heads,
                n_kv_heads: config.num_key_value_heads,
            });
        }
        let embed = Embedding {
            weight: Param::from_tensor(Tensor::from_data(
                w.take("model.embed_tokens.weight", &[vocab, d])?,
                device,
            )),
        };
        let head = match config.tie_word_embeddings {
            true => None,
            false => Some(linear(w, "lm_head.weight", d, vocab)?),
        };
        Ok(Llama {
            embed,
            layers,
            norm: norm(w, "model.norm.weight")?,
            head,
            config,
        })
    }

    /// The token embeddings of `ids`.
    ///
    /// # Shapes
    /// - ids: `[batch, seq]`
    /// - output: `[batch, seq, hidden_size]`
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        self.embed.forward(ids)
    }

    /// The token embedding table `[vocab, hidden_size]`.
    pub fn token_embedding(&self) -> &Embedding {
        &self.embed
    }

    /// The norm before the output layer.
    pub fn final_norm(&self) -> &RmsNorm {
        &self.norm
    }

    /// Every layer over the embedded rows `x` at `positions` (one per row, for the rotations)
    /// under the additive attention `bias`, then the final norm; with each layer's attention
    /// weights when asked for.
    ///
    /// # Shapes
    /// - x: `[batch, seq, hidden_size]`
    /// - bias: `[seq, seq]`
    /// - output: `[batch, seq, hidden_size]`, weights each `[batch, heads, seq, seq]`
    pub fn hidden(
        &self,
        x: Tensor<3>,
        positions: &[usize],
        bias: Tensor<2>,
        return_weights: bool,
    ) -> (Tensor<3>, Option<Vec<Tensor<4>>>) {
        self.hidden_with(x, positions, bias, return_weights, None)
    }

    /// [`Llama::hidden`] with a second attention branch in every layer: `side(l, normed)`
    /// gets layer `l`'s normed input and returns what to add to its attention output (see
    /// [`LlamaLayer::forward_with`]).
    ///
    /// # Shapes
    /// as [`Llama::hidden`]; `side` maps `[batch, seq, hidden_size]` to the same shape
    pub fn hidden_with(
        &self,
        x: Tensor<3>,
        positions: &[usize],
        bias: Tensor<2>,
        return_weights: bool,
        mut side: Option<&mut dyn FnMut(usize, Tensor<3>) -> Tensor<3>>,
    ) -> (Tensor<3>, Option<Vec<Tensor<4>>>) {
        let c = &self.config;
        let rope = Rope::new(positions, c.head_dim(), c.rope_theta, &x.device());
        let mut weights = return_weights.then(Vec::new);
        let mut x = x;
        for (l, layer) in self.layers.iter().enumerate() {
            let (y, w) = match side.as_mut() {
                Some(f) => {
                    let mut at_layer = |normed: Tensor<3>| f(l, normed);
                    layer.forward_with(x, &rope, bias.clone(), return_weights, Some(&mut at_layer))
                }
                None => layer.forward(x, &rope, bias.clone(), return_weights),
            };
            x = y;
            if let (Some(all), Some(w)) = (weights.as_mut(), w) {
                all.push(w);
            }
        }
        (self.norm.forward(x), weights)
    }

    /// Next-token logits from final hidden states.
    ///
    /// # Shapes
    /// - hidden: `[batch, seq, hidden_size]`
    /// - output: `[batch, seq, vocab_size]`
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        match &self.head {
            Some(head) => linear(head, hidden),
            None => {
                let [batch, seq, d] = hidden.dims();
                let table = self.embed.weight.val().transpose();
                let vocab = self.config.vocab_size;
                matmul(hidden.reshape([batch * seq, d]), table).reshape([batch, seq, vocab])
            }
        }
    }

    /// Next-token logits of `ids` read causally from position 0.
    ///
    /// # Shapes
    /// - ids: `[batch, seq]`
    /// - output: `[batch, seq, vocab_size]`
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let seq = ids.dims()[1];
        let device = ids.device();
        let positions: Vec<usize> = (0..seq).collect();
        let bias = causal_mask(seq).bias(&device);
        let (hidden, _) = self.hidden(self.embed(ids), &positions, bias, false);
        self.logits(hidden)
    }

    /// Greedy decoding: the `n` most likely next tokens after `prompt`, one at a time.
    pub fn greedy(&self, prompt: &[u32], n: usize, device: &Device) -> Vec<u32> {
        let mut ids: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
        for _ in 0..n {
            let len = ids.len();
            let input = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [1, len]), device);
            let last = self.forward(input).slice(s![.., len - 1.., ..]);
            let next = last
                .argmax(2)
                .into_data()
                .iter::<i64>()
                .next()
                .expect("one");
            ids.push(next as i32);
        }
        ids[prompt.len()..].iter().map(|&t| t as u32).collect()
    }
}

/// A digest of the weights of the model at `path` (FNV-1a of the GGUF file's bytes, or of a
/// Hugging Face folder's `model.safetensors`), in hex.
pub fn file_digest(path: &Path) -> Result<String> {
    let file = match path.is_dir() {
        true => path.join("model.safetensors"),
        false => path.to_path_buf(),
    };
    let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
    Ok(format!("{:016x}", crate::io::fnv1a(&bytes)))
}

fn not_a_model(path: &Path) -> Error {
    Error::Backbone {
        path: path.to_path_buf(),
        reason: "neither a GGUF file nor a folder with config.json and model.safetensors".into(),
    }
}

/// `[rows, cols]` row-major data as `[cols, rows]`.
fn transpose(data: TensorData) -> TensorData {
    let [rows, cols] = [data.shape()[0], data.shape()[1]];
    let values = data.try_into_vec::<f32>().expect("f32 weights");
    let mut out = vec![0.0f32; values.len()];
    for (r, row) in values.chunks_exact(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[c * rows + r] = v;
        }
    }
    TensorData::new(out, [cols, rows])
}

/// A model file's tensors as f32, by Hugging Face name, handed out once each.
struct Weights {
    tensors: BTreeMap<String, TensorData>,
    path: PathBuf,
}

impl Weights {
    fn bad(&self, reason: String) -> Error {
        Error::Backbone {
            path: self.path.clone(),
            reason: crate::error::summarise(&reason, 400),
        }
    }

    /// Every tensor of a safetensors file (F32, F16 or BF16).
    fn safetensors(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |reason: String| Error::Backbone {
            path: path.to_path_buf(),
            reason,
        };
        let file = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in file.tensors() {
            let raw = view.data();
            let values: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => crate::gguf::dequantise(crate::gguf::Kind::F32, raw),
                safetensors::Dtype::F16 => crate::gguf::dequantise(crate::gguf::Kind::F16, raw),
                safetensors::Dtype::BF16 => crate::gguf::dequantise(crate::gguf::Kind::Bf16, raw),
                other => {
                    return Err(bad(format!(
                        "tensor `{name}` is {other:?}, which remem cannot read (F32, F16, BF16)"
                    )));
                }
            };
            tensors.insert(name, TensorData::new(values, view.shape().to_vec()));
        }
        Ok(Weights {
            tensors,
            path: path.to_path_buf(),
        })
    }

    /// Every tensor of a Llama GGUF file, dequantised, under its Hugging Face name, the query
    /// and key rows permuted back to the half-split rotary convention.
    fn gguf(gguf: &Gguf, config: &LlamaConfig, path: &Path) -> Result<Self> {
        let mut tensors = BTreeMap::new();
        for info in &gguf.tensors {
            let name = hf_name(&info.name).ok_or_else(|| Error::Backbone {
                path: path.to_path_buf(),
                reason: format!("tensor `{}` is not part of a Llama", info.name),
            })?;
            let mut data = gguf.tensor(&info.name)?;
            if name.ends_with("q_proj.weight") {
                data = interleaved_to_half(data, config.num_attention_heads);
            } else if name.ends_with("k_proj.weight") {
                data = interleaved_to_half(data, config.num_key_value_heads);
            }
            tensors.insert(name, data);
        }
        Ok(Weights {
            tensors,
            path: path.to_path_buf(),
        })
    }

    /// Tensor `name`, which must have `shape`.
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<TensorData> {
        let data = self
            .tensors
            .remove(name)
            .ok_or_else(|| self.bad(format!("missing tensor `{name}`")))?;
        if data.shape().as_slice() != shape {
            return Err(self.bad(format!(
                "tensor `{name}` is {:?}, the config needs {shape:?}",
                data.shape().as_slice()
            )));
        }
        Ok(data)
    }

    /// Fail on tensors no module took (buffers of rotary frequencies excepted).
    fn finish(mut self) -> Result<()> {
        self.tensors
            .retain(|name, _| !name.ends_with("rotary_emb.inv_freq"));
        if self.tensors.is_empty() {
            return Ok(());
        }
        let names = self.tensors.keys().cloned().collect();
        Err(self.bad(format!(
            "tensors a Llama of this config does not have: {}",
            crate::io::name_list(names)
        )))
    }
}

/// A GGUF tensor name's Hugging Face name.
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    layer.parse::<usize>().ok()?;
    let part = match rest {
        "attn_norm.weight" => "input_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{part}"))
}

/// Undo llama.cpp's permutation of a query or key matrix `[heads · d_head, d_in]`: within each
/// head, row `2i + j` of the file is row `j · d_head/2 + i` of the half-split layout.
fn interleaved_to_half(data: TensorData, heads: usize) -> TensorData {
    let [rows, cols] = [data.shape()[0], data.shape()[1]];
    let d_head = rows / heads;
    let half = d_head / 2;
    let values = data.try_into_vec::<f32>().expect("f32 weights");
    let mut out = vec![0.0f32; values.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let from = h * d_head + 2 * i + j;
                let to = h * d_head + j * half + i;
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    TensorData::new(out, [rows, cols])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interleaved_rows_go_back_to_halves() {
        // One head of width 4 over a 1-wide input: file rows (a0 a1 b0 b1) hold the pairs
        // (0, 2) and (1, 3) of the half-split layout side by side.
        let file = TensorData::new(vec![0.0f32, 2.0, 1.0, 3.0], [4, 1]);
        let half = interleaved_to_half(file, 1);
        assert_eq!(
            half.try_into_vec::<f32>().unwrap(),
            vec![0.0, 1.0, 2.0, 3.0]
        );
    }

    #[test]
    fn gguf_names_map_to_hub_names() {
        assert_eq!(
            hf_name("blk.12.ffn_gate.weight").as_deref(),
            Some("model.layers.12.mlp.gate_proj.weight")
        );
        assert_eq!(hf_name("blk.x.ffn_gate.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }
}
