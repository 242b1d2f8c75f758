//! What the page shows, computed from the library's streaming [`Session`]: a model reads a
//! question segment by segment, then writes its answer token by token; every processed segment
//! comes back with its attention, the change of the memory and (infinity-former) the density
//! over the continuous memory.
//!
//! Everything read back from the device goes through `into_data_async`, so the same code runs
//! natively (the tests) and on WebGPU in a browser, where synchronous reads panic.

use std::collections::VecDeque;

use burn::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::Serialize;

use remem::infer::{Segment, Session};
use remem::model::{Layout, ModelKind, State};
use remem::task::Task;
use remem::train::Checkpoint;
use remem::{Error, Result};

/// Longest question the page accepts, in tokens (each segment is drawn, so a page over this
/// length would be unreadable and slow).
pub const MAX_QUESTION: usize = 4096;

/// Points of `[0, 1]` at which the infinity-former's densities are drawn.
pub const DENSITY_POINTS: usize = 64;

/// The model and task of a loaded checkpoint, for the page's header and controls.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// `rmt`, `xl`, `infinity`, ...
    pub model: String,
    /// `copy`, `associative`, `sort`, ...
    pub task: String,
    /// Segments of the trained input.
    pub segments: usize,
    /// Tokens the model reads per step.
    pub segment_len: usize,
    /// Memory tokens (RMT, MemTr-XL), 0 for the others.
    pub memory_tokens: usize,
    /// Layers and heads (for the attention selectors).
    pub layers: usize,
    /// Heads per layer.
    pub heads: usize,
    /// Optimiser steps the checkpoint was trained for.
    pub trained_steps: usize,
    /// The characters a question may contain, and the separator.
    pub alphabet: String,
    /// The separator character.
    pub separator: String,
}

/// A question and the answer a perfect model gives, as text.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// What the model reads.
    pub question: String,
    /// What it should write.
    pub answer: String,
}

/// Named run of rows or columns of an attention map (`read memory`, `segment`, `cache`, ...).
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// What the rows or columns are.
    pub name: String,
    /// First index.
    pub start: usize,
    /// How many.
    pub len: usize,
}

/// One segment's attention weights, every layer and head.
#[derive(Debug, Clone, Serialize)]
pub struct Attention {
    /// Layers.
    pub layers: usize,
    /// Heads per layer.
    pub heads: usize,
    /// Label of each row (query).
    pub rows: Vec<String>,
    /// Label of each column (key).
    pub cols: Vec<String>,
    /// Row groups: read memory, segment, write memory.
    pub row_groups: Vec<Group>,
    /// Column groups: cache (Transformer-XL), read memory, segment, write memory.
    pub col_groups: Vec<Group>,
    /// Weights, `[layer][head][row][col]` flattened; each row sums to 1.
    pub weights: Vec<f32>,
}

/// How the memory moved in one segment.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryView {
    /// What the slots are.
    pub what: String,
    /// Per slot: cosine similarity to its value before this segment (1 = untouched; for the
    /// first segment, to the memory the model starts from).
    pub change: Vec<f32>,
    /// Per slot: cosine similarity to its first written value (how long the first write
    /// stays); 1 until the memory holds anything.
    pub retention: Vec<f32>,
}

/// The infinity-former's attention densities over its long-term memory `[0, 1]`.
#[derive(Debug, Clone, Serialize)]
pub struct DensityView {
    /// Layers.
    pub layers: usize,
    /// Queries (the segment's tokens).
    pub queries: usize,
    /// Evenly spaced points of `[0, 1]`, ends included.
    pub points: usize,
    /// Densities averaged over heads, `[layer][query][point]` flattened.
    pub values: Vec<f32>,
}

/// One processed segment, as the page draws it.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentView {
    /// Position of the segment in the stream (0 = first).
    pub index: u64,
    /// The segment's tokens as text, one string per token.
    pub tokens: Vec<String>,
    /// Per token: true where the model wrote it (its answer), false where it was given.
    pub generated: Vec<bool>,
    /// Attention over the step's layout.
    pub attention: Attention,
    /// The memory's change, for models with memory slots.
    pub memory: Option<MemoryView>,
    /// Densities over the long-term memory (infinity-former).
    pub density: Option<DensityView>,
}

/// Where a run stands: the answer so far against the truth.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The question, as text.
    pub question: String,
    /// What the model has written so far.
    pub answer: String,
    /// The right answer, when the task can compute it.
    pub truth: Option<String>,
    /// Per answer token: equal to the truth.
    pub correct: Vec<bool>,
    /// Whole answer written and equal to the truth.
    pub solved: bool,
    /// The whole answer has been written.
    pub finished: bool,
    /// Segments processed.
    pub segments: u64,
}

