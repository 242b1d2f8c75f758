//! Streaming inference: read an input of any length segment by segment, keeping only the model's
//! memory state, then predict or generate from it.
//!
//! ```no_run
//! # fn main() -> remem::Result<()> {
//! use remem::infer::{Sampling, Session};
//! let device = remem::device::select(remem::DeviceChoice::Cpu)?.device;
//! let mut session = Session::from_checkpoint("runs/copy-rmt-1/checkpoint.safetensors".as_ref(), &device)?;
//! let ids = session.tokenizer().encode("31415926|", session.vocab_size())?;
//! session.feed(&ids)?;
//! let answer = session.generate(16, &Sampling::greedy())?;
//! println!("{}", session.tokenizer().decode(&answer));
//! session.save_file("memory.state".as_ref())?;
//! # Ok(())
//! # }
//! ```

pub mod sampling;
mod saved;

use std::path::Path;

use burn::prelude::*;

use crate::error::{Error, Result};
use crate::model::{Layout, Model, SegmentModel, State};
use crate::threads::on_pool_if_started;
use crate::tokenizer::Tokenizer;
use crate::train::{self, Checkpoint};

pub use sampling::Sampling;

/// One segment the session has read.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Position of the segment in the stream (0 = first).
    pub index: u64,
    /// The segment's tokens.
    pub tokens: Vec<u32>,
    /// The model's logits at every position (next token for decoder models).
    ///
    /// # Shapes
    /// `[seg_len, vocab]`
    pub logits: Tensor<2>,
    /// Per layer, attention weights over the model's layout (see [`crate::model::StepOutput`]),
    /// when [`Session::record_attention`] is on.
    ///
    /// # Shapes
    /// each `[1, n_heads, layout_len, layout_len]`
    pub attention: Option<Vec<Tensor<4>>>,
    /// Per layer, the infinity-former's attention densities over its long-term memory `[0, 1]`
    /// (one per head and token; [`crate::nn::Density::on_grid`] draws them), when
    /// [`Session::record_attention`] is on.
    pub density: Option<Vec<crate::nn::Density>>,
}

/// A model reading one stream: the memory state, the tokens of an unfinished segment, and the
/// next-token logits after the last full one.
///
/// Feeding a sequence in one call, segment by segment or in pieces of any size gives the same
/// segments, logits and memory as the training-time loop over the same segments.
///
/// Once the program has built remem's thread pool ([`crate::threads::run_on_pool`]), each
/// segment and each prediction runs on it, whichever thread calls the session: on the CPU,
/// parallel work started from outside the pool costs two thread wake-ups per operation. A
/// program that never asks for the pool gets no threads from the session beyond Burn's own.
#[derive(Debug)]
pub struct Session {
    model: Model,
    device: Device,
    id: String,
    tokenizer: Tokenizer,
    step_len: usize,
    state: State,
    /// Tokens of the segment being filled (fewer than `step_len`).
    pending: Vec<u32>,
    /// Next-token logits after the last full segment, `[vocab]`.
    last: Option<Tensor<1>>,
    /// Tokens read into memory (full segments only).
    consumed: u64,
    attention: bool,
    /// Whether predictions from an unfinished segment run it padded to a whole one.
    pad: bool,
}

impl Session {
    /// A session over `model` (for inference: built on a device without autodiff), reading
    /// `model.config().segment_len` tokens per step.
    ///
    /// Reads the weights back once to identify the model, synchronously: in a browser on WebGPU
    /// use [`Session::from_checkpoint_bytes`].
    pub fn new(model: Model, device: &Device) -> Result<Self> {
        let step_len = model.config().segment_len;
        let (weights, _) = crate::io::module_tensors(&model).map_err(Error::State)?;
        let hash = crate::io::weights_hash(&weights).map_err(Error::State)?;
        let id = train::checkpoint::model_id(model.config(), hash);
        Ok(Self::with_step_len(model, device, step_len, id))
    }

