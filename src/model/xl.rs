//! Transformer-XL (Dai et al., ACL 2019), MemTr-XL (Transformer-XL with RMT's memory tokens), and
//! the plain causal Transformer, which is Transformer-XL with no cache reading its whole input as
//! one segment.
//!
//! Each layer keeps the states that entered it for the last `mem_len` segment tokens, detached,
//! and attends over `[cache | segment]`. Positions are rotary (RoPE) rather than Transformer-XL's
//! own relative encoding: rotary scores depend only on the distance between query and key, which
//! is what the relative encoding is for, so the cache needs no re-indexing, and Burn ships it.
//!
//! MemTr-XL's segment layout is RMT's `[read memory | segment | write memory]` with RMT's mask;
//! segment and write rows also see the whole cache, read rows do not.

use burn::module::Param;
use burn::nn::{
    Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig, RotaryEncoding,
    RotaryEncodingConfig,
};
use burn::prelude::*;

use super::StepOutput;
use super::config::{ModelConfig, ModelKind};
use super::state::State;
use crate::nn::{Block, Mask};

/// Longest `cache + layout` a step may attend over.
pub const MAX_POSITIONS: usize = 8192;

/// The attention mask of one step: `memory` memory tokens, a segment of `seg_len` tokens and
/// `cached` cached states. Rows are the layout `[read | segment | write]` (no read or write rows
/// without memory); columns are `[cache | layout]`.
pub fn attention_mask(memory: usize, seg_len: usize, cached: usize) -> Mask {
    let (m, t, c) = (memory, seg_len, cached);
    let rows = 2 * m + t;
    let mut mask = Mask::blocked(rows, c + rows);
    for row in 0..rows {
        for col in 0..c + rows {
            let allowed = if row < m {
                (c..c + m).contains(&col) // read memory: among itself
            } else if row < m + t {
                col < c || col - c <= row // segment: cache, read memory, then causal
            } else {
                true // write memory: everything
            };
            if allowed {
                mask.allow(row, col);
            }
        }
    }
    mask
}

/// Transformer-XL, MemTr-XL or the plain Transformer (see [`ModelKind`]).
#[derive(Module, Debug)]
pub struct Xl {
    tokens: Embedding,
    /// MemTr-XL's initial memory `[M, d]`.
    memory: Option<Param<Tensor<2>>>,
    blocks: Vec<Block>,
    rope: RotaryEncoding,
    norm: LayerNorm,
    head: Linear,
    #[module(skip)]
    config: ModelConfig,
}

impl Xl {
    /// Fresh weights for `config` (which must be valid) on `device`.
    pub fn new(config: &ModelConfig, device: &Device) -> Self {
        let d = config.d_model;
        Xl {
            tokens: EmbeddingConfig::new(config.vocab_size, d).init(device),
            memory: config.initial_memory(device),
            blocks: config.blocks(device),
            rope: RotaryEncodingConfig::new(MAX_POSITIONS, d / config.n_heads).init(device),
            norm: LayerNormConfig::new(d).init(device),
            head: LinearConfig::new(d, config.vocab_size).init(device),
            config: config.clone(),
        }
    }

    /// The configuration this model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// An empty cache, and MemTr-XL's learned memory repeated over the batch.
    pub fn init_state(&self, batch: usize, _device: &Device) -> State {
        if self.config.kind == ModelKind::Transformer {
            return State::Empty;
        }
        State::Xl {
            cache: Vec::new(),
            memory: self
                .memory
                .as_ref()
                .map(|m| m.val().unsqueeze::<3>().repeat_dim(0, batch)),
            attached: 0,
        }
    }

