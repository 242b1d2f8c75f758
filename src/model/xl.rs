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
//!
//! The infinity-former is Transformer-XL plus a long-term memory per layer: its layer lives in
//! [`super::infinity`], and this file's step calls it for each layer that has one.

use burn::module::Param;
use burn::nn::{Embedding, Linear, RotaryEncoding, RotaryEncodingConfig};
use burn::prelude::*;

use super::config::{ModelConfig, ModelKind};
use super::state::State;
use super::{SegmentModel, StepOutput};
use crate::nn::{
    Block, Constants, Init, LayerNorm, LayerNormConfig, LongTermMemory, Mask, Noise, linear,
};

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

/// What one layer of a step reads: the hidden states, the layer's cache, the mask bias and the
/// rotary encoding.
pub(super) struct Input<'a> {
    /// `[batch, layout, d_model]`.
    pub h: Tensor<3>,
    /// `[batch, cached, d_model]`.
    pub cache: Option<Tensor<3>>,
    /// `[layout, cached + layout]`.
    pub bias: Tensor<2>,
    pub rope: &'a RotaryEncoding,
    pub return_attention: bool,
}

/// Transformer-XL, MemTr-XL or the plain Transformer (see [`ModelKind`]).
#[derive(Module, Debug)]
pub struct Xl {
    tokens: Embedding,
    /// MemTr-XL's initial memory `[M, d]`.
    memory: Option<Param<Tensor<2>>>,
    blocks: Vec<Block>,
    /// The infinity-former's long-term memory, one per layer (empty for the other kinds).
    ltm: Vec<LongTermMemory>,
    rope: RotaryEncoding,
    norm: LayerNorm,
    head: Linear,
    #[module(skip)]
    noise: Noise,
    /// The attention masks' biases, built once per segment and cache length.
    #[module(skip)]
    masks: Constants,
    #[module(skip)]
    config: ModelConfig,
}

impl Xl {
    /// Fresh weights for `config` (which must be valid) from `init`.
    pub fn new(config: &ModelConfig, init: &mut Init) -> Self {
        let d = config.d_model;
        let device = init.device().clone();
        Xl {
            tokens: init.embedding(config.vocab_size, d),
            memory: config.initial_memory(init),
            blocks: config.blocks(init),
            ltm: match config.kind {
                ModelKind::Infinity => (0..config.n_layers)
                    .map(|_| LongTermMemory::new(&config.ltm, d, config.n_heads, init))
                    .collect(),
                _ => Vec::new(),
            },
            rope: RotaryEncodingConfig::new(MAX_POSITIONS, d / config.n_heads).init(&device),
            norm: LayerNormConfig::new(d).init(&device),
            head: init.linear(d, config.vocab_size, true),
            noise: init.noise(),
            masks: Constants::default(),
            config: config.clone(),
        }
    }
}

impl Xl {
    /// The token embedding table `[vocab, d_model]`.
    pub fn token_embedding(&self) -> &Embedding {
        &self.tokens
    }

    /// This model for one training step over several segments: each layer's query, key and
    /// value weights concatenated once for all of them (see
    /// [`crate::nn::Attention::for_training_step`]). Only on wgpu without dropout, where the
    /// attention over `[cache | segment]` reads one packed product; elsewhere `None` (three
    /// products).
    #[cfg(feature = "train")]
    pub(crate) fn for_training_step(&self, device: &Device) -> Option<Self> {
        (crate::ops::wgsl::on_wgpu(device) && self.config.dropout == 0.0).then(|| Self {
            blocks: self.blocks.iter().map(Block::for_training_step).collect(),
            ltm: self
                .ltm
                .iter()
                .map(LongTermMemory::for_training_step)
                .collect(),
            ..self.clone()
        })
    }

    /// This model for a streaming session (see [`crate::nn::Attention::for_inference`]).
    pub(crate) fn for_inference(self) -> Self {
        Self {
            blocks: self.blocks.into_iter().map(Block::for_inference).collect(),
            ltm: self
                .ltm
                .into_iter()
                .map(LongTermMemory::for_inference)
                .collect(),
            ..self
        }
    }
}

impl SegmentModel for Xl {
    /// The generator the model's dropout layers draw from.
    fn noise(&self) -> &Noise {
        &self.noise
    }