    /// A pretrained decoder alone (no memory: a GGUF file or a Hugging Face folder, see
    /// [`crate::model::Llama::load`]) reading `segment_len` tokens per step, each segment on its
    /// own, with its own tokenizer.
    pub fn from_backbone(path: &Path, segment_len: usize, device: &Device) -> Result<Self> {
        let llama = match crate::model::Architecture::open(path)? {
            crate::model::Architecture::Llama(c) => c,
            crate::model::Architecture::Bert(_) => {
                return Err(Error::Backbone {
                    path: path.to_path_buf(),
                    reason: "a BERT encoder alone does not continue text: stream a checkpoint \
                             of RMT trained on it instead"
                        .into(),
                });
            }
        };
        let tokenizer = Tokenizer::Pretrained {
            path: path.to_path_buf(),
        };
        let config = crate::model::ModelConfig {
            memory_tokens: 0,
            segment_len,
            tokenizer: Some(tokenizer.clone()),
            backbone: Some(crate::model::BackboneConfig {
                path: path.to_path_buf(),
                train: false,
                digest: None,
            }),
            ..Default::default()
        }
        .with_backbone(&crate::model::Architecture::Llama(llama.clone()));
        config.validate()?;
        if segment_len > llama.max_position_embeddings {
            return Err(Error::config(
                "model.segment_len",
                format!(
                    "the backbone reads at most {} positions",
                    llama.max_position_embeddings
                ),
            ));
        }
        Self::new(Model::build(&config, 0, device)?, device)
    }

    /// Load the model of a checkpoint file onto `device`. The full-attention Transformer reads
    /// its whole training input per step (it keeps nothing between steps).
    pub fn from_checkpoint(path: &Path, device: &Device) -> Result<Self> {
        Self::from_loaded(&Checkpoint::load(path)?, path, device)
    }

    /// As [`Session::from_checkpoint`], from the bytes of a checkpoint file (`name` names it in
    /// errors). Nothing is read back from the device, so this works on WebGPU in a browser.
    pub fn from_checkpoint_bytes(bytes: &[u8], name: &str, device: &Device) -> Result<Self> {
        let path = Path::new(name);
        Self::from_loaded(&Checkpoint::from_bytes(bytes, path)?, path, device)
    }

    fn from_loaded(checkpoint: &Checkpoint, path: &Path, device: &Device) -> Result<Self> {
        let mut config = checkpoint.config.clone();
        // A model trained on text files runs without them (a browser has none): the config was
        // resolved when it trained, and the session needs only its tokenizer and input length.
        let trained = match &config.model.tokenizer {
            Some(tokenizer) if !config.task.data.is_empty() && config.model.backbone.is_none() => {
                Some((
                    config.task.segments * config.model.segment_len,
                    tokenizer.clone(),
                ))
            }
            _ => None,
        };
        let (input_len, tokenizer) = match trained {
            Some(known) => known,
            None => {
                let task = config.resolve().map_err(|e| Error::Checkpoint {
                    path: path.to_path_buf(),
                    reason: format!("its config does not resolve: {e}"),
                })?;
                // Checkpoints written before tokenizers were recorded get their task's.
                let tokenizer = config.model.tokenizer.unwrap_or_else(|| task.tokenizer());
                (task.input_len(), tokenizer)
            }
        };
        let model = checkpoint.load_model(path, device)?;
        let step_len = model.step_len(input_len);
        let mut session = Self::with_step_len(model, device, step_len, checkpoint.model_id()?);
        session.tokenizer = tokenizer;
        Ok(session)
    }

    /// `id` names the architecture and the weights ([`train::checkpoint::model_id`]), so a
    /// state saved from other weights of the same shape is refused too.
    fn with_step_len(model: Model, device: &Device, step_len: usize, id: String) -> Self {
        let tokenizer = model.config().tokenizer.clone().unwrap_or(Tokenizer::Ids);
        let state = model.init_state(1, device);
        Self {
            model: model.for_inference(),
            device: device.clone(),
            id,
            tokenizer,
            step_len,
            state,
            pending: Vec::new(),
            last: None,
            consumed: 0,
            attention: false,
            pad: !crate::device::is_cpu(device),
        }
    }

    /// Also return each segment's attention weights from [`Session::feed_with`].
    pub fn record_attention(&mut self, on: bool) {
        self.attention = on;
    }

    /// Whether [`Session::next_logits`] (and so generation) runs an unfinished segment padded
    /// to a whole one; on by default on GPUs, off on the CPU. A decoder's token sees only the
    /// tokens before it, so the padding changes no logit that is read. On a GPU every call then
    /// has the same shapes, and the runtime compiles and tunes its kernels for one segment
    /// length instead of one per length (most of a browser's first answer); on the CPU the
    /// padding would only be computed for nothing.
    pub fn pad_predictions(&mut self, on: bool) {
        self.pad = on;
    }

    /// The model, as the session runs it: its attention layers keep packed copies of their
    /// query, key and value weights, which later changes to the weights would not reach, so
    /// train a model of your own rather than this one.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// How this model's ids read as text.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// Token ids the model knows: `0..vocab_size`.
    pub fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    /// Tokens per step.
    pub fn step_len(&self) -> usize {
        self.step_len
    }