    /// Read one segment over the cache (and memory) in `state`.
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`
    /// - logits: `[batch, t, vocab]`
    pub fn step(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
    ) -> (StepOutput, State) {
        let [_, t] = tokens.dims();
        let device = tokens.device();
        let (m, mem_len) = (self.config.memory_len(), self.config.cache_len());
        let (cache, memory, attached) = match state {
            State::Xl {
                cache,
                memory,
                attached,
            } => (cache, memory, attached),
            State::Empty => (Vec::new(), None, 0),
            State::Memory { .. } => panic!("Transformer-XL was given an RMT state"),
        };
        let cached = cache.first().map_or(0, |c| c.dims()[1]);
        assert!(
            cached + 2 * m + t <= MAX_POSITIONS,
            "a step attends over at most {MAX_POSITIONS} positions"
        );
        let x = self.tokens.forward(tokens);
        let mut h = match &memory {
            Some(mem) => Tensor::cat(vec![mem.clone(), x, mem.clone()], 1),
            None => x,
        };
        let bias = attention_mask(m, t, cached).bias(&device);

        let mut next_cache = Vec::with_capacity(self.blocks.len());
        let mut attention = return_attention.then(Vec::new);
        for (l, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.get(l).cloned();
            if mem_len > 0 {
                let seg = h.clone().slice(s![.., m..m + t, ..]).detach();
                let all = match layer_cache.clone() {
                    Some(c) => Tensor::cat(vec![c, seg], 1),
                    None => seg,
                };
                let len = all.dims()[1];
                next_cache.push(all.slice(s![.., len.saturating_sub(mem_len)..len, ..]));
            }
            let out = block.forward_cached(
                h,
                layer_cache,
                bias.clone(),
                Some(&self.rope),
                return_attention,
            );
            h = out.hidden;
            if let (Some(all), Some(w)) = (attention.as_mut(), out.weights) {
                all.push(w);
            }
        }
        let h = self.norm.forward(h);
        let logits = self.head.forward(h.clone().slice(s![.., m..m + t, ..]));

        let next = if self.config.kind == ModelKind::Transformer {
            State::Empty
        } else {
            let (memory, attached) = match memory {
                None => (None, 0),
                Some(_) => {
                    let new = h.slice(s![.., m + t..2 * m + t, ..]);
                    let (new, attached) =
                        super::state::pass_on(new, attached, self.config.bptt_depth);
                    (Some(new), attached)
                }
            };
            State::Xl {
                cache: next_cache,
                memory,
                attached,
            }
        };
        (StepOutput { logits, attention }, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::optim::GradientsParams;

    #[test]
    fn masks_with_a_cache() {
        // Transformer-XL: 2 cached states, 3 tokens.
        assert_eq!(
            attention_mask(0, 3, 2).to_text(),
            ["111..", "1111.", "11111"]
        );
        // MemTr-XL: 1 memory token, 2 tokens, 2 cached states: r | s s | w.
        assert_eq!(
            attention_mask(1, 2, 2).to_text(),
            ["..1...", "1111..", "11111.", "111111"]
        );
    }

    fn config(kind: ModelKind, mem_len: usize) -> ModelConfig {
        ModelConfig {
            kind,
            vocab_size: 11,
            d_model: 16,
            n_layers: 2,
            n_heads: 2,
            d_ff: 32,
            memory_tokens: 0,
            segment_len: 4,
            mem_len: Some(mem_len),
            ..ModelConfig::default()
        }
    }

    #[test]
    fn the_cached_second_segment_equals_a_full_causal_transformer_over_both() {
        // With a cache as long as a segment, segment 2 sees exactly what a causal Transformer
        // over both segments sees at those positions, and rotary positions make the offsets agree.
        let device = Device::flex();
        device.seed(3);
        let xl = Xl::new(&config(ModelKind::Xl, 4), &device);
        let full = Xl::new(&config(ModelKind::Transformer, 0), &device)
            .load_record(xl.clone().into_record());
        let a = Tensor::<2, Int>::from_data([[1, 2, 3, 4], [5, 6, 7, 8]], &device);
        let b = Tensor::<2, Int>::from_data([[9, 10, 1, 2], [3, 4, 5, 6]], &device);

        let state = xl.init_state(2, &device);
        let (_, state) = xl.step(a.clone(), state, false);
        let (second, _) = xl.step(b.clone(), state, false);
        let (whole, _) = full.step(Tensor::cat(vec![a, b], 1), State::Empty, false);
        let expected = whole.logits.slice(s![.., 4..8, ..]);
        let diff = (second.logits - expected).abs().max().into_scalar::<f32>();
        assert!(
            diff < 1e-4,
            "cached segment differs from full attention by {diff}"
        );
    }

    #[test]
    fn no_gradient_flows_into_the_cache() {
        // The loss on segment 2 must not reach the embeddings of tokens only in segment 1.
        let device = Device::flex().autodiff();
        device.seed(4);
        let xl = Xl::new(&config(ModelKind::Xl, 4), &device);
        let state = xl.init_state(1, &device);
        let first = Tensor::<2, Int>::from_data([[7, 8, 9, 10]], &device);
        let (_, state) = xl.step(first, state, false);
        let second = Tensor::<2, Int>::from_data([[1, 2, 3, 4]], &device);
        let (out, _) = xl.step(second, state, false);
        let grads = GradientsParams::from_grads(out.logits.powi_scalar(2).mean().backward(), &xl);
        let g = grads.get::<2>(xl.tokens.weight.id).unwrap();
        let first_only = g
            .clone()
            .slice(s![7..11, ..])
            .abs()
            .sum()
            .into_scalar::<f32>();
        let second_only = g.slice(s![1..5, ..]).abs().sum().into_scalar::<f32>();
        assert_eq!(first_only, 0.0, "gradient crossed the cache");
        assert!(second_only > 0.0);
    }

    #[test]
    fn memxl_carries_memory_and_a_bounded_cache() {
        let device = Device::flex();
        let mut cfg = config(ModelKind::Memxl, 3);
        cfg.memory_tokens = 2;
        let model = Xl::new(&cfg, &device);
        let mut state = model.init_state(2, &device);
        for _ in 0..3 {
            let tokens = Tensor::<2, Int>::from_data([[1, 2, 3, 4], [5, 6, 7, 8]], &device);
            let (out, next) = model.step(tokens, state, true);
            assert_eq!(out.logits.dims(), [2, 4, 11]);
            state = next;
        }
        let State::Xl { cache, memory, .. } = state else {
            panic!("MemTr-XL keeps an XL state")
        };
        assert_eq!(cache.len(), 2);
        assert!(
            cache.iter().all(|c| c.dims() == [2, 3, 16]),
            "cache capped at mem_len"
        );
        assert_eq!(memory.unwrap().dims(), [2, 2, 16]);
    }
}
