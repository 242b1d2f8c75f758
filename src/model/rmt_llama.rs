//! RMT on a pretrained Llama decoder (the recipe RMT and BABILong applied to GPT-2): memory
//! tokens in the model's embedding space, read at the start of every segment and written at its
//! end, through the backbone's own layers.
//!
//! One segment of `t` tokens, with `M` memory tokens:
//!
//! ```text
//! rows       [ read memory (M) | segment (t)  | write memory (M)          ]
//! positions  [ 0 .. M          | M .. M + t   | M + T .. 2M + T           ]   (T = segment_len)
//! mask       RMT's decoder mask (crate::model::rmt::attention_mask)
//! ```
//!
//! The positions are the rotary positions of the backbone, counted from 0 in every segment, so
//! the backbone never sees a position past `2M + T` however long the input is; the write rows
//! keep their positions for a shorter last segment. The written memory is the backbone's final
//! (normed) hidden state at the write rows, as RMT takes GPT-2's last hidden state; a learned
//! `read` layer maps it back into the embedding space the next segment reads it in (it starts as
//! a scaled identity: the ratio of the embeddings' scale to the final norm's). With the
//! backbone frozen (the default), the initial memory and `read` are what trains.
//!
//! With `kind = "transformer"` the same backbone reads the whole input at once (no memory), and
//! with `memory_tokens = 0` each segment alone: the two baselines memory is judged against.

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;

use super::config::{Layout, ModelConfig};
use super::llama::Llama;
use super::rmt::layout_mask;
use super::state::State;
use super::{SegmentModel, StepOutput};
use crate::nn::{Constants, Init, Noise, causal_mask, scaled_identity};

/// The prefix of the backbone's weight names in a [`LlamaRmt`] or a
/// [`super::BertRmt`] (`backbone.layers.0.q.weight`).
pub const BACKBONE: &str = "backbone.";

/// RMT on a Llama decoder (or, without memory, the decoder alone, segment by segment or over
/// the whole input).
#[derive(Module, Debug)]
pub struct LlamaRmt {
    backbone: Llama,
    /// The initial memory: M learned vectors `[M, d]` at the token embeddings' scale; `None`
    /// when M = 0.
    memory: Option<Param<Tensor<2>>>,
    /// Written memory (final hidden states) to the embedding space it is read in.
    read: Option<Linear>,
    #[module(skip)]
    noise: Noise,
    #[module(skip)]
    masks: Constants,
    #[module(skip)]
    config: ModelConfig,
}

impl LlamaRmt {
    /// Memory on `llama` as `config` says (its sizes must be the backbone's, see
    /// [`ModelConfig::with_backbone`]); new weights from `init`. The backbone's weights stop
    /// training unless the config's backbone says `train = true`.
    pub fn new(config: &ModelConfig, llama: Llama, init: &mut Init) -> Self {
        let llama = super::backbone::as_configured(config, llama);
        let m = config.memory_len();
        let d = config.d_model;
        let rms = |t: Tensor<2>| t.square().mean().sqrt().into_scalar::<f32>() as f64;
        let embedding_scale = rms(llama.token_embedding().weight.val());
        let memory = (m > 0).then(|| init.normal([m, d], embedding_scale));
        let read = (m > 0).then(|| {
            let norm_scale = rms(llama.final_norm().gamma.val().unsqueeze());
            scaled_identity(d, embedding_scale / norm_scale, init.device())
        });
        LlamaRmt {
            backbone: llama,
            memory,
            read,
            noise: init.noise(),
            masks: Constants::default(),
            config: config.clone(),
        }
    }

    /// The backbone.
    pub fn llama(&self) -> &Llama {
        &self.backbone
    }

    fn run(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
        write: bool,
        logits: bool,
    ) -> (Option<StepOutput>, Option<State>) {
        let [_, t] = tokens.dims();
        let m = self.config.memory_len();
        let t_max = self.config.segment_len;
        assert!(
            self.config.kind.whole_input() || (t >= 1 && t <= t_max),
            "segment of {t} tokens, model takes 1..={t_max}"
        );
        let device = tokens.device();
        let x = self.backbone.embed(tokens);
        let memory = match state {
            State::Memory { memory } => Some(memory),
            State::Empty => None,
            other => panic!("RMT was given a {} state", other.kind()),
        };
        let write = write && memory.is_some();
        let (h, positions): (Tensor<3>, Vec<usize>) = match memory {
            None => (x, (0..t).collect()),
            Some(mem) if write => (
                Tensor::cat(vec![mem.clone(), x, mem], 1),
                (0..m + t).chain(m + t_max..2 * m + t_max).collect(),
            ),
            Some(mem) => (Tensor::cat(vec![mem, x], 1), (0..m + t).collect()),
        };
        let bias = self.masks.get(&[t, usize::from(write)], &device, || {
            if m > 0 {
                layout_mask(Layout::Decoder, m, t, write)
            } else {
                causal_mask(t)
            }
        });
        let (h, attention) = self.backbone.hidden(h, &positions, bias, return_attention);
        let rows = h.dims()[1];
        let from = rows - t - if write { m } else { 0 };
        let next = match (write, &self.read) {
            (true, Some(read)) => Some(State::Memory {
                memory: crate::nn::linear(read, h.clone().slice(s![.., from + t.., ..])),
            }),
            _ if m == 0 => Some(State::Empty),
            _ => None,
        };
        if !logits {
            return (None, next);
        }
        let logits = self.backbone.logits(h.slice(s![.., from..from + t, ..]));
        let output = StepOutput {
            logits,
            attention,
            density: None,
            regulariser: None,
        };
        (Some(output), next)
    }
}

impl SegmentModel for LlamaRmt {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn noise(&self) -> &Noise {
        &self.noise
    }

    /// The learned initial memory repeated over the batch (nothing without memory tokens).
    fn init_state(&self, batch: usize, _device: &Device) -> State {
        State::initial_memory(self.memory.as_ref(), batch)
    }

    /// Read one segment with the memory in `state`.
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`, `1 <= t <= segment_len` (any length for the whole-input kind)
    /// - logits: `[batch, t, vocab]`
    /// - memory in `state`: `[batch, M, d_model]`
    fn step(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
    ) -> (StepOutput, State) {
        let (out, next) = self.run(tokens, state, return_attention, true, true);
        (
            out.expect("asked for logits"),
            next.expect("a step that writes memory returns it"),
        )
    }

    /// [`SegmentModel::step`]'s next state, without the output layer over the vocabulary.
    fn advance(&self, tokens: Tensor<2, Int>, state: State) -> State {
        self.run(tokens, state, false, true, false)
            .1
            .expect("a step that writes memory returns it")
    }

    /// [`SegmentModel::step`] without the write rows.
    fn last_step(&self, tokens: Tensor<2, Int>, state: State) -> StepOutput {
        self.run(tokens, state, false, false, true)
            .0
            .expect("asked for logits")
    }
}