    /// The configuration this model was built from.
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// An empty cache, MemTr-XL's learned memory repeated over the batch, and the
    /// infinity-former's empty (zero) long-term memories.
    fn init_state(&self, batch: usize, device: &Device) -> State {
        if self.config.kind == ModelKind::Transformer {
            return State::Empty;
        }
        State::Xl {
            cache: Vec::new(),
            memory: self
                .memory
                .as_ref()
                .map(|m| m.val().unsqueeze::<3>().repeat_dim(0, batch)),
            ltm: super::infinity::empty(&self.ltm, batch, device),
        }
    }

    /// Read one segment over the cache (and memory, and long-term memory) in `state`.
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`
    /// - logits: `[batch, t, vocab]`
    fn step(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
    ) -> (StepOutput, State) {
        let (out, next) = self.rows(tokens, state, return_attention);
        let step = StepOutput {
            logits: self.head(out.rows),
            attention: out.attention,
            density: out.density,
            regulariser: out.regulariser,
        };
        (step, next)
    }
}

impl Xl {
    /// [`SegmentModel::step`] without the output head: the segment's final (normalised) rows,
    /// the next state and the loss's regulariser term if any. Training on a GPU runs the head
    /// once over all its segments' rows ([`Xl::head`]).
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`
    /// - rows: `[batch, t, d_model]`
    #[cfg(feature = "train")]
    pub(crate) fn step_rows(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
    ) -> (Tensor<3>, State, Option<Tensor<1>>) {
        let (out, next) = self.rows(tokens, state, false);
        (out.rows, next, out.regulariser)
    }

    /// The output head: logits for final rows.
    ///
    /// # Shapes
    /// - rows: `[batch, t, d_model]`
    /// - output: `[batch, t, vocab]`
    pub(crate) fn head(&self, rows: Tensor<3>) -> Tensor<3> {
        linear(&self.head, rows)
    }