/// A run: the question still to feed and the answer being written.
struct Run {
    question: Vec<u32>,
    queue: VecDeque<u32>,
    answer_len: usize,
    truth: Option<Vec<u32>>,
    answer: Vec<u32>,
    first: Option<Vec<Vec<f32>>>,
    previous: Option<Vec<Vec<f32>>>,
}

/// A loaded model and the run it is on.
pub struct Demo {
    session: Session,
    task: Task,
    info: Info,
    run: Option<Run>,
}

impl Demo {
    /// Load a checkpoint (`name` names it in errors) onto `device`. Refuses encoder-layout
    /// models, which predict hidden positions instead of writing an answer.
    pub fn load(bytes: &[u8], name: &str, device: &Device) -> Result<Self> {
        let checkpoint = Checkpoint::from_bytes(bytes, name.as_ref())?;
        let mut config = checkpoint.config.clone();
        let task = config.resolve().map_err(|e| Error::Checkpoint {
            path: name.into(),
            reason: format!("its config does not resolve: {e}"),
        })?;
        if config.model.layout == Layout::Encoder {
            return Err(Error::Input(format!(
                "{name} is an encoder-layout model; the page runs decoder models, which write \
                 their answer"
            )));
        }
        let mut session = Session::from_checkpoint_bytes(bytes, name, device)?;
        session.record_attention(true);
        let (alphabet, separator) = match session.tokenizer() {
            remem::tokenizer::Tokenizer::Chars { alphabet, sep } => (alphabet.clone(), *sep),
            _ => {
                return Err(Error::Input(format!(
                    "{name} does not read characters; the page shows character tasks"
                )));
            }
        };
        let m = &config.model;
        let info = Info {
            model: format!("{:?}", m.kind).to_lowercase(),
            task: format!("{:?}", task.config().kind).to_lowercase(),
            segments: task.config().segments,
            segment_len: session.step_len(),
            memory_tokens: memory_slots(m),
            layers: m.n_layers,
            heads: m.n_heads,
            trained_steps: checkpoint.progress.step,
            alphabet,
            separator: separator.to_string(),
        };
        Ok(Demo {
            session,
            task,
            info,
            run: None,
        })
    }

    /// The model and task.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// A question of the trained length drawn from the task with `seed`, and its answer.
    pub fn example(&self, seed: u64) -> Example {
        let sample = self.task.sample(&mut StdRng::seed_from_u64(seed));
        let start = sample.answer.iter().position(|&a| a).unwrap_or(0);
        let (question, answer) = sample.tokens.split_at(start);
        let end = sample
            .answer
            .iter()
            .rposition(|&a| a)
            .map_or(start, |e| e + 1);
        Example {
            question: self.session.tokenizer().decode(question),
            answer: self.session.tokenizer().decode(&answer[..end - start]),
        }
    }

    /// Start reading `question` (text in the model's alphabet) from an empty memory.
    ///
    /// # Errors
    /// [`Error::Input`] for an empty question, a character outside the alphabet, or a question
    /// not in the task's format.
    pub fn start(&mut self, question: &str) -> Result<()> {
        let text = question.trim();
        if text.is_empty() {
            return Err(Error::Input("the question is empty".into()));
        }
        let ids = self
            .session
            .tokenizer()
            .encode(text, self.session.vocab_size())?;
        if ids.len() > MAX_QUESTION {
            return Err(Error::Input(format!(
                "the question has {} tokens; the page reads at most {MAX_QUESTION} (the library \
                 streams any length: see `remem stream`)",
                ids.len()
            )));
        }
        let truth = self.task.answer(&ids)?;
        self.session.reset();
        self.run = Some(Run {
            question: ids.clone(),
            queue: ids.into(),
            answer_len: truth.len(),
            truth: Some(truth),
            answer: Vec::new(),
            first: None,
            previous: None,
        });
        Ok(())
    }

