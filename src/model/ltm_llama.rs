//! The infinity-former's long-term memory on a pretrained Llama decoder (the recipe the
//! infinity-former paper applied to GPT-2): every layer gets its own continuous long-term
//! memory ([`crate::nn::LongTermMemory`]), read beside the layer's own attention.
//!
//! One segment of `t` tokens, in layer `l`:
//!
//! ```text
//! normed     n = attn_norm(x)                                  [batch, t, d]
//! layer      x + attention(n) + ltm_l.read(n, signal_l) , then the feed-forward layer
//! signal_l   last segment's n fitted into the signal at the start of this segment
//! positions  0 .. t in every segment; mask causal within the segment
//! ```
//!
//! The short-term context is the segment itself (no Transformer-XL cache on the backbone yet):
//! everything before it reaches the model only through the long-term memories. Two choices
//! differ from the from-scratch infinity-former ([`super::infinity`]):
//!
//! - the signal holds each layer's *normed* inputs, the vectors the layer's own attention reads,
//!   rather than its raw residual stream: a pretrained residual stream carries a few very large
//!   features that would dominate the fit and the memory's scores;
//! - each memory's output layer starts at zero ([`LongTermMemory::silenced`]), so the model
//!   starts as exactly the pretrained decoder and the memory only adds what training finds
//!   useful.
//!
//! With the backbone frozen (the default) only the long-term memories train and are saved. The
//! stored coefficients are detached: no gradient crosses segments.

use burn::prelude::*;

use super::config::ModelConfig;
use super::infinity::{Remembered, empty, fitted, remember};
use super::llama::Llama;
use super::state::State;
use super::{SegmentModel, StepOutput};
use crate::nn::{Constants, Density, Init, LongTermMemory, Noise, causal_mask};

/// The infinity-former's long-term memory in every layer of a Llama decoder.
#[derive(Module, Debug)]
pub struct LlamaLtm {
    backbone: Llama,
    /// One long-term memory per layer.
    ltm: Vec<LongTermMemory>,
    #[module(skip)]
    noise: Noise,
    #[module(skip)]
    masks: Constants,
    #[module(skip)]
    config: ModelConfig,
}

impl LlamaLtm {
    /// Long-term memories on `llama` as `config.ltm` says (the config's sizes must be the
    /// backbone's, see [`ModelConfig::with_backbone`]); their weights from `init`. The
    /// backbone's weights stop training unless the config's backbone says `train = true`.
    pub fn new(config: &ModelConfig, llama: Llama, init: &mut Init) -> Self {
        let llama = super::backbone::as_configured(config, llama);
        let ltm = (0..config.n_layers)
            .map(|_| {
                LongTermMemory::new(&config.ltm, config.d_model, config.n_heads, init).silenced()
            })
            .collect();
        LlamaLtm {
            backbone: llama,
            ltm,
            noise: init.noise(),
            masks: Constants::default(),
            config: config.clone(),
        }
    }

    /// The backbone.
    pub fn llama(&self) -> &Llama {
        &self.backbone
    }

    /// One segment: its final hidden states `[batch, t, d]`, the attention weights when asked
    /// for, and every layer's memory after it.
    fn run(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
    ) -> (Tensor<3>, Option<Vec<Tensor<4>>>, Vec<Remembered>) {
        let [batch, t] = tokens.dims();
        let t_max = self.config.segment_len;
        assert!(
            t >= 1 && t <= t_max,
            "segment of {t} tokens, model takes 1..={t_max}"
        );
        let device = tokens.device();
        let states = match state {
            State::Xl { ltm, .. } if ltm.len() == self.ltm.len() => ltm,
            State::Empty => empty(&self.ltm, batch, &device),
            _ => panic!("the infinity-former on a backbone was given another model's state"),
        };
        let bias = self.masks.get(&[t], &device, || causal_mask(t));
        let positions: Vec<usize> = (0..t).collect();
        let mut states = states.into_iter();
        let mut remembered = Vec::with_capacity(self.ltm.len());
        let mut read_memory = |l: usize, normed: Tensor<3>| {
            let ltm = &self.ltm[l];
            let coeffs = fitted(ltm, states.next().expect("one memory per layer"));
            let read = ltm.read(normed.clone(), coeffs.clone());
            let evicted = Some(normed.detach());
            remembered.push(remember(ltm, coeffs, &read, evicted, return_attention));
            read.context
        };
        let (h, attention) = self.backbone.hidden_with(
            self.backbone.embed(tokens),
            &positions,
            bias,
            return_attention,
            Some(&mut read_memory),
        );
        (h, attention, remembered)
    }
}

/// The next state from every layer's memory.
fn next_state(remembered: Vec<Remembered>) -> (State, Option<Tensor<1>>, Option<Vec<Density>>) {
    let mut ltm = Vec::with_capacity(remembered.len());
    let mut regulariser = Vec::new();
    let mut density = Vec::new();
    for r in remembered {
        ltm.push(r.state);
        regulariser.extend(r.regulariser);
        density.extend(r.density);
    }
    let state = State::Xl {
        cache: Vec::new(),
        memory: None,
        ltm,
    };
    let regulariser = (!regulariser.is_empty()).then(|| Tensor::cat(regulariser, 0).sum());
    (state, regulariser, (!density.is_empty()).then_some(density))
}

impl SegmentModel for LlamaLtm {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn noise(&self) -> &Noise {
        &self.noise
    }

    /// Every layer's long-term memory empty (the zero signal).
    fn init_state(&self, batch: usize, device: &Device) -> State {
        State::Xl {
            cache: Vec::new(),
            memory: None,
            ltm: empty(&self.ltm, batch, device),
        }
    }

    /// Read one segment with the long-term memories in `state`.
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`, `1 <= t <= segment_len`
    /// - logits: `[batch, t, vocab]`
    /// - each layer's signal in `state`: `[batch, N, d_model]`
    fn step(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
    ) -> (StepOutput, State) {
        let (h, attention, remembered) = self.run(tokens, state, return_attention);
        let (next, regulariser, density) = next_state(remembered);
        let output = StepOutput {
            logits: self.backbone.logits(h),
            attention,
            density,
            regulariser,
        };
        (output, next)
    }

    /// [`SegmentModel::step`]'s next state, without the output layer over the vocabulary.
    fn advance(&self, tokens: Tensor<2, Int>, state: State) -> State {
        next_state(self.run(tokens, state, false).2).0
    }
}
