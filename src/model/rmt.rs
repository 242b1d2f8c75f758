//! Recurrent Memory Transformer (Bulatov, Kuratov, Burtsev, NeurIPS 2022, arXiv 2207.06881).
//!
//! A plain pre-norm Transformer reads a long input segment by segment. `M` memory tokens are
//! added to every segment; the final layer's states at the memory's write positions become the
//! memory of the next segment.
//!
//! Decoder layout, one segment of `t` tokens:
//!
//! ```text
//! [ read memory (M) | segment (t) | write memory (M) ]
//! ```
//!
//! Attention mask ([`attention_mask`], `true` = may attend):
//! - read rows see all read columns (bidirectional among themselves), nothing else;
//! - segment rows see all read columns and the segment causally; no write columns;
//! - write rows see everything.
//!
//! Encoder layout (arXiv 2304.11062): `[memory (M) | segment (t)]`, fully bidirectional; the new
//! memory is the final states at the memory positions.
//!
//! Rows nothing reads are not computed: the last layer carries only the segment and the memory
//! being written through its output projection and feed-forward layer (the read memory's output
//! is never used), and [`Rmt::last_step`] leaves the write memory out altogether (the last
//! segment of a training sequence; about 11% of `copy-small`'s training FLOPs together).
//!
//! New memory is taken after the final layer norm (as GPT-2's last hidden state is), which keeps
//! its scale fixed however many segments are read. `memory_tokens = 0` gives the segment-level
//! Transformer baseline with no recurrence.
//!
//! `model.memory_gate` (remem's, not the paper's) blends the new memory into the old through a
//! learned gate instead of replacing it ([`blend`]).

use burn::module::Param;
use burn::nn::{Embedding, Linear, RotaryEncoding, RotaryEncodingConfig};
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

use super::config::{Layout, ModelConfig, Positions};
use super::state::State;
use super::{SegmentModel, StepOutput};
use crate::nn::{Block, Constants, Init, LayerNorm, LayerNormConfig, Mask, Noise, linear};
use crate::ops::embed::embed_layout;

/// The RMT attention mask for `memory` memory tokens and a segment of `seg_len` tokens.
///
/// Rows and columns follow the layout: decoder `[read | segment | write]`, encoder
/// `[memory | segment]`.
pub fn attention_mask(layout: Layout, memory: usize, seg_len: usize) -> Mask {
    layout_mask(layout, memory, seg_len, true)
}

/// [`attention_mask`], without the decoder's write rows and columns when `write` is false
/// (nothing else attends to them, so the rest of the mask is unchanged).
pub(crate) fn layout_mask(layout: Layout, memory: usize, seg_len: usize, write: bool) -> Mask {
    let (m, t) = (memory, seg_len);
    let n = match layout {
        Layout::Decoder if write => 2 * m + t,
        _ => m + t,
    };
    let mut mask = Mask::blocked(n, n);
    for row in 0..n {
        for col in 0..n {
            let allowed = match layout {
                Layout::Encoder => true,                      // bidirectional
                Layout::Decoder if row < m => col < m,        // read memory: among itself
                Layout::Decoder if row < m + t => col <= row, // segment: read memory, then causal
                Layout::Decoder => true,                      // write memory: everything
            };
            if allowed {
                mask.allow(row, col);
            }
        }
    }
    mask
}

/// A closed-form start for the memory gate: zero weights and a bias of [`GATE_OPEN`], so every
/// memory takes `sigmoid(3) = 0.95` of the new memory at first (nearly the paper's RMT, which
/// takes all of it) until training teaches the gate when to keep the old one.
fn gate(d: usize, device: &Device) -> Linear {
    Linear {
        weight: Param::from_tensor(Tensor::zeros([2 * d, d], device)),
        bias: Some(Param::from_tensor(Tensor::full([d], GATE_OPEN, device))),
    }
}

/// The memory gate's initial bias.
const GATE_OPEN: f64 = 3.0;