    /// The id of the model (architecture and weights) that saved states are checked against.
    pub fn model_id(&self) -> &str {
        &self.id
    }

    /// The memory state after the last full segment.
    pub fn memory(&self) -> &State {
        &self.state
    }

    /// Tokens read into memory so far (full segments).
    pub fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Tokens waiting for their segment to fill.
    pub fn pending(&self) -> &[u32] {
        &self.pending
    }

    /// Forget everything read: back to the model's initial state.
    pub fn reset(&mut self) {
        self.state = self.model.init_state(1, &self.device);
        self.pending.clear();
        self.last = None;
        self.consumed = 0;
    }

    /// Read `tokens`; every segment that fills is processed and its memory kept.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<()> {
        self.feed_with(tokens, |_| {})
    }

    /// As [`Session::feed`], handing each processed segment to `on_segment`.
    ///
    /// Nothing is read back from the device here, so a long stream is not slowed by transfers.
    pub fn feed_with(&mut self, tokens: &[u32], mut on_segment: impl FnMut(Segment)) -> Result<()> {
        self.check(tokens)?;
        let mut rest = tokens;
        while self.pending.len() + rest.len() >= self.step_len {
            let (head, tail) = rest.split_at(self.step_len - self.pending.len());
            rest = tail;
            let mut segment = std::mem::take(&mut self.pending);
            segment.extend_from_slice(head);
            let state = std::mem::replace(&mut self.state, State::Empty);
            let (ids, model, attention) = (self.ids(&segment), &self.model, self.attention);
            let (out, next) = on_pool_if_started(|| model.step(ids, state, attention));
            self.state = next;
            let logits = out.logits.squeeze_dim::<2>(0);
            let n = segment.len();
            self.last = Some(logits.clone().slice(s![n - 1..n, ..]).squeeze_dim::<1>(0));
            let index = self.consumed / self.step_len as u64;
            self.consumed += n as u64;
            on_segment(Segment {
                index,
                tokens: segment,
                logits,
                attention: out.attention,
                density: out.density,
            });
        }
        self.pending.extend_from_slice(rest);
        Ok(())
    }

    /// Logits for the token after everything fed (reading the unfinished segment, without
    /// writing it to memory).
    ///
    /// # Shapes
    /// `[vocab]`
    pub fn next_logits(&self) -> Result<Tensor<1>> {
        if self.model.config().layout == Layout::Encoder {
            return Err(Error::Input(
                "an encoder-layout model predicts hidden answer positions, not next tokens; \
                 use a decoder model to predict or generate"
                    .into(),
            ));
        }
        if self.pending.is_empty() {
            return self.last.clone().ok_or_else(|| {
                Error::Input("nothing has been read: a prediction needs at least one token".into())
            });
        }
        let n = self.pending.len();
        let mut tokens = self.pending.clone();
        if self.pad {
            // Any id will do: nothing before the padding reads it.
            tokens.resize(self.step_len, 0);
        }
        let (ids, state, model) = (self.ids(&tokens), self.state.clone(), &self.model);
        let out = on_pool_if_started(|| model.last_step(ids, state));
        Ok(out
            .logits
            .slice(s![0..1, n - 1..n, ..])
            .reshape([self.vocab_size()]))
    }

    /// Read `tokens` (`1..=step_len` of them) as one segment now, even a short one, and keep
    /// its memory: an encoder answering a whole input reads its first, short segment this way,
    /// so the segments after it end where the answer does (see [`Session::answer`]).
    ///
    /// # Errors
    /// [`Error::Input`] when a segment is unfinished, or for a wrong number of tokens.
    pub fn read_segment(&mut self, tokens: &[u32]) -> Result<()> {
        self.check(tokens)?;
        if !self.pending.is_empty() {
            return Err(Error::Input(format!(
                "{} tokens wait for their segment: a segment of its own starts after a full one",
                self.pending.len()
            )));
        }
        if tokens.is_empty() || tokens.len() > self.step_len {
            return Err(Error::Input(format!(
                "a segment holds 1..={} tokens, not {}",
                self.step_len,
                tokens.len()
            )));
        }
        let state = std::mem::replace(&mut self.state, State::Empty);
        let (ids, model) = (self.ids(tokens), &self.model);
        let (out, next) = on_pool_if_started(|| model.step(ids, state, false));
        self.state = next;
        let n = tokens.len();
        let logits = out.logits.squeeze_dim::<2>(0);
        self.last = Some(logits.slice(s![n - 1..n, ..]).squeeze_dim::<1>(0));
        self.consumed += n as u64;
        Ok(())
    }

    /// An encoder-layout model's answer to everything fed: `slots` hidden positions after it
    /// (the task's padding, which the encoder reads as hidden), each predicted at its own
    /// position, as the retention tasks train it. When the unfinished segment and the slots
    /// do not fit one segment, its first tokens are read as a segment of their own first, so
    /// the slots end the last one, as in training. The session is left as it was.
    pub fn answer(&self, slots: usize) -> Result<Vec<u32>> {
        if self.model.config().layout != Layout::Encoder {
            return Err(Error::Input(
                "a decoder predicts the next token: use predict or generate".into(),
            ));
        }
        if slots == 0 || slots > self.step_len {
            return Err(Error::Input(format!(
                "an answer takes 1..={} slots (one segment), not {slots}",
                self.step_len
            )));
        }
        let mut state = self.state.clone();
        let mut tail: &[u32] = &self.pending;
        if tail.len() + slots > self.step_len {
            let (head, rest) = tail.split_at(tail.len() + slots - self.step_len);
            let (ids, model) = (self.ids(head), &self.model);
            state = on_pool_if_started(|| model.advance(ids, state));
            tail = rest;
        }
        let mut segment = tail.to_vec();
        segment.extend(std::iter::repeat_n(crate::task::PAD, slots));
        let (ids, model) = (self.ids(&segment), &self.model);
        let out = on_pool_if_started(|| model.last_step(ids, state));
        let n = segment.len();
        let best = out.logits.slice(s![0..1, n - slots..n, ..]).argmax(2);
        Ok(best.into_data().iter::<i64>().map(|t| t as u32).collect())
    }

    /// The most likely next token.
    pub fn predict(&self) -> Result<u32> {
        let logits = self.next_logits()?.argmax(0).into_data();
        Ok(logits.iter::<i64>().next().expect("one id") as u32)
    }

    /// Generate `n` tokens, each fed back as input: greedy, or sampled as `sampling` says.
    pub fn generate(&mut self, n: usize, sampling: &Sampling) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        self.generate_with(n, sampling, |token| {
            out.push(token);
            std::ops::ControlFlow::Continue(())
        })?;
        Ok(out)
    }

    /// [`Session::generate`], handing each token to `on_token` as soon as it is made (to print
    /// it, say) instead of collecting them; `on_token` may stop the generation early by
    /// returning `Break`. Uses no memory per token, so `n` may be as large as the caller likes.
    pub fn generate_with(
        &mut self,
        n: usize,
        sampling: &Sampling,
        mut on_token: impl FnMut(u32) -> std::ops::ControlFlow<()>,
    ) -> Result<()> {
        let mut sampler = sampling.sampler();
        for _ in 0..n {
            let token = if sampling.is_greedy() {
                self.predict()?
            } else {
                let logits: Vec<f32> = self
                    .next_logits()?
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec()
                    .map_err(|e| Error::Input(format!("logits: {e:?}")))?;
                sampler.draw(&logits)
            };
            self.feed(&[token])?;
            if on_token(token).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The session as the bytes of a safetensors file (see [`crate::io`]): memory state,
    /// unfinished segment, last logits, and the model id they belong to.
    pub fn save(&self) -> Result<Vec<u8>> {
        saved::save(self)
    }

    /// Restore a session saved by [`Session::save`] (in this process or another); refuses a
    /// state saved from another model.
    pub fn load(&mut self, bytes: &[u8]) -> Result<()> {
        saved::load(self, bytes)
    }

    /// [`Session::save`] to a file, atomically (as checkpoints are written).
    pub fn save_file(&self, path: &Path) -> Result<()> {
        train::checkpoint::write_atomic(path, &self.save()?)
    }

    /// [`Session::load`] from a file.
    pub fn load_file(&mut self, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        self.load(&bytes).map_err(|e| match e {
            Error::State(reason) => Error::State(format!("{}: {reason}", path.display())),
            e => e,
        })
    }

    fn check(&self, tokens: &[u32]) -> Result<()> {
        let vocab = self.vocab_size();
        match tokens.iter().position(|&t| t as usize >= vocab) {
            Some(i) => Err(Error::Input(format!(
                "token id {} at position {i} is outside the vocabulary (0..{vocab})",
                tokens[i]
            ))),
            None => Ok(()),
        }
    }

    fn ids(&self, tokens: &[u32]) -> Tensor<2, Int> {
        let data: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        Tensor::from_data(TensorData::new(data, [1, tokens.len()]), &self.device)
    }
}
