//! The sequence models behind one segment-step interface.
//!
//! Every model implements [`SegmentModel`] (`init_state`, then `step` over one segment), so
//! training, evaluation, streaming and the browser demo are written once; [`Model`] is any of
//! them, chosen by the config.

pub mod armt;
pub mod backbone;
pub mod bert;
pub mod config;
pub mod infinity;
pub mod llama;
pub mod ltm_llama;
pub mod rmt;
pub mod rmt_bert;
pub mod rmt_llama;
pub mod state;
pub mod xl;

use burn::prelude::*;

use crate::error::Result;
use crate::nn::{Density, Init, Noise};

pub use armt::Armt;
pub use backbone::Architecture;
pub use bert::{Bert, BertConfig};
pub use config::{BackboneConfig, Layout, ModelConfig, ModelKind, Positions};
pub use llama::{Llama, LlamaConfig};
pub use ltm_llama::LlamaLtm;
pub use rmt::{Rmt, attention_mask};
pub use rmt_bert::BertRmt;
pub use rmt_llama::LlamaRmt;
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
    /// RMT on a pretrained Llama decoder, or the decoder alone (`model.backbone`).
    Llama(LlamaRmt),
    /// RMT on a pretrained BERT encoder (`model.backbone`).
    Bert(BertRmt),
    /// The infinity-former's long-term memory in a pretrained Llama decoder's layers
    /// (`model.backbone` with `kind = "infinity"`).
    LlamaLtm(LlamaLtm),
    /// The Associative Recurrent Memory Transformer.
    Armt(Armt),
}

impl Model {
    /// This model for a streaming session: each attention layer's query, key and value
    /// weights packed once instead of on every call (see
    /// [`crate::nn::Attention::for_inference`]). Only a session's own copy is packed: the
    /// packed weights do not follow later changes to the model's.
    pub(crate) fn for_inference(self) -> Self {
        match self {
            Model::Rmt(m) => Model::Rmt(m.for_inference()),
            Model::Xl(m) => Model::Xl(m.for_inference()),
            Model::Bert(m) => Model::Bert(m.for_inference()),
            Model::Armt(m) => Model::Armt(m.for_inference()),
            // The Llama backbone has attention of its own (grouped queries, rotary positions).
            Model::Llama(_) | Model::LlamaLtm(_) => self,
        }
    }

    /// This model for one training step over several segments on `device`, where that saves
    /// work: the attention's query, key and value weights packed once for all segments (see
    /// [`crate::nn::Attention::for_training_step`]) where training reads them packed; `None`
    /// elsewhere (the pretrained backbones; see [`Rmt`](rmt::Rmt) and [`Xl`](xl::Xl)).
    #[cfg(feature = "train")]
    pub(crate) fn for_training_step(&self, device: &Device) -> Option<Self> {
        match self {
            Model::Rmt(m) => m.for_training_step(device).map(Model::Rmt),
            Model::Xl(m) => m.for_training_step(device).map(Model::Xl),
            Model::Armt(m) => m.for_training_step(device).map(Model::Armt),
            _ => None,
        }
    }

    /// Whether [`Model::step_rows`] and [`Model::head`] serve this model: RMT and the
    /// Transformer-XL family (not the pretrained backbones).
    #[cfg(feature = "train")]
    pub(crate) fn splits_head(&self) -> bool {
        matches!(self, Model::Rmt(_) | Model::Xl(_))
    }

