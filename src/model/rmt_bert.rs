//! RMT on a pretrained BERT encoder, the recipe of RMT-1M (Bulatov et al., arXiv 2304.11062):
//! memory tokens between `[CLS]` and the segment, read and written at the same rows, every row
//! attending to every other.
//!
//! One segment of `t` tokens, with `M` memory tokens:
//!
//! ```text
//! rows       [ [CLS] | memory (M) | [SEP] | segment (t)      | [SEP]     ]
//! positions  [ 0     | 1 .. M + 1 | M + 1 | M + 2 .. M + 2 + t | M + 2 + t ]
//! mask       none: the encoder is bidirectional
//! ```
//!
//! The memory rows go in as word vectors (BERT's embedding layer adds their positions and
//! normalises them as it does a word's); the written memory is the last layer's states at the
//! memory rows, mapped back into the word space by a learned `read` layer (a scaled identity at
//! first). The answer is hidden from the input as the encoder layout hides it (the task's
//! padding, id 0, BERT's `[PAD]`, reads as `[MASK]`) and predicted at its own rows by an answer
//! head: a new `d x d` transform (the identity at first) and the word embeddings, tied, as
//! BERT's masked-language-model head scores words.

use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::prelude::*;

use super::bert::Bert;
use super::config::ModelConfig;
use super::state::State;
use super::{SegmentModel, StepOutput};
use crate::error::{Error, Result};
use crate::nn::{Constants, Init, Mask, Noise, linear, matmul, scaled_identity};

/// The ids of BERT's special tokens, from its tokenizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Specials {
    /// `[CLS]`, opening every segment.
    pub cls: u32,
    /// `[SEP]`, after the memory and after the segment.
    pub sep: u32,
    /// `[MASK]`, read where the answer is hidden.
    pub mask: u32,
}

impl Specials {
    /// The special tokens of the BERT tokenizer in the folder `dir` (`tokenizer.json` or
    /// `vocab.txt`).
    ///
    /// # Errors
    /// [`Error::Backbone`] when the tokenizer lacks one of them; the tokenizer's read errors.
    #[cfg(not(target_family = "wasm"))]
    pub fn of(dir: &Path) -> Result<Self> {
        let tokenizer = crate::tokenizer::pretrained::Pretrained::shared(dir)?;
        let id = |name: &str| {
            tokenizer.token_id(name).ok_or_else(|| Error::Backbone {
                path: dir.to_path_buf(),
                reason: format!("its tokenizer has no {name} token (a BERT tokenizer has)"),
            })
        };
        Ok(Specials {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            mask: id("[MASK]")?,
        })
    }

    /// Pretrained tokenizers are not part of the wasm build.
    #[cfg(target_family = "wasm")]
    pub fn of(dir: &Path) -> Result<Self> {
        Err(Error::Backbone {
            path: dir.to_path_buf(),
            reason: "pretrained tokenizers are not part of the wasm build".into(),
        })
    }
}

/// RMT on a BERT encoder.
#[derive(Module, Debug)]
pub struct BertRmt {
    backbone: Bert,
    /// The initial memory: M learned word vectors `[M, d]`.
    memory: Param<Tensor<2>>,
    /// Written memory (last-layer states) to the word space it is read in.
    read: Linear,
    /// The answer head's transform, before the tied word embeddings.
    head: Linear,
    /// The answer head's per-word bias `[vocab]`.
    head_bias: Param<Tensor<1>>,
    #[module(skip)]
    specials: [u32; 3],
    #[module(skip)]
    noise: Noise,
    #[module(skip)]
    masks: Constants,
    #[module(skip)]
    config: ModelConfig,
}

impl BertRmt {
    /// This model for a streaming session (see [`crate::nn::Attention::for_inference`]).
    pub(crate) fn for_inference(self) -> Self {
        Self {
            backbone: self.backbone.for_inference(),
            ..self
        }
    }