    /// Read or write until one more segment has been processed, and return what it shows;
    /// `None` once the whole answer is written.
    pub async fn step(&mut self) -> Result<Option<SegmentView>> {
        // The memory the run starts from (learned initial memory tokens, or an empty long-term
        // memory), so the first segment's change is measured against it.
        let fresh = self.run.as_ref().is_some_and(|r| r.previous.is_none());
        if fresh && let Some((_, start)) = slots(self.session.memory()) {
            let rows = slot_rows(start).await?;
            if let Some(run) = self.run.as_mut() {
                run.previous = Some(rows);
            }
        }
        loop {
            let run = self
                .run
                .as_mut()
                .ok_or_else(|| Error::Input("no question: start a run first".into()))?;
            let room = self.session.step_len() - self.session.pending().len();
            let next: Vec<u32> = if !run.queue.is_empty() {
                let n = room.min(run.queue.len());
                run.queue.drain(..n).collect()
            } else if run.answer.len() < run.answer_len {
                let best = self.session.next_logits()?.argmax(0);
                let id = ints(best).await?[0];
                run.answer.push(id as u32);
                if run.answer.len() == run.answer_len {
                    // The last answer token is not read back into memory: nothing follows it.
                    return Ok(None);
                }
                vec![id as u32]
            } else {
                return Ok(None);
            };
            let mut done = None;
            self.session
                .feed_with(&next, |segment| done = Some(segment))?;
            if let Some(segment) = done {
                return self.view(segment).await.map(Some);
            }
        }
    }

    /// The answer so far against the truth.
    pub fn outcome(&self) -> Option<Outcome> {
        let run = self.run.as_ref()?;
        let tokenizer = self.session.tokenizer();
        let correct: Vec<bool> = match &run.truth {
            Some(truth) => run.answer.iter().zip(truth).map(|(a, t)| a == t).collect(),
            None => Vec::new(),
        };
        let finished = run.answer.len() == run.answer_len;
        Some(Outcome {
            question: tokenizer.decode(&run.question),
            answer: tokenizer.decode(&run.answer),
            truth: run.truth.as_ref().map(|t| tokenizer.decode(t)),
            solved: finished && run.truth.is_some() && correct.iter().all(|&c| c),
            correct,
            finished,
            segments: self.session.consumed() / self.session.step_len() as u64,
        })
    }

    async fn view(&mut self, segment: Segment) -> Result<SegmentView> {
        let question_len = self.run.as_ref().map_or(0, |r| r.question.len());
        let start = segment.index as usize * self.session.step_len();
        let tokenizer = self.session.tokenizer();
        let tokens: Vec<String> = segment
            .tokens
            .iter()
            .map(|&t| tokenizer.decode(&[t]))
            .collect();
        let generated = (0..tokens.len())
            .map(|i| start + i >= question_len)
            .collect();
        let attention = self.attention(&segment, &tokens).await?;
        let density = match &segment.density {
            Some(layers) => Some(densities(layers).await?),
            None => None,
        };
        let memory = self.memory_view().await?;
        Ok(SegmentView {
            index: segment.index,
            tokens,
            generated,
            attention,
            memory,
            density,
        })
    }

    async fn attention(&self, segment: &Segment, tokens: &[String]) -> Result<Attention> {
        let layers = segment
            .attention
            .clone()
            .ok_or_else(|| Error::Input("the session did not record attention".into()))?;
        attention_view(layers, tokens, self.info.memory_tokens).await
    }

    async fn memory_view(&mut self) -> Result<Option<MemoryView>> {
        let Some((what, tensor)) = slots(self.session.memory()) else {
            return Ok(None);
        };
        let now = slot_rows(tensor).await?;
        let run = self.run.as_mut().expect("a run is on");
        // The reference is the first memory that holds anything (the infinity-former's long-term
        // memory is empty until states leave the cache).
        if run.first.is_none() && now.iter().any(|row| row.iter().any(|&v| v != 0.0)) {
            run.first = Some(now.clone());
        }
        let retention = match &run.first {
            Some(first) => cosines(first, &now),
            None => vec![1.0; now.len()],
        };
        let change = match &run.previous {
            Some(previous) => cosines(previous, &now),
            None => vec![0.0; now.len()],
        };
        run.previous = Some(now);
        Ok(Some(MemoryView {
            what: what.into(),
            change,
            retention,
        }))
    }
}