    /// [`SegmentModel::step`] without the output head, for a caller that runs the head once
    /// over several segments' rows ([`Model::head`]): the segment's final rows, the next state
    /// when `write` (the Transformer-XL family always returns it), and the loss's regulariser
    /// term if any.
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`
    /// - rows: `[batch, t, d_model]`
    ///
    /// # Panics
    /// For a model that does not [split its head](Model::splits_head).
    #[cfg(feature = "train")]
    pub(crate) fn step_rows(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        write: bool,
    ) -> (Tensor<3>, Option<State>, Option<Tensor<1>>) {
        match self {
            Model::Rmt(m) => {
                let (rows, next) = m.step_rows(tokens, state, write);
                (rows, next, None)
            }
            Model::Xl(m) => {
                let (rows, next, regulariser) = m.step_rows(tokens, state);
                (rows, Some(next), regulariser)
            }
            _ => panic!("step_rows: this model runs its head inside its step"),
        }
    }

    /// Every segment's final rows at once where the model's state carries no gradient
    /// (Transformer-XL: [`Xl::window_rows`]), for a caller that runs the head itself; `None`
    /// where the segments must run one after another.
    ///
    /// # Shapes
    /// - tokens: `[batch, segments * seg_len]`
    /// - output: `[batch, segments * seg_len, d_model]`
    #[cfg(feature = "train")]
    pub(crate) fn window_rows(&self, tokens: Tensor<2, Int>, seg_len: usize) -> Option<Tensor<3>> {
        match self {
            Model::Xl(m) => m.window_rows(tokens, seg_len),
            _ => None,
        }
    }

    /// The output head over final rows from [`Model::step_rows`].
    ///
    /// # Shapes
    /// - rows: `[batch, t, d_model]`
    /// - output: `[batch, t, vocab]`
    ///
    /// # Panics
    /// For a model that does not [split its head](Model::splits_head).
    #[cfg(feature = "train")]
    pub(crate) fn head(&self, rows: Tensor<3>) -> Tensor<3> {
        match self {
            Model::Rmt(m) => m.head(rows),
            Model::Xl(m) => m.head(rows),
            _ => panic!("head: this model runs its head inside its step"),
        }
    }

    /// Build the model `config` describes on `device`, with fresh weights drawn from `seed`
    /// (see [`Init`]: the same seed gives the same weights on any device, whatever else the
    /// process does).
    ///
    /// # Panics
    /// On a config with a backbone, which needs reading a file: use [`Model::build`].
    pub fn new(config: &ModelConfig, seed: u64, device: &Device) -> Self {
        assert!(
            config.backbone.is_none(),
            "a model on a backbone is built with Model::build"
        );
        let mut init = Init::new(seed, device);
        match config.kind {
            ModelKind::Rmt => Model::Rmt(Rmt::new(config, &mut init)),
            ModelKind::Armt => Model::Armt(Armt::new(config, &mut init)),
            ModelKind::Transformer | ModelKind::Xl | ModelKind::Memxl | ModelKind::Infinity => {
                Model::Xl(Xl::new(config, &mut init))
            }
        }
    }

    /// [`Model::new`], or for a config with a backbone the backbone read from its file with
    /// the new weights (memory) drawn from `seed`. The config's sizes must be the backbone's
    /// ([`ModelConfig::with_backbone`]); a file that changed since is an error.
    pub fn build(config: &ModelConfig, seed: u64, device: &Device) -> Result<Self> {
        let Some(backbone) = &config.backbone else {
            return Ok(Model::new(config, seed, device));
        };
        if let Some(digest) = &backbone.digest {
            let now = llama::file_digest(&backbone.path)?;
            if &now != digest {
                return Err(crate::error::Error::Backbone {
                    path: backbone.path.clone(),
                    reason: format!(
                        "the file changed since the model was trained on it (digest {now}, \
                         recorded {digest})"
                    ),
                });
            }
        }
        let sized_as = |arch: Architecture| -> Result<()> {
            let sized = config.with_backbone(&arch);
            if &sized != config {
                return Err(crate::error::Error::Backbone {
                    path: backbone.path.clone(),
                    reason: format!(
                        "its architecture ({}) is not the one the model was built on ({})",
                        sized.fingerprint(),
                        config.fingerprint()
                    ),
                });
            }
            Ok(())
        };
        let mut init = Init::new(seed, device);
        // Only a folder's config.json is read to tell the two apart: a GGUF is read once, by
        // the loader.
        match backbone::bert_config(&backbone.path)? {
            None => {
                let llama = Llama::load(&backbone.path, device)?;
                sized_as(Architecture::Llama(llama.config().clone()))?;
                Ok(match config.kind {
                    ModelKind::Infinity => Model::LlamaLtm(LlamaLtm::new(config, llama, &mut init)),
                    _ => Model::Llama(LlamaRmt::new(config, llama, &mut init)),
                })
            }
            Some(_) => {
                let (bert, bert_config) = Bert::load(&backbone.path, device)?;
                sized_as(Architecture::Bert(bert_config))?;
                let specials = rmt_bert::Specials::of(&backbone.path)?;
                Ok(Model::Bert(BertRmt::new(config, bert, specials, &mut init)))
            }
        }
    }

    /// The token embedding table `[vocab, d_model]`.
    pub fn token_embedding(&self) -> &burn::nn::Embedding {
        match self {
            Model::Rmt(m) => m.token_embedding(),
            Model::Xl(m) => m.token_embedding(),
            Model::Llama(m) => m.llama().token_embedding(),
            Model::Bert(m) => m.bert().token_embedding(),
            Model::LlamaLtm(m) => m.llama().token_embedding(),
            Model::Armt(m) => m.token_embedding(),
        }
    }

    /// Tokens the model reads per step of an input of `input_len` tokens: a segment, or the
    /// whole input for the full-attention Transformer.
    pub fn step_len(&self, input_len: usize) -> usize {
        if self.config().kind.whole_input() {
            input_len
        } else {
            self.config().segment_len
        }
    }
}

/// The segment step every remem model implements, so training, evaluation, streaming and the
/// page are written once against it.
///
/// A model reads a long input one segment at a time: [`SegmentModel::init_state`] gives the
/// state a sequence starts from, [`SegmentModel::step`] reads a segment and returns its logits
/// and the next state. States are built by models only (from `init_state` and `step`, or read
/// back with [`State::from_bytes`] and checked with [`SegmentModel::check_state`]).
pub trait SegmentModel {
    /// The configuration the model was built from.
    fn config(&self) -> &ModelConfig;

    /// The generator the model's dropout layers draw from; the training loop reseeds it before
    /// each step, so a step's masks depend on the run's seed and the step only.
    fn noise(&self) -> &Noise;

    /// The state a fresh sequence of `batch` rows starts from.
    fn init_state(&self, batch: usize, device: &Device) -> State;

    /// Process one segment: tokens in, logits and the next state out. The next state is
    /// attached to the autodiff graph; the caller detaches it where backpropagation through
    /// time stops.
    ///
    /// # Shapes
    /// - tokens: `[batch, seg_len]` with `1 <= seg_len <= segment_len`
    /// - logits: `[batch, seg_len, vocab]`
    fn step(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
    ) -> (StepOutput, State);

    /// [`SegmentModel::step`] for a segment after which no state is needed (the last of a
    /// sequence, a prediction from part of a segment): the same output, with the work for the
    /// next state left out where the model can (RMT does not compute the memory it would
    /// write).
    ///
    /// # Shapes
    /// as [`SegmentModel::step`]
    fn last_step(&self, tokens: Tensor<2, Int>, state: State) -> StepOutput {
        self.step(tokens, state, false).0
    }

    /// Read a segment only to move the state on, its logits not needed (the segments before a
    /// question, in the long retention evaluations): [`SegmentModel::step`]'s next state, with
    /// the output head left out where the model can (a pretrained backbone's head over its
    /// whole vocabulary costs as much as its layers).
    ///
    /// # Shapes
    /// as [`SegmentModel::step`]
    fn advance(&self, tokens: Tensor<2, Int>, state: State) -> State {
        self.step(tokens, state, false).1
    }

    /// Check that `state` fits this model for a batch of `batch`: its kind, its shapes and
    /// finite values (see [`State::check_fits`]). Streaming sessions check every state they
    /// load, so a wrong one is an error, not a failure inside a step.
    fn check_state(&self, state: &State, batch: usize, device: &Device) -> Result<()> {
        let c = self.config();
        let fresh = self.init_state(batch, device);
        let (cache, pending) = (c.cache_len(), c.segment_len);
        state.check_fits(&fresh, [batch, c.d_model], cache, pending, c.ltm.bins)
    }
}

impl SegmentModel for Model {
    fn config(&self) -> &ModelConfig {
        match self {
            Model::Rmt(m) => m.config(),
            Model::Xl(m) => m.config(),
            Model::Llama(m) => m.config(),
            Model::Bert(m) => m.config(),
            Model::LlamaLtm(m) => m.config(),
            Model::Armt(m) => m.config(),
        }
    }

    fn noise(&self) -> &Noise {
        match self {
            Model::Rmt(m) => m.noise(),
            Model::Xl(m) => m.noise(),
            Model::Llama(m) => m.noise(),
            Model::Bert(m) => m.noise(),
            Model::LlamaLtm(m) => m.noise(),
            Model::Armt(m) => m.noise(),
        }
    }

    fn init_state(&self, batch: usize, device: &Device) -> State {
        match self {
            Model::Rmt(m) => m.init_state(batch, device),
            Model::Xl(m) => m.init_state(batch, device),
            Model::Llama(m) => m.init_state(batch, device),
            Model::Bert(m) => m.init_state(batch, device),
            Model::LlamaLtm(m) => m.init_state(batch, device),
            Model::Armt(m) => m.init_state(batch, device),
        }
    }

    fn step(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
    ) -> (StepOutput, State) {
        match self {
            Model::Rmt(m) => m.step(tokens, state, return_attention),
            Model::Xl(m) => m.step(tokens, state, return_attention),
            Model::Llama(m) => m.step(tokens, state, return_attention),
            Model::Bert(m) => m.step(tokens, state, return_attention),
            Model::LlamaLtm(m) => m.step(tokens, state, return_attention),
            Model::Armt(m) => m.step(tokens, state, return_attention),
        }
    }

    fn advance(&self, tokens: Tensor<2, Int>, state: State) -> State {
        match self {
            Model::Rmt(m) => m.advance(tokens, state),
            Model::Xl(m) => m.advance(tokens, state),
            Model::Llama(m) => m.advance(tokens, state),
            Model::Bert(m) => m.advance(tokens, state),
            Model::LlamaLtm(m) => m.advance(tokens, state),
            Model::Armt(m) => m.advance(tokens, state),
        }
    }

    fn last_step(&self, tokens: Tensor<2, Int>, state: State) -> StepOutput {
        match self {
            Model::Rmt(m) => m.last_step(tokens, state),
            Model::Xl(m) => m.last_step(tokens, state),
            Model::Llama(m) => m.last_step(tokens, state),
            Model::Bert(m) => m.last_step(tokens, state),
            Model::LlamaLtm(m) => m.last_step(tokens, state),
            Model::Armt(m) => m.last_step(tokens, state),
        }
    }
}
