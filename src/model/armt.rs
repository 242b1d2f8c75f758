//! Associative Recurrent Memory Transformer (Rodkin, Kuratov, Bulatov, Burtsev 2024, arXiv
//! 2407.04841).
//!
//! RMT with its memory moved into the layers. Every segment ends with `M` learned memory
//! tokens, the same each segment; no memory is read at the start. Each layer keeps an
//! associative store ([`AssociativeMemory`]): before the layer, every row adds what the store
//! returns for it; after the layer, the memory tokens' states write into the store by the delta
//! rule, replacing the value held under a key and keeping the others. The stores are the state
//! carried from segment to segment.
//!
//! Layout, one segment of `t` tokens, causal throughout (the memory tokens come last, so they
//! see the whole segment and no token sees them):
//!
//! ```text
//! [ segment (t) | memory (M) ]
//! ```
//!
//! A step after which no state is needed ([`Armt::last_step`]) leaves the memory tokens out.

use burn::module::Param;
use burn::nn::{Embedding, Linear, RotaryEncoding, RotaryEncodingConfig};
use burn::prelude::*;

use super::config::{ModelConfig, Positions};
use super::state::State;
use super::{SegmentModel, StepOutput};
use crate::nn::{AssociativeMemory, Block, Constants, Init, LayerNorm, LayerNormConfig, Noise};
use crate::nn::{causal_mask, linear};
use crate::ops::embed::embed_layout;

/// Associative Recurrent Memory Transformer.
#[derive(Module, Debug)]
pub struct Armt {
    tokens: Embedding,
    /// Learned positions over the layout `[T + M, d]`; `None` with rotary positions.
    positions: Option<Param<Tensor<2>>>,
    /// Rotary positions over the layout's rows, in every layer (`None` with learned ones).
    rope: Option<RotaryEncoding>,
    /// The memory tokens appended to every segment `[M, d]`.
    memory: Param<Tensor<2>>,
    blocks: Vec<Block>,
    /// One associative memory per layer, read before it and written after it.
    stores: Vec<AssociativeMemory>,
    norm: LayerNorm,
    head: Linear,
    #[module(skip)]
    noise: Noise,
    /// The causal masks' biases, built once per layout length.
    #[module(skip)]
    masks: Constants,
    #[module(skip)]
    config: ModelConfig,
}

impl Armt {
    /// Fresh weights for `config` (which must be valid) from `init`.
    pub fn new(config: &ModelConfig, init: &mut Init) -> Self {
        let (m, t, d) = (config.memory_tokens, config.segment_len, config.d_model);
        let key_dim = config.associative_key_dim();
        Armt {
            tokens: init.embedding(config.vocab_size, d),
            positions: (config.positions == Positions::Learned)
                .then(|| init.normal([t + m, d], 0.02)),
            rope: (config.positions == Positions::Rotary)
                .then(|| RotaryEncodingConfig::new(t + m, d / config.n_heads).init(init.device())),
            memory: init.normal([m, d], 1.0),
            blocks: config.blocks(init),
            stores: (0..config.n_layers)
                .map(|_| AssociativeMemory::new(d, key_dim, config.store, init))
                .collect(),
            norm: LayerNormConfig::new(d).init(init.device()),
            head: init.linear(d, config.vocab_size, true),
            noise: init.noise(),
            masks: Constants::default(),
            config: config.clone(),
        }
    }

    /// The token embedding table `[vocab, d_model]`.
    pub fn token_embedding(&self) -> &Embedding {
        &self.tokens
    }

    /// This model for one training step over several segments: each layer's query, key and
    /// value weights concatenated once for all of them, where training reads them packed (as
    /// [`crate::model::Rmt`] does), and on wgpu each store's write projections too.
    #[cfg(feature = "train")]
    pub(crate) fn for_training_step(&self, device: &Device) -> Option<Self> {
        let on_wgpu = crate::ops::wgsl::on_wgpu(device);
        let packed = self.rope.is_none() || on_wgpu;
        (packed && self.config.dropout == 0.0).then(|| Self {
            blocks: self.blocks.iter().map(Block::for_training_step).collect(),
            stores: match on_wgpu {
                true => self
                    .stores
                    .iter()
                    .map(AssociativeMemory::for_training_step)
                    .collect(),
                false => self.stores.clone(),
            },
            ..self.clone()
        })
    }