    /// The final (normalised) rows of every segment of `tokens` read from an empty state, most
    /// segments at once, where the state carries no gradient: Transformer-XL's cache is
    /// detached, so what each layer's cache holds for segment `s` is that layer's input for the
    /// segments before `s`, which a layer-by-layer pass over all segments has at hand. The
    /// segments whose cache is full run each layer together as one batch; the first ones,
    /// whose caches are still filling (only the first when the cache is no longer than a
    /// segment), run it one by one. The same numbers as [`Xl::step_rows`] segment after
    /// segment, within rounding; on GPUs a few launches of each kernel per layer instead of one
    /// per segment, and fewer weight gradients to add up.
    ///
    /// The infinity-former's long-term memory is detached between segments too, and what each
    /// layer fits into it for segment `s` is what left that layer's cache before `s`: its
    /// coefficients for every segment are fitted first, one fit after another (each from the
    /// last one detached, as the loop stores them), and the segments then read them together.
    ///
    /// `None` (use the segment loop) for MemTr-XL (its memory carries gradient), for sticky
    /// sampling or a KL term (each read depends on the segment before it, or adds a term),
    /// a partial last segment, or fewer than two segments with a full cache.
    ///
    /// # Shapes
    /// - tokens: `[batch, segments * seg_len]`
    /// - output: `[batch, segments * seg_len, d_model]`
    #[cfg(feature = "train")]
    pub(crate) fn window_rows(&self, tokens: Tensor<2, Int>, seg_len: usize) -> Option<Tensor<3>> {
        let [n, len] = tokens.dims();
        let (t, mem_len, d) = (seg_len, self.config.cache_len(), self.config.d_model);
        let segments = len / t;
        // Segments before `alone` see a cache shorter than `mem_len`, each its own length.
        let alone = mem_len.div_ceil(t);
        let detached = match self.config.kind {
            ModelKind::Xl | ModelKind::Transformer => true,
            ModelKind::Infinity => self.ltm.iter().all(|ltm| {
                ltm.config().sampling == crate::nn::LtmSampling::Uniform
                    && ltm.config().kl_weight == 0.0
            }),
            _ => false,
        };
        if !detached || len % t != 0 || segments < alone + 2 {
            return None;
        }
        let together = segments - alone;
        let device = tokens.device();
        let rope = Some(&self.rope);
        let mask = |cached| {
            self.masks
                .get(&[t, cached], &device, || attention_mask(0, t, cached))
        };
        let mut single: Vec<Tensor<3>> = (0..alone)
            .map(|s| {
                self.tokens
                    .forward(tokens.clone().slice(s![.., s * t..(s + 1) * t]))
            })
            .collect();
        let mut rest = self.tokens.forward(
            tokens
                .slice(s![.., alone * t..len])
                .reshape([n * together, t]),
        );
        for (l, block) in self.blocks.iter().enumerate() {
            let ltm = self.ltm.get(l);
            // This layer's input for every segment, detached as the cache keeps it.
            let all = (mem_len > 0 || ltm.is_some()).then(|| {
                let mut parts: Vec<_> = single.iter().map(|h| h.clone().detach()).collect();
                parts.push(rest.clone().detach().reshape([n, together * t, d]));
                Tensor::cat(parts, 1)
            });
            // Each segment's long-term memory, and the later segments' side by side.
            let (mut coeffs, mut rest_coeffs) = (vec![None; alone], None);
            if let (Some(ltm), Some(all)) = (ltm, &all) {
                let mut every = fitted_by_segment(ltm, all, n, segments, t, mem_len);
                let later = every.split_off(alone);
                coeffs = every.into_iter().map(Some).collect();
                rest_coeffs = Some(Tensor::stack::<4>(later, 1).reshape([
                    n * together,
                    ltm.config().basis,
                    d,
                ]));
            }
            // Segment s's cache: the last min(mem_len, s t) rows of this layer's input for the
            // segments before it.
            let mut caches = vec![None; alone];
            let mut rest_cache = None;
            if let (true, Some(all)) = (mem_len > 0, all) {
                for (s, cache) in caches.iter_mut().enumerate().skip(1) {
                    *cache = Some(all.clone().slice(s![.., 0..s * t, ..]));
                }
                // For each later segment, the `alone` segments before it side by side.
                let by_segment = all.reshape([n, segments, t, d]);
                let before: Vec<_> = (1..=alone)
                    .rev()
                    .map(|j| {
                        by_segment
                            .clone()
                            .slice(s![.., alone - j..segments - j, .., ..])
                    })
                    .collect();
                let before = match <[_; 1]>::try_from(before) {
                    Ok([one]) => one,
                    Err(before) => Tensor::cat(before, 2),
                };
                let reach = alone * t;
                rest_cache = Some(
                    before
                        .slice(s![.., .., reach - mem_len..reach, ..])
                        .reshape([n * together, mem_len, d]),
                );
            }
            // The block, reading the long-term memory `coeffs` beside its attention if any.
            let run = |h, cache, cached, coeffs: Option<Tensor<3>>| match (ltm, coeffs) {
                (Some(ltm), Some(coeffs)) => {
                    let mut read = |normed| ltm.read_context(normed, coeffs.clone());
                    block
                        .forward_with(h, cache, mask(cached), rope, false, Some(&mut read), 0)
                        .hidden
                }
                _ => {
                    block
                        .forward_cached(h, cache, mask(cached), rope, false)
                        .hidden
                }
            };
            single = single
                .into_iter()
                .zip(caches.into_iter().zip(coeffs))
                .enumerate()
                .map(|(s, (h, (cache, coeffs)))| run(h, cache, s * t, coeffs))
                .collect();
            rest = run(rest, rest_cache, mem_len, rest_coeffs);
        }
        single.push(rest.reshape([n, together * t, d]));
        Some(self.norm.forward(Tensor::cat(single, 1)))
    }