/// `old + g * (new - old)` with `g = sigmoid(gate([old, new]))`.
///
/// # Shapes
/// - old, new: `[batch, M, d_model]`
/// - output: `[batch, M, d_model]`
fn blend(gate: &Linear, old: Tensor<3>, new: Tensor<3>) -> Tensor<3> {
    let g = sigmoid(linear(gate, Tensor::cat(vec![old.clone(), new.clone()], 2)));
    old.clone() + g * (new - old)
}

/// Recurrent Memory Transformer.
#[derive(Module, Debug)]
pub struct Rmt {
    tokens: Embedding,
    /// Learned positions over the layout: `[2M + T, d]` (decoder) or `[M + T, d]` (encoder);
    /// `None` with rotary positions.
    positions: Option<Param<Tensor<2>>>,
    /// Rotary positions over the layout's rows, in every layer (`None` with learned ones).
    rope: Option<RotaryEncoding>,
    /// The initial memory: M distinct learned vectors `[M, d]`; `None` when M = 0.
    memory: Option<Param<Tensor<2>>>,
    blocks: Vec<Block>,
    norm: LayerNorm,
    head: Linear,
    /// The memory gate (`model.memory_gate`): `[old memory, new memory]` `[2d]` to the
    /// fraction of the new memory taken `[d]`; `None` replaces the memory, as the paper does.
    gate: Option<Linear>,
    #[module(skip)]
    noise: Noise,
    /// The attention masks' biases, built once per segment length.
    #[module(skip)]
    masks: Constants,
    #[module(skip)]
    config: ModelConfig,
}