    /// Memory on `bert` as `config` says (its sizes must be the backbone's, see
    /// [`ModelConfig::with_backbone`]); new weights from `init`. The backbone's weights stop
    /// training unless the config's backbone says `train = true`.
    pub fn new(config: &ModelConfig, bert: Bert, specials: Specials, init: &mut Init) -> Self {
        let bert = super::backbone::as_configured(config, bert);
        let (m, d) = (config.memory_len(), config.d_model);
        let words = bert.token_embedding().weight.val();
        let scale = words.square().mean().sqrt().into_scalar::<f32>() as f64;
        let device = init.device().clone();
        BertRmt {
            backbone: bert,
            memory: init.normal([m, d], scale),
            // The last layer's states are normed to about unit scale; words are `scale`.
            read: scaled_identity(d, scale, &device),
            head: scaled_identity(d, 1.0, &device),
            head_bias: Param::from_tensor(Tensor::zeros([config.vocab_size], &device)),
            specials: [specials.cls, specials.sep, specials.mask],
            noise: init.noise(),
            masks: Constants::default(),
            config: config.clone(),
        }
    }

    /// The backbone.
    pub fn bert(&self) -> &Bert {
        &self.backbone
    }

    /// A segment's logits (when `logits`) and the next state.
    fn run(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
        logits: bool,
    ) -> (Option<StepOutput>, State) {
        let [batch, t] = tokens.dims();
        let (m, d) = (self.config.memory_len(), self.config.d_model);
        assert!(
            t >= 1 && t <= self.config.segment_len,
            "segment of {t} tokens, model takes 1..={}",
            self.config.segment_len
        );
        let device = tokens.device();
        let [cls, sep, mask] = self.specials;
        let State::Memory { memory } = state else {
            panic!("RMT on BERT was given a state without memory")
        };
        let hidden = tokens.clone().equal_elem(crate::task::PAD as i64);
        let tokens = tokens.mask_fill(hidden, mask as i64);
        // The special tokens' rows straight from the table (no ids to upload every step).
        let table = self.backbone.token_embedding().weight.val();
        let special = |id: u32| {
            let id = id as usize;
            let row = table.clone().slice(s![id..id + 1, ..]);
            row.unsqueeze::<3>().expand([batch, 1, d])
        };
        let rows = Tensor::cat(
            vec![
                special(cls),
                memory,
                special(sep),
                self.backbone.token_embedding().forward(tokens),
                special(sep),
            ],
            1,
        );
        let n = m + t + 3;
        let bias = self.masks.get(&[n], &device, || Mask::open(n, n));
        let (h, attention) =
            self.backbone
                .hidden(self.backbone.embed_vectors(rows), bias, return_attention);
        let written = h.clone().slice(s![.., 1..1 + m, ..]);
        let next = State::Memory {
            memory: linear(&self.read, written),
        };
        if !logits {
            return (None, next);
        }
        let segment = h.slice(s![.., m + 2..m + 2 + t, ..]);
        let vocab = self.config.vocab_size;
        let logits = matmul(
            linear(&self.head, segment).reshape([batch * t, d]),
            table.transpose(),
        )
        .reshape([batch, t, vocab])
            + self.head_bias.val().unsqueeze::<3>();
        let output = StepOutput {
            logits,
            attention,
            density: None,
            regulariser: None,
        };
        (Some(output), next)
    }
}

impl SegmentModel for BertRmt {
    fn config(&self) -> &ModelConfig {
        &self.config
    }

    fn noise(&self) -> &Noise {
        &self.noise
    }

    /// The learned initial memory repeated over the batch.
    fn init_state(&self, batch: usize, _device: &Device) -> State {
        State::initial_memory(Some(&self.memory), batch)
    }

    /// Read one segment with the memory in `state`; padding (id 0) reads as `[MASK]`.
    ///
    /// # Shapes
    /// - tokens: `[batch, t]`, `1 <= t <= segment_len`
    /// - logits: `[batch, t, vocab]` (the answer head at every segment row)
    /// - memory in `state`: `[batch, M, d_model]`
    fn step(
        &self,
        tokens: Tensor<2, Int>,
        state: State,
        return_attention: bool,
    ) -> (StepOutput, State) {
        let (out, next) = self.run(tokens, state, return_attention, true);
        (out.expect("asked for logits"), next)
    }

    /// [`SegmentModel::step`]'s next memory, without the answer head.
    fn advance(&self, tokens: Tensor<2, Int>, state: State) -> State {
        self.run(tokens, state, false, false).1
    }
}
