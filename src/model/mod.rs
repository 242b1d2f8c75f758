//! The sequence models behind one segment-step interface.
//!
//! Every model exposes `init_state` and `step` over one segment, so training, evaluation,
//! streaming and the browser demo are written once (see `../DESIGN.md`, "One model interface").

pub mod config;
pub mod rmt;
pub mod state;
pub mod xl;

use burn::prelude::*;

use crate::nn::{Density, Init, Noise};

pub use config::{Layout, ModelConfig, ModelKind};
pub use rmt::{Rmt, attention_mask};
pub use state::{LtmState, State, cuts_before};
pub use xl::Xl;

/// What one segment step returns besides the next state.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// Next-token (decoder) or same-position (encoder) logits for the segment's tokens.
    ///
    /// # Shapes
    /// `[batch, seg_len, vocab]`
    pub logits: Tensor<3>,
    /// Per layer, the attention weights over the whole layout the model attends
    /// (for RMT: `[read memory | segment | write memory]`), when asked for.
    ///
    /// # Shapes
    /// each `[batch, n_heads, layout_len, layout_len]`
    pub attention: Option<Vec<Tensor<4>>>,
    /// Per layer, the infinity-former's attention densities over its long-term memory `[0, 1]`,
    /// when attention is asked for.
    pub density: Option<Vec<Density>>,
    /// A term to add to the training loss (the infinity-former's KL regulariser, already
    /// weighted), when the model has one.
    ///
    /// # Shapes
    /// `[1]`
    pub regulariser: Option<Tensor<1>>,
}

/// Any model remem can train, evaluate and stream.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // moved at most once per optimiser step: 1 KB is nothing there
pub enum Model {
    /// Recurrent Memory Transformer (with `memory_tokens = 0`: the plain segment-level Transformer).
    Rmt(Rmt),
    /// Transformer-XL, MemTr-XL, the full-attention Transformer, or the infinity-former.
    Xl(Xl),
}

impl Model {
    /// Build the model `config` describes on `device`, with fresh weights drawn from `seed`
    /// (see [`Init`]: the same seed gives the same weights on any device, whatever else the
    /// process does).
    pub fn new(config: &ModelConfig, seed: u64, device: &Device) -> Self {
        let mut init = Init::new(seed, device);
        match config.kind {
            ModelKind::Rmt => Model::Rmt(Rmt::new(config, &mut init)),
            ModelKind::Transformer | ModelKind::Xl | ModelKind::Memxl | ModelKind::Infinity => {
                Model::Xl(Xl::new(config, &mut init))
            }
        }
    }

    /// The generator the model's dropout layers draw from; the training loop reseeds it before
    /// each step, so a step's masks depend on the run's seed and the step only.
    pub fn noise(&self) -> &Noise {
        match self {
            Model::Rmt(m) => m.noise(),
            Model::Xl(m) => m.noise(),
        }
    }

    /// The state a fresh sequence starts from.
    pub fn init_state(&self, batch: usize, device: &Device) -> State {
        match self {
            Model::Rmt(m) => m.init_state(batch, device),
            Model::Xl(m) => m.init_state(batch, device),
        }
    }

    /// Process one segment: tokens in, logits and the next state out.
    ///
    /// # Shapes
    /// - tokens: `[batch, seg_len]` with `seg_len <= segment_len`
    /// - logits: `[batch, seg_len, vocab]`
    pub fn step(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
    ) -> (StepOutput, State) {
        match self {
            Model::Rmt(m) => m.step(tokens, state, return_attention),
            Model::Xl(m) => m.step(tokens, state, return_attention),
        }
    }

    /// [`Model::step`] for a segment after which no state is needed (the last of a sequence, a
    /// prediction from part of a segment): the same output, with the work for the next state
    /// left out where the model can (RMT does not compute the memory it would write).
    ///
    /// # Shapes
    /// as [`Model::step`]
    pub fn last_step(&self, tokens: Tensor<2, Int>, state: State) -> StepOutput {
        match self {
            Model::Rmt(m) => m.last_step(tokens, state),
            Model::Xl(m) => m.step(tokens, state, false).0,
        }
    }

    /// Tokens the model reads per step of `task`: a segment, or the whole input for the
    /// full-attention Transformer.
    pub fn step_len(&self, task: &crate::task::Task) -> usize {
        if self.config().kind.whole_input() {
            task.input_len()
        } else {
            task.segment_len()
        }
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &ModelConfig {
        match self {
            Model::Rmt(m) => m.config(),
            Model::Xl(m) => m.config(),
        }
    }
}