impl Rmt {
    /// Fresh weights for `config` (which must be valid) from `init`.
    pub fn new(config: &ModelConfig, init: &mut Init) -> Self {
        let (m, t, d) = (config.memory_tokens, config.segment_len, config.d_model);
        let layout_len = match config.layout {
            Layout::Decoder => 2 * m + t,
            Layout::Encoder => m + t,
        };
        Rmt {
            tokens: init.embedding(config.vocab_size, d),
            positions: (config.positions == Positions::Learned)
                .then(|| init.normal([layout_len, d], 0.02)),
            rope: (config.positions == Positions::Rotary).then(|| {
                RotaryEncodingConfig::new(layout_len, d / config.n_heads).init(init.device())
            }),
            memory: config.initial_memory(init),
            blocks: config.blocks(init),
            norm: LayerNormConfig::new(d).init(init.device()),
            head: init.linear(d, config.vocab_size, true),
            // Drawn last and from no random numbers: the other weights are those of the
            // ungated model of the same seed.
            gate: config.memory_gate.then(|| gate(d, init.device())),
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
    /// value weights concatenated once for all of them (see
    /// [`crate::nn::Attention::for_training_step`]). `None` where training does not read
    /// packed weights: dropout, or rotary positions off wgpu (three products then).
    #[cfg(feature = "train")]
    pub(crate) fn for_training_step(&self, device: &Device) -> Option<Self> {
        let packed = self.rope.is_none() || crate::ops::wgsl::on_wgpu(device);
        (packed && self.config.dropout == 0.0).then(|| Self {
            blocks: self.blocks.iter().map(Block::for_training_step).collect(),
            ..self.clone()
        })
    }

    /// This model for a streaming session (see [`crate::nn::Attention::for_inference`]).
    pub(crate) fn for_inference(self) -> Self {
        Self {
            blocks: self.blocks.into_iter().map(Block::for_inference).collect(),
            ..self
        }
    }

    /// [`Rmt::step`], the next memory computed only when `write`.
    ///
    /// On the CPU, in the last layer only the rows something reads are carried through the
    /// output projection and the feed-forward layer: the segment, and the memory being written.
    /// The decoder's read memory never is (it is attended to in earlier layers only). On GPUs
    /// every step runs the whole layout instead, write rows included when no memory is
    /// wanted: the extra rows cost a GPU next to nothing, and every step then has the same
    /// shapes, so the runtime compiles and tunes its kernels once instead of once per variant
    /// (most of a browser's first answer).
    fn run(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
        write: bool,
    ) -> (StepOutput, Option<State>) {
        let (segment, attention, next) = self.rows(tokens, state, return_attention, write);
        (
            StepOutput {
                logits: self.head(segment),
                attention,
                density: None,
                regulariser: None,
            },
            next,
        )
    }

    /// [`Rmt::step`] without the output head: the segment's final (normalised) rows, and the
    /// next memory when `write`. Training on a GPU runs the head once over all its segments'
    /// rows ([`Rmt::head`]) instead of once per segment: one product and its backward instead
    /// of one per segment, and no logits to join.
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`, `1 <= t <= segment_len`
    /// - rows: `[batch, t, d_model]`
    #[cfg(feature = "train")]
    pub(crate) fn step_rows(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        write: bool,
    ) -> (Tensor<3>, Option<State>) {
        let (segment, _, next) = self.rows(tokens, state, false, write);
        (segment, next)
    }

    /// The output head: logits for final rows.
    ///
    /// # Shapes
    /// - rows: `[batch, t, d_model]`
    /// - output: `[batch, t, vocab]`
    pub(crate) fn head(&self, rows: Tensor<3>) -> Tensor<3> {
        linear(&self.head, rows)
    }

    /// [`Rmt::run`] up to the output head: the segment's final rows, the attention weights
    /// when asked for, and the next memory when `write`.
    fn rows(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
        write: bool,
    ) -> (Tensor<3>, Option<Vec<Tensor<4>>>, Option<State>) {
        let [batch, t] = tokens.dims();
        let m = self.config.memory_tokens;
        let t_max = self.config.segment_len;
        assert!(
            t >= 1 && t <= t_max,
            "segment of {t} tokens, model takes 1..={t_max}"
        );
        let device = tokens.device();
        let whole = !crate::device::is_cpu(&device);
        let with_write_rows = write || whole;
        let memory = match state {
            State::Memory { memory } => Some(memory),
            State::Empty => None,
            other => panic!("RMT was given a {} state", other.kind()),
        };
        let old = match (&self.gate, write) {
            (Some(_), true) => memory.clone(),
            _ => None,
        };
        let layout = self.config.layout;
        let learned = self.positions.as_ref().map(|p| p.val());
        let write_rows = layout == Layout::Decoder && with_write_rows;
        let mut h = match (memory, learned) {
            // On GPUs the rows and their positions as one operation, one kernel each way
            // instead of about fourteen (`crate::ops::embed`); the CPU keeps Burn's.
            (Some(mem), Some(p)) if whole => {
                embed_layout(self.tokens.weight.val(), tokens, mem, p, true, write_rows)
            }
            (memory, learned) => self.embed(tokens, memory, learned, write_rows),
        };

        let bias = self
            .masks
            .get(&[t, usize::from(with_write_rows)], &device, || {
                if m > 0 {
                    layout_mask(layout, m, t, with_write_rows)
                } else {
                    crate::nn::causal_mask(t)
                }
            });
        // The first layout row the last layer's output is read from.
        let from = match layout {
            _ if whole => 0,
            Layout::Decoder => m,
            Layout::Encoder if write => 0,
            Layout::Encoder => m,
        };
        let mut attention = return_attention.then(Vec::new);
        let last = self.blocks.len() - 1;
        for (i, block) in self.blocks.iter().enumerate() {
            let rows_from = if i == last { from } else { 0 };
            let out = block.forward_rows(
                h,
                bias.clone(),
                self.rope.as_ref(),
                return_attention,
                rows_from,
            );
            h = out.hidden;
            if let (Some(all), Some(w)) = (attention.as_mut(), out.weights) {
                all.push(w);
            }
        }
        // Rows of `h` are the layout's from `from` on.
        let h = self.norm.forward(h);
        let d = self.config.d_model;
        let segment = h.clone().slice(s![.., m - from..m - from + t, ..]);
        let next = if !write {
            None
        } else if m == 0 {
            Some(State::Empty)
        } else {
            let memory = match layout {
                Layout::Decoder => h.slice(s![.., m + t - from..2 * m + t - from, ..]),
                Layout::Encoder => h.slice(s![.., 0..m, ..]),
            };
            let memory = match (&self.gate, old) {
                (Some(gate), Some(old)) => blend(gate, old, memory),
                _ => memory,
            };
            Some(State::Memory { memory })
        };
        debug_assert_eq!(segment.dims(), [batch, t, d]);
        (segment, attention, next)
    }

    /// The layout's rows from Burn's operations: the memory (when there is one) around the
    /// tokens' embeddings, plus the learned positions (when there are). Learned positions
    /// index the layout's rows, the write rows at `M + T_max..` even for a shorter last
    /// segment; rotary positions are the rows as they stand (only distances count).
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`
    /// - memory: `[batch, M, d_model]`
    /// - output: `[batch, M + t (+ M with write rows), d_model]`, `[batch, t, d_model]`
    ///   without memory
    fn embed(
        &self,
        tokens: Tensor<2, Int>,
        memory: Option<Tensor<3>>,
        learned: Option<Tensor<2>>,
        write_rows: bool,
    ) -> Tensor<3> {
        let t = tokens.dims()[1];
        let (m, t_max) = (self.config.memory_tokens, self.config.segment_len);
        let x = self.tokens.forward(tokens);
        let (h, pos) = match memory {
            None => (x, learned.map(|p| p.slice(s![m..m + t, ..]))),
            // A whole segment's rows are the whole table: no slices, whose backward on a GPU
            // is a zero-filled copy each.
            Some(mem) if write_rows => {
                let pos = learned.map(|p| {
                    if t == t_max {
                        return p;
                    }
                    let write = p.clone().slice(s![m + t_max..2 * m + t_max, ..]);
                    Tensor::cat(vec![p.slice(s![0..m + t, ..]), write], 0)
                });
                (Tensor::cat(vec![mem.clone(), x, mem], 1), pos)
            }
            Some(mem) => (
                Tensor::cat(vec![mem, x], 1),
                learned.map(|p| {
                    if self.config.layout == Layout::Encoder && t == t_max {
                        p
                    } else {
                        p.slice(s![0..m + t, ..])
                    }
                }),
            ),
        };
        match pos {
            Some(pos) => h + pos.unsqueeze::<3>(),
            None => h,
        }
    }
}

impl SegmentModel for Rmt {
    /// The generator the model's dropout layers draw from.
    fn noise(&self) -> &Noise {
        &self.noise
    }

    /// The configuration this model was built from.
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The learned initial memory, repeated over the batch.
    fn init_state(&self, batch: usize, _device: &Device) -> State {
        State::initial_memory(self.memory.as_ref(), batch)
    }

    /// Read one segment with the memory in `state`; return the logits and the next memory
    /// (attached to the autodiff graph: the caller detaches it where backpropagation through
    /// time stops, see [`crate::train::loss::forward_batch`]).
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`, `1 <= t <= segment_len`
    /// - logits: `[batch, t, vocab]`
    /// - memory in `state`: `[batch, M, d_model]`
    fn step(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
    ) -> (StepOutput, State) {
        let (out, next) = self.run(tokens, state, return_attention, true);
        (out, next.expect("a step that writes memory returns it"))
    }

    /// [`SegmentModel::step`] without the next memory, for a segment after which none is needed (the
    /// last of a sequence, a prediction from part of a segment): on the CPU the decoder's write
    /// rows are left out, and so are the encoder's memory rows in the last layer. The logits are
    /// the same, since no segment row attends to either.
    ///
    /// # Shapes
    /// as [`SegmentModel::step`]
    fn last_step(&self, tokens: Tensor<2, Int>, state: State) -> StepOutput {
        self.run(tokens, state, false, false).0
    }

    /// [`SegmentModel::step`]'s next memory without the output head.
    ///
    /// # Shapes
    /// as [`SegmentModel::step`]
    fn advance(&self, tokens: Tensor<2, Int>, state: State) -> State {
        let (_, _, next) = self.rows(tokens, state, false, true);
        next.expect("a step that writes memory returns it")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_mask_for_two_memory_tokens_and_three_tokens() {
        // Layout: r r | s s s | w w
        let expected = [
            "11.....", // read 0: read memory only
            "11.....", // read 1
            "111....", // token 0: memory + itself
            "1111...", // token 1: memory + tokens 0..=1
            "11111..", // token 2: memory + tokens 0..=2
            "1111111", // write 0: everything
            "1111111", // write 1
        ];
        assert_eq!(attention_mask(Layout::Decoder, 2, 3).to_text(), expected);
    }

    #[test]
    fn encoder_mask_is_bidirectional() {
        let mask = attention_mask(Layout::Encoder, 1, 2);
        assert_eq!(mask.to_text(), ["111", "111", "111"]);
    }

    #[test]
    fn memory_starts_distinct_and_logits_have_the_right_shape() {
        let device = Device::flex();
        let config = ModelConfig {
            vocab_size: 10,
            memory_tokens: 3,
            segment_len: 4,
            ..ModelConfig::default()
        };
        let model = Rmt::new(&config, &mut Init::new(5, &device));
        let state = model.init_state(2, &device);
        let mem = state.memory().unwrap().clone();
        assert_eq!(mem.dims(), [2, 3, config.d_model]);
        let rows = mem.into_data().try_to_vec::<f32>().unwrap();
        let d = config.d_model;
        assert_ne!(
            rows[0..d],
            rows[d..2 * d],
            "memory vectors must be distinct"
        );

        let tokens = Tensor::<2, Int>::from_data([[1, 2, 3], [4, 5, 6]], &device);
        let (out, next) = model.step(tokens, state, true);
        assert_eq!(out.logits.dims(), [2, 3, 10]);
        assert_eq!(next.memory().unwrap().dims(), [2, 3, d]);
        let attention = out.attention.unwrap();
        assert_eq!(attention.len(), config.n_layers);
        assert_eq!(attention[0].dims(), [2, 4, 3 + 3 + 3, 9]);
    }

    /// With rotary positions there is no learned position table, yet order still counts: in
    /// one layer, without positions, the last token's output could not tell a swap of two
    /// earlier tokens (attention over a set); with the rotary encoding it does.
    #[test]
    fn rotary_positions_replace_the_learned_table_and_tell_order() {
        let device = Device::flex();
        let config = |positions| ModelConfig {
            vocab_size: 10,
            n_layers: 1,
            memory_tokens: 0,
            segment_len: 4,
            positions,
            ..ModelConfig::default()
        };
        let learned = Rmt::new(&config(Positions::Learned), &mut Init::new(5, &device));
        let rotary = Rmt::new(&config(Positions::Rotary), &mut Init::new(5, &device));
        assert_eq!(
            learned.num_params() - rotary.num_params(),
            4 * config(Positions::Learned).d_model,
            "the rotary model has no position table"
        );
        let last = |tokens: [i64; 4]| {
            let tokens = Tensor::<2, Int>::from_data([tokens], &device);
            let (out, _) = rotary.step(tokens, State::Empty, false);
            let logits = out.logits.slice(s![.., 3..4, ..]);
            logits.into_data().try_to_vec::<f32>().unwrap()
        };
        let (a, b) = (last([1, 2, 3, 4]), last([2, 1, 3, 4]));
        let moved = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            moved > 1e-4,
            "swapping two earlier tokens moved the last logits by {moved}"
        );
    }
}

/// A small RMT for the tests: 11 tokens, width 16, 3 memory tokens, segments of 4.
#[cfg(test)]
fn small_config(layout: Layout) -> ModelConfig {
    ModelConfig {
        vocab_size: 11,
        d_model: 16,
        n_heads: 2,
        d_ff: 32,
        memory_tokens: 3,
        segment_len: 4,
        layout,
        ..ModelConfig::default()
    }
}

#[cfg(test)]
mod last_step_tests {
    use super::*;

    /// `last_step` skips the next memory, not the logits: they equal `step`'s, for full and
    /// partial segments, in both layouts.
    #[test]
    fn last_step_gives_the_logits_of_step() {
        let device = Device::flex();
        for layout in [Layout::Decoder, Layout::Encoder] {
            let config = small_config(layout);
            let model = Rmt::new(&config, &mut Init::new(5, &device));
            let first = Tensor::<2, Int>::from_data([[1, 2, 3, 4], [5, 6, 7, 8]], &device);
            // A memory that is not the initial one.
            let (_, state) = model.step(first, model.init_state(2, &device), false);
            let full_segment = TensorData::new(vec![9i64, 1, 0, 2, 3, 3, 4, 10], [2, 4]);
            let partial = TensorData::new(vec![7i64, 8, 2, 1], [2, 2]);
            for tokens in [full_segment, partial] {
                let tokens = Tensor::<2, Int>::from_data(tokens, &device);
                let (full, _) = model.step(tokens.clone(), state.clone(), false);
                let last = model.last_step(tokens, state.clone());
                let diff = (full.logits - last.logits).abs().max().into_scalar::<f32>();
                assert!(diff < 1e-5, "{layout:?}: logits differ by {diff}");
            }
        }
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;

    fn values(t: Tensor<3>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// The gate blends exactly: shut, the memory passes a segment unchanged; open, it is the
    /// paper's replaced memory; half open, halfway between. Both layouts; the gated model's
    /// other weights are the ungated model's of the same seed.
    #[test]
    fn the_gate_keeps_replaces_or_blends_the_memory() {
        let device = Device::flex();
        for layout in [Layout::Decoder, Layout::Encoder] {
            let config = small_config(layout);
            let plain = Rmt::new(&config, &mut Init::new(5, &device));
            let gated_config = ModelConfig {
                memory_gate: true,
                ..config.clone()
            };
            let mut gated = Rmt::new(&gated_config, &mut Init::new(5, &device));
            let first = Tensor::<2, Int>::from_data([[1, 2, 3, 4], [5, 6, 7, 8]], &device);
            let (_, state) = plain.step(first, plain.init_state(2, &device), false);
            let old = values(state.memory().unwrap().clone());
            let tokens = Tensor::<2, Int>::from_data([[9, 1, 0, 2], [3, 3, 4, 10]], &device);
            let (_, replaced) = plain.step(tokens.clone(), state.clone(), false);
            let new = values(replaced.memory().unwrap().clone());
            assert!(max_diff(&old, &new) > 0.1, "the segment changes the memory");
            let mut with_bias = |bias: f64| {
                gated.gate = Some(Linear {
                    weight: Param::from_tensor(Tensor::zeros([32, 16], &device)),
                    bias: Some(Param::from_tensor(Tensor::full([16], bias, &device))),
                });
                let (out, next) = gated.step(tokens.clone(), state.clone(), false);
                let (plain_out, _) = plain.step(tokens.clone(), state.clone(), false);
                // The gate touches the next memory only, never this segment's logits.
                let same = values(out.logits) == values(plain_out.logits);
                assert!(same, "{layout:?}: the gate changed the logits");
                values(next.memory().unwrap().clone())
            };
            let shut = with_bias(-40.0);
            assert!(max_diff(&shut, &old) < 1e-6, "{layout:?}: shut gate");
            let open = with_bias(40.0);
            assert!(max_diff(&open, &new) < 1e-6, "{layout:?}: open gate");
            let half = with_bias(0.0);
            let between: Vec<f32> = old.iter().zip(&new).map(|(o, n)| (o + n) / 2.0).collect();
            assert!(
                max_diff(&half, &between) < 1e-5,
                "{layout:?}: half-open gate"
            );
        }
    }

    /// A gate needs an RMT from scratch with memory tokens.
    #[test]
    fn the_gate_is_refused_where_there_is_no_memory_to_gate() {
        for config in [
            ModelConfig {
                kind: crate::model::ModelKind::Xl,
                memory_gate: true,
                ..ModelConfig::default()
            },
            ModelConfig {
                memory_tokens: 0,
                memory_gate: true,
                ..ModelConfig::default()
            },
        ] {
            let config = ModelConfig {
                vocab_size: 10,
                ..config
            };
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("model.memory_gate"), "{err}");
        }
    }
}