    /// This model for a streaming session (see [`crate::nn::Attention::for_inference`] and
    /// [`AssociativeMemory::for_inference`]).
    pub(crate) fn for_inference(self) -> Self {
        Self {
            blocks: self.blocks.into_iter().map(Block::for_inference).collect(),
            stores: self
                .stores
                .into_iter()
                .map(AssociativeMemory::for_inference)
                .collect(),
            ..self
        }
    }

    /// One segment: its logits, the attention weights when asked for, and the next state
    /// when `write`.
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`, `1 <= t <= segment_len`
    /// - logits: `[batch, t, vocab]`
    fn run(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
        write: bool,
    ) -> (StepOutput, Option<State>) {
        let (segment, attention, next) = self.rows(tokens, state, return_attention, write);
        let out = StepOutput {
            logits: linear(&self.head, self.norm.forward(segment)),
            attention,
            density: None,
            regulariser: None,
        };
        (out, next)
    }

    /// [`Armt::run`] up to the final norm and the output head: the segment's rows after the
    /// last layer, the attention weights when asked for, and the next state when `write`.
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`, `1 <= t <= segment_len`
    /// - rows: `[batch, t, d_model]`
    fn rows(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
        write: bool,
    ) -> (Tensor<3>, Option<Vec<Tensor<4>>>, Option<State>) {
        let [batch, t] = tokens.dims();
        let (m, t_max) = (self.config.memory_tokens, self.config.segment_len);
        assert!(
            t >= 1 && t <= t_max,
            "segment of {t} tokens, model takes 1..={t_max}"
        );
        let device = tokens.device();
        let stores = match state {
            State::Associative { stores } => stores,
            State::Empty => self.fresh(batch, &device),
            other => panic!("ARMT was given a {} state", other.kind()),
        };
        let mut h = self.embed(tokens, write);
        let n = h.dims()[1];
        let bias = self.masks.get(&[n], &device, || causal_mask(n));
        let mut attention = return_attention.then(Vec::new);
        let mut next = Vec::with_capacity(stores.len());
        for ((block, memory), store) in self.blocks.iter().zip(&self.stores).zip(stores) {
            h = memory.read_added(h, store.clone());
            let out = block.forward_rows(h, bias.clone(), self.rope.as_ref(), return_attention, 0);
            h = out.hidden;
            if let (Some(all), Some(w)) = (attention.as_mut(), out.weights) {
                all.push(w);
            }
            if write {
                next.push(memory.write_rows(h.clone(), t..t + m, store));
            }
        }
        let next = write.then_some(State::Associative { stores: next });
        (h.slice(s![.., 0..t, ..]), attention, next)
    }

    /// Empty stores for `batch` sequences.
    fn fresh(&self, batch: usize, device: &Device) -> Vec<Tensor<3>> {
        self.stores.iter().map(|s| s.empty(batch, device)).collect()
    }