    /// [`SegmentModel::step`] up to the output head, and the next state.
    fn rows(&self, tokens: Tensor<2, Int>, state: State, return_attention: bool) -> (Rows, State) {
        let [batch, t] = tokens.dims();
        let device = tokens.device();
        let (m, mem_len) = (self.config.memory_len(), self.config.cache_len());
        let (cache, memory, ltm_state) = match state {
            State::Xl { cache, memory, ltm } => (cache, memory, ltm),
            State::Empty => (Vec::new(), None, Vec::new()),
            other => panic!("Transformer-XL was given a {} state", other.kind()),
        };
        let ltm_state = match (self.ltm.is_empty(), ltm_state.is_empty()) {
            (false, true) => match self.init_state(batch, &device) {
                State::Xl { ltm, .. } => ltm,
                _ => unreachable!("the infinity-former starts from an XL state"),
            },
            _ => ltm_state,
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
        let bias = self
            .masks
            .get(&[t, cached], &device, || attention_mask(m, t, cached));

        let mut next_cache = Vec::with_capacity(self.blocks.len());
        let mut next_ltm = Vec::with_capacity(self.ltm.len());
        let mut attention = return_attention.then(Vec::new);
        let mut density = (return_attention && !self.ltm.is_empty()).then(Vec::new);
        let mut regulariser = Vec::new();
        for (l, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.get(l).cloned();
            // The states this segment pushes out of the cache (all of them without a cache).
            let mut evicted = None;
            if mem_len > 0 || !self.ltm.is_empty() {
                let seg = h.clone().slice(s![.., m..m + t, ..]).detach();
                let all = match layer_cache.clone() {
                    Some(c) => Tensor::cat(vec![c, seg], 1),
                    None => seg,
                };
                let len = all.dims()[1];
                let keep = len.saturating_sub(mem_len);
                if keep > 0 {
                    evicted = Some(all.clone().slice(s![.., 0..keep, ..]));
                }
                if mem_len > 0 {
                    next_cache.push(all.slice(s![.., keep..len, ..]));
                }
            }
            let out = match self.ltm.get(l) {
                None => block.forward_cached(
                    h,
                    layer_cache,
                    bias.clone(),
                    Some(&self.rope),
                    return_attention,
                ),
                Some(ltm) => {
                    let layer = super::infinity::layer(
                        block,
                        ltm,
                        ltm_state[l].clone(),
                        evicted,
                        Input {
                            h,
                            cache: layer_cache,
                            bias: bias.clone(),
                            rope: &self.rope,
                            return_attention,
                        },
                    );
                    regulariser.extend(layer.memory.regulariser);
                    next_ltm.push(layer.memory.state);
                    if let (Some(all), Some(d)) = (density.as_mut(), layer.memory.density) {
                        all.push(d);
                    }
                    layer.out
                }
            };
            h = out.hidden;
            if let (Some(all), Some(w)) = (attention.as_mut(), out.weights) {
                all.push(w);
            }
        }
        let h = self.norm.forward(h);
        // Without memory rows the rows are all of `h`: no slice, whose backward would be a
        // zero fill and a copy on GPUs.
        let rows = match m {
            0 => h.clone(),
            _ => h.clone().slice(s![.., m..m + t, ..]),
        };

        let next = if self.config.kind == ModelKind::Transformer {
            State::Empty
        } else {
            let memory = memory.map(|_| h.slice(s![.., m + t..2 * m + t, ..]));
            State::Xl {
                cache: next_cache,
                memory,
                ltm: next_ltm,
            }
        };
        let regulariser = (!regulariser.is_empty()).then(|| Tensor::cat(regulariser, 0).sum());
        let out = Rows {
            rows,
            attention,
            density,
            regulariser,
        };
        (out, next)
    }
}

/// A step's outputs before the output head ([`Xl::rows`]).
struct Rows {
    /// The segment's final rows `[batch, t, d_model]`.
    rows: Tensor<3>,
    /// As [`StepOutput::attention`].
    attention: Option<Vec<Tensor<4>>>,
    /// As [`StepOutput::density`].
    density: Option<Vec<crate::nn::Density>>,
    /// As [`StepOutput::regulariser`].
    regulariser: Option<Tensor<1>>,
}

/// One layer's long-term memory as each segment of a window reads it, from an empty memory:
/// segment `s` reads the fit of what left the layer's cache in segment `s - 1` into the memory
/// segment `s - 1` read (detached, as the segment loop stores it). `all` is the layer's input
/// for every segment, detached; `mem_len` the cache length.
///
/// # Shapes
/// - all: `[batch, segments * t, d_model]`
/// - output: `segments` tensors `[batch, N, d_model]`
#[cfg(feature = "train")]
fn fitted_by_segment(
    ltm: &LongTermMemory,
    all: &Tensor<3>,
    batch: usize,
    segments: usize,
    t: usize,
    mem_len: usize,
) -> Vec<Tensor<3>> {
    let mut coeffs = ltm.empty(batch, &all.device());
    let mut every = Vec::with_capacity(segments);
    every.push(coeffs.clone());
    for s in 1..segments {
        // Segment s - 1 saw a cache of `cached` rows and pushed the first `evicted` rows of
        // [cache | its input] out of it.
        let cached = mem_len.min((s - 1) * t);
        let evicted = (cached + t).saturating_sub(mem_len);
        let start = (s - 1) * t - cached;
        coeffs = match evicted {
            0 => coeffs.detach(),
            _ => ltm.write(
                coeffs.detach(),
                None,
                all.clone().slice(s![.., start..start + evicted, ..]),
            ),
        };
        every.push(coeffs.clone());
    }
    every
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
        let xl = Xl::new(&config(ModelKind::Xl, 4), &mut Init::new(3, &device));
        let full = Xl::new(
            &config(ModelKind::Transformer, 0),
            &mut Init::new(3, &device),
        )
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
        let xl = Xl::new(&config(ModelKind::Xl, 4), &mut Init::new(3, &device));
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

    /// Checks that two sets of gradients agree for every parameter visited (relative 1e-4).
    struct SameGradients<'a>(&'a GradientsParams, &'a GradientsParams, usize);
    impl burn::module::ModuleVisitor for SameGradients<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let (a, b) = match (self.0.get::<D>(param.id), self.1.get::<D>(param.id)) {
                (Some(a), Some(b)) => (a, b),
                (None, None) => return,
                _ => panic!("a parameter has a gradient one way only"),
            };
            let scale = b.clone().abs().max().into_scalar::<f32>();
            let diff = (a - b).abs().max().into_scalar::<f32>();
            assert!(
                diff <= 1e-4 * scale.max(1e-3),
                "gradients differ by {diff} (scale {scale})"
            );
            self.2 += 1;
        }
    }

    /// An infinity-former with a small long-term memory and its gate on (the gate trains
    /// through the fit).
    fn infinity(mem_len: usize) -> ModelConfig {
        let mut cfg = config(ModelKind::Infinity, mem_len);
        cfg.ltm.basis = 8;
        cfg.ltm.samples = 6;
        cfg.ltm.gate = true;
        cfg
    }

    /// All segments at once ([`Xl::window_rows`]) give the rows, and under a loss on them the
    /// weight gradients, of the segment loop, for Transformer-XL and the infinity-former:
    /// caches as long as a segment, shorter, and longer (one and a half segments, two), two to
    /// five segments, and no cache at all.
    #[test]
    fn all_segments_at_once_equal_the_segment_loop() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let cases = [(4, 4), (2, 3), (3, 3), (0, 2), (6, 4), (8, 5)];
        let models = [config(ModelKind::Xl, 0), infinity(0)];
        for ((mem_len, segments), model) in cases
            .into_iter()
            .flat_map(|c| models.iter().map(move |m| (c, m)))
        {
            let mut cfg = model.clone();
            cfg.mem_len = Some(mem_len);
            let xl = Xl::new(&cfg, &mut Init::new(5, &device));
            let kind = cfg.kind;
            let ids: Vec<i64> = (0..2 * 4 * segments as i64)
                .map(|i| (i * 7 + 3) % 11)
                .collect();
            let tokens =
                Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 4 * segments]), &device);
            let at_once = xl
                .window_rows(tokens.clone(), 4)
                .expect("Transformer-XL and the infinity-former batch");
            let mut state = xl.init_state(2, &device);
            let mut looped = Vec::new();
            for s in 0..segments {
                let (rows, next, _) =
                    xl.step_rows(tokens.clone().slice(s![.., s * 4..s * 4 + 4]), state);
                looped.push(rows);
                state = next;
            }
            let looped = Tensor::cat(looped, 1);
            let diff = (at_once.clone() - looped.clone())
                .abs()
                .max()
                .into_scalar::<f32>();
            assert!(
                diff < 1e-5,
                "{kind:?}, mem_len {mem_len}, {segments} segments: rows differ by {diff}"
            );

            // The same loss through either path: every weight's gradient agrees.
            let w =
                Tensor::<3>::random(at_once.dims(), burn::tensor::Distribution::Default, &device);
            let grads = |rows: Tensor<3>| {
                GradientsParams::from_grads((rows * w.clone()).sum().backward(), &xl)
            };
            let (ours, theirs) = (grads(at_once), grads(looped));
            let mut compare = SameGradients(&ours, &theirs, 0);
            xl.visit(&mut compare);
            assert!(compare.2 > 20, "compared {} parameters", compare.2);
        }
        // What must run segment by segment: fewer than two segments with a full cache, memory
        // that carries gradient, one segment, a partial last segment.
        let tokens = Tensor::<2, Int>::zeros([1, 12], &device);
        let longer = Xl::new(&config(ModelKind::Xl, 6), &mut Init::new(5, &device));
        assert!(longer.window_rows(tokens.clone(), 4).is_none());
        let mut memxl = config(ModelKind::Memxl, 4);
        memxl.memory_tokens = 2;
        let memxl = Xl::new(&memxl, &mut Init::new(5, &device));
        assert!(memxl.window_rows(tokens.clone(), 4).is_none());
        let xl = Xl::new(&config(ModelKind::Xl, 4), &mut Init::new(5, &device));
        assert!(xl.window_rows(tokens.clone(), 12).is_none());
        let two = Tensor::<2, Int>::zeros([1, 8], &device);
        assert!(xl.window_rows(two, 4).is_none());
        assert!(xl.window_rows(tokens.clone(), 5).is_none());
        // The infinity-former's reads depend on the segment before with sticky sampling, and
        // a KL term is added per read.
        let mut sticky = infinity(4);
        sticky.ltm.sampling = crate::nn::LtmSampling::Sticky;
        let mut kl = infinity(4);
        kl.ltm.kl_weight = 1e-3;
        for cfg in [sticky, kl] {
            let model = Xl::new(&cfg, &mut Init::new(5, &device));
            assert!(model.window_rows(tokens.clone(), 4).is_none());
        }
    }

    #[test]
    fn the_long_term_memory_stays_the_same_size_however_long_the_input() {
        let device = Device::flex();
        for sampling in [
            crate::nn::LtmSampling::Uniform,
            crate::nn::LtmSampling::Sticky,
        ] {
            let mut cfg = config(ModelKind::Infinity, 2);
            cfg.ltm.basis = 16;
            cfg.ltm.samples = 8;
            cfg.ltm.sampling = sampling;
            let model = Xl::new(&cfg, &mut Init::new(4, &device));
            let mut state = model.init_state(2, &device);
            let tokens = Tensor::<2, Int>::from_data([[1, 2, 3, 4], [5, 6, 7, 8]], &device);
            let mut sizes = Vec::new();
            for chunk in 1..=1000 {
                let (_, next) = model.step(tokens.clone(), state, false);
                state = next;
                if [1, 10, 1000].contains(&chunk) {
                    let State::Xl { ltm, .. } = &state else {
                        panic!("the infinity-former keeps an XL state")
                    };
                    let memory: Vec<_> = ltm.iter().map(|l| l.coeffs.dims()).collect();
                    // The states waiting to enter the signal never exceed one segment.
                    assert!(
                        ltm.iter()
                            .all(|l| l.pending.as_ref().unwrap().dims()[1] <= 4)
                    );
                    let bytes = state.to_bytes("test").unwrap().len();
                    sizes.push((memory, bytes));
                }
            }
            // After the first chunk the cache is not full yet (fewer states pending); from then
            // on the whole state, in bytes, does not grow.
            assert_eq!(sizes[0].0, sizes[1].0, "{sampling:?}: after 1 vs 10 chunks");
            assert_eq!(sizes[1], sizes[2], "{sampling:?}: after 10 vs 1000 chunks");
            assert_eq!(sizes[2].0, vec![[2, 16, 16]; 2]);
            let State::Xl { ltm, .. } = &state else {
                unreachable!()
            };
            let coeffs = ltm[0].coeffs.clone().abs().max().into_scalar::<f32>();
            assert!(coeffs.is_finite() && coeffs > 0.0, "memory holds {coeffs}");
        }
    }

    #[test]
    fn memxl_carries_memory_and_a_bounded_cache() {
        let device = Device::flex();
        let mut cfg = config(ModelKind::Memxl, 3);
        cfg.memory_tokens = 2;
        let model = Xl::new(&cfg, &mut Init::new(4, &device));
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