/// One step's attention weights (`[1, heads, rows, cols]` per layer) read back and labelled:
/// `tokens` are the segment's tokens as text, `memory_tokens` the read and write slots around
/// them (0 for models without).
pub(crate) async fn attention_view(
    layers: Vec<Tensor<4>>,
    tokens: &[String],
    memory_tokens: usize,
) -> Result<Attention> {
    let [_, heads, rows, cols] = layers[0].dims();
    let n_layers = layers.len();
    let weights = floats(Tensor::cat(layers, 0)).await?;
    let m = memory_tokens;
    let t = tokens.len();
    let mut row_groups = Vec::new();
    let mut labels = Vec::new();
    if m > 0 {
        row_groups.push(group("read memory", 0, m));
        labels.extend((0..m).map(|i| format!("r{i}")));
    }
    row_groups.push(group("segment", labels.len(), t));
    labels.extend(tokens.iter().cloned());
    if m > 0 && rows == 2 * m + t {
        row_groups.push(group("write memory", labels.len(), m));
        labels.extend((0..m).map(|i| format!("w{i}")));
    }
    debug_assert_eq!(labels.len(), rows);
    let cached = cols - rows;
    let mut col_groups = Vec::new();
    let mut col_labels: Vec<String> = (0..cached).map(|i| format!("c-{}", cached - i)).collect();
    if cached > 0 {
        col_groups.push(group("cache", 0, cached));
    }
    col_groups.extend(
        row_groups
            .iter()
            .map(|g| group(&g.name, g.start + cached, g.len)),
    );
    col_labels.extend(labels.iter().cloned());
    Ok(Attention {
        layers: n_layers,
        heads,
        rows: labels,
        cols: col_labels,
        row_groups,
        col_groups,
        weights,
    })
}

/// Memory tokens a model reads and writes (RMT, MemTr-XL); 0 for the others.
pub(crate) fn memory_slots(m: &remem::model::ModelConfig) -> usize {
    match m.kind {
        ModelKind::Rmt | ModelKind::Memxl => m.memory_tokens,
        _ => 0,
    }
}

fn group(name: &str, start: usize, len: usize) -> Group {
    Group {
        name: name.into(),
        start,
        len,
    }
}

/// The state's slots the page tracks: memory tokens, or the last layer's long-term memory
/// coefficients (one per basis function). Transformer-XL's cache shifts every segment, so it
/// has no slots to follow.
pub(crate) fn slots(state: &State) -> Option<(&'static str, Tensor<3>)> {
    match state {
        State::Memory { memory, .. } => Some(("memory tokens", memory.clone())),
        State::Xl {
            memory: Some(memory),
            ..
        } => Some(("memory tokens", memory.clone())),
        State::Xl { ltm, .. } => ltm.last().map(|layer| {
            (
                "long-term memory coefficients (last layer, one per basis function)",
                layer.coeffs.clone(),
            )
        }),
        _ => None,
    }
}

/// The first batch row's slots, each a vector of `d_model` values.
pub(crate) async fn slot_rows(tensor: Tensor<3>) -> Result<Vec<Vec<f32>>> {
    let [_, n, d] = tensor.dims();
    let values = floats(tensor).await?;
    Ok(values.chunks(d).take(n).map(<[f32]>::to_vec).collect())
}

/// Cosine similarity of each pair of rows: 1 where both are all zeros (nothing changed), 0
/// where only one is.
pub(crate) fn cosines(a: &[Vec<f32>], b: &[Vec<f32>]) -> Vec<f32> {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let dot: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            let norm = |v: &[f32]| v.iter().map(|p| p * p).sum::<f32>().sqrt();
            match (norm(x), norm(y)) {
                (0.0, 0.0) => 1.0,
                (nx, ny) if nx > 0.0 && ny > 0.0 => dot / (nx * ny),
                _ => 0.0,
            }
        })
        .collect()
}

async fn densities(layers: &[remem::nn::Density]) -> Result<DensityView> {
    let grids: Vec<Tensor<3>> = layers
        .iter()
        .map(|d| d.on_grid(DENSITY_POINTS).mean_dim(1).squeeze_dim::<3>(1))
        .collect();
    let [_, queries, points] = grids[0].dims();
    let n = grids.len();
    let values = floats(Tensor::cat(grids, 0)).await?;
    Ok(DensityView {
        layers: n,
        queries,
        points,
        values,
    })
}

/// A float tensor's values, read back without blocking (WebGPU forbids blocking reads).
pub(crate) async fn floats<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    let data = tensor.into_data_async().await.map_err(device_error)?;
    data.convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(device_error)
}

/// An int tensor's values, read back without blocking.
pub(crate) async fn ints<const D: usize>(tensor: Tensor<D, Int>) -> Result<Vec<i64>> {
    let data = tensor.into_data_async().await.map_err(device_error)?;
    data.convert::<i64>()
        .try_into_vec::<i64>()
        .map_err(device_error)
}

fn device_error(e: impl std::fmt::Debug) -> Error {
    Error::Device(format!("reading a tensor back: {e:?}"))
}