    /// The segment's token embeddings, followed by the memory tokens when `write`, plus the
    /// learned positions (the memory's at `T..T + M` even after a shorter segment).
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`
    /// - output: `[batch, t (+ M when write), d_model]`
    fn embed(&self, tokens: Tensor<2, Int>, write: bool) -> Tensor<3> {
        let [batch, t] = tokens.dims();
        let (m, t_max) = (self.config.memory_tokens, self.config.segment_len);
        let learned = self.positions.as_ref().map(|p| p.val());
        // On GPUs the rows and their positions as one operation, one kernel each way
        // (`crate::ops::embed`, RMT's layout without its read rows); the CPU keeps Burn's.
        let on_gpu = !crate::device::is_cpu(&tokens.device());
        if let (Some(p), true) = (&learned, on_gpu && m > 0) {
            let d = self.config.d_model;
            let memory = self.memory.val().unsqueeze::<3>().expand([batch, m, d]);
            let table = self.tokens.weight.val();
            return embed_layout(table, tokens, memory, p.clone(), false, write);
        }
        let x = self.tokens.forward(tokens);
        let (h, pos) = if write {
            let memory = self.memory.val().unsqueeze::<3>().repeat_dim(0, batch);
            let pos = learned.map(|p| {
                let memory_pos = p.clone().slice(s![t_max..t_max + m, ..]);
                Tensor::cat(vec![p.slice(s![0..t, ..]), memory_pos], 0)
            });
            (Tensor::cat(vec![x, memory], 1), pos)
        } else {
            (x, learned.map(|p| p.slice(s![0..t, ..])))
        };
        match pos {
            Some(pos) => h + pos.unsqueeze::<3>(),
            None => h,
        }
    }
}

impl SegmentModel for Armt {
    /// The generator the model's dropout layers draw from.
    fn noise(&self) -> &Noise {
        &self.noise
    }

    /// The configuration this model was built from.
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Empty associative stores, one per layer.
    fn init_state(&self, batch: usize, device: &Device) -> State {
        State::Associative {
            stores: self.fresh(batch, device),
        }
    }

    /// Read one segment with the stores in `state`; return the logits and the stores after
    /// the memory tokens' writes (attached to the autodiff graph).
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`, `1 <= t <= segment_len`
    /// - logits: `[batch, t, vocab]`
    /// - each store in `state`: `[batch, 6 * key_dim, d_model + 1]`
    fn step(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
    ) -> (StepOutput, State) {
        let (out, next) = self.run(tokens, state, return_attention, true);
        (out, next.expect("a step that writes returns the stores"))
    }

    /// [`SegmentModel::step`] without the memory tokens (no token attends to them, so the
    /// logits are the same).
    ///
    /// # Shapes
    /// as [`SegmentModel::step`]
    fn last_step(&self, tokens: Tensor<2, Int>, state: State) -> StepOutput {
        self.run(tokens, state, false, false).0
    }

    /// [`SegmentModel::step`]'s next stores without the final norm and the output head.
    ///
    /// # Shapes
    /// as [`SegmentModel::step`]
    fn advance(&self, tokens: Tensor<2, Int>, state: State) -> State {
        let (_, _, next) = self.rows(tokens, state, false, true);
        next.expect("a step that writes returns the stores")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelKind;

    fn config(positions: Positions) -> ModelConfig {
        ModelConfig {
            kind: ModelKind::Armt,
            vocab_size: 11,
            d_model: 16,
            n_heads: 2,
            d_ff: 32,
            memory_tokens: 3,
            segment_len: 4,
            positions,
            ..ModelConfig::default()
        }
    }

    fn host(t: Tensor<3>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    /// A segment's logits depend on what the segments before it wrote, with learned and
    /// rotary positions.
    #[test]
    fn the_stores_carry_the_first_segment_to_the_second() {
        let device = Device::flex();
        for positions in [Positions::Learned, Positions::Rotary] {
            let model = Armt::new(&config(positions), &mut Init::new(3, &device));
            let first = Tensor::<2, Int>::from_data([[1, 2, 3, 4]], &device);
            let other = Tensor::<2, Int>::from_data([[5, 6, 7, 8]], &device);
            let second = Tensor::<2, Int>::from_data([[9, 10, 0, 1]], &device);
            let fresh = model.init_state(1, &device);
            let (out, state) = model.step(first, fresh.clone(), false);
            let (_, other_state) = model.step(other, fresh, false);
            assert_eq!(out.logits.dims(), [1, 4, 11]);
            let State::Associative { stores } = &state else {
                panic!("not an associative state")
            };
            assert_eq!(stores.len(), 2);
            assert_eq!(stores[0].dims(), [1, 6 * 4, 17]);
            let a = host(model.last_step(second.clone(), state).logits);
            let b = host(model.last_step(second, other_state).logits);
            let moved = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(
                moved > 1e-4,
                "{positions:?}: the first segment changed nothing"
            );
        }
    }
}
