//! Evaluation on a held-out split: teacher-forced token accuracy and greedy exact match.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::loss::forward_batch;
use crate::error::Result;
use crate::model::{Layout, Model, SegmentModel};
use crate::task::batch::Rows;
use crate::task::text::{Corpus, Document, Split};
use crate::task::{Sample, SegmentBatcher, Task, TaskDataset};
use burn::data::dataloader::batcher::Batcher;

/// Accuracies on the answer positions of a held-out split (for text: on every byte).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Mean cross-entropy on answer tokens, teacher-forced.
    pub loss: f64,
    /// Fraction of answer tokens predicted right with the true previous tokens as input.
    pub token_accuracy: f64,
    /// Fraction of answer tokens right when the model reads its own previous answers.
    pub greedy_token_accuracy: f64,
    /// Fraction of sequences whose whole answer is right when the model reads its own answers.
    pub exact_match: f64,
    /// Sequences evaluated (for text: held-out documents read).
    pub samples: usize,
    /// Text only: bits per byte on the held-out documents, `-log2 p(byte | everything
    /// before it in its document)` averaged over every byte predicted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits_per_byte: Option<f64>,
    /// Retention tasks: exact match by how far back the earliest fact the answer needs lies
    /// (see [`Survival`]), the nearest first; empty for the other tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub survival: Vec<Survival>,
    /// Retention tasks: exact match by how many facts were written after the earliest needed
    /// one (each [`Survival`] range a single count, `from == to`), fewest first; empty for the
    /// other tasks. Against [`EvalReport::survival`] it tells interference (later facts
    /// overwriting the memory) from decay (noise read since).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interference: Vec<Survival>,
    /// Retention tasks: [`EvalReport::interference`]'s rows each split by segments back
    /// ([`EvalReport::survival`]'s ranges). Later facts and distance go together within a
    /// story (a fact with many written after it is usually far back); this two-way table
    /// tells them apart. Empty for the other tasks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interference_by_distance: Vec<LaterFacts>,
}

/// One row of [`EvalReport::interference_by_distance`]: the samples with `later_facts`
/// facts written after the earliest needed one, by how far back that fact lies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaterFacts {
    /// Facts written after the earliest one the answer needs.
    pub later_facts: usize,
    /// Their exact match by segments back, as [`EvalReport::survival`] counts it.
    pub survival: Vec<Survival>,
}

/// Greedy exact match of the samples whose earliest needed fact
/// ([`crate::task::retention::Story::support`]) begins `from..=to` segments before the segment
/// that predicts the answer's first token: 0 is the same segment (read directly), and each
/// segment more is one more memory update the fact had to live through. The ranges are 0, 1,
/// 2-3, 4-7, 8-15 and so on; only those holding samples are listed. The same shape counts
/// facts written after it in [`EvalReport::interference`], one count per range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Survival {
    /// Fewest segments back in this range.
    pub from: usize,
    /// Most segments back in this range.
    pub to: usize,
    /// Samples whose fact lies this far back.
    pub samples: usize,
    /// Fraction of them answered exactly.
    pub exact_match: f64,
}

impl Survival {
    /// The range holding `back` segments: 0, then powers of two (`1`, `2..=3`, `4..=7`, ...).
    fn range(back: usize) -> usize {
        match back {
            0 => 0,
            b => 1 + b.ilog2() as usize,
        }
    }

    /// `(samples, exact)` counts per range, as a table of the non-empty ranges.
    fn table(counts: &[(usize, usize)]) -> Vec<Survival> {
        Self::rows(counts, |r| match r {
            0 => (0, 0),
            r => (1 << (r - 1), (1 << r) - 1),
        })
    }

    /// `(samples, exact)` counts per single value (`counts[k]` for `k`), as a table of the
    /// non-empty ones.
    fn each(counts: &[(usize, usize)]) -> Vec<Survival> {
        Self::rows(counts, |k| (k, k))
    }

    /// The non-empty `counts`, the `i`th covering `bounds(i)`.
    fn rows(counts: &[(usize, usize)], bounds: impl Fn(usize) -> (usize, usize)) -> Vec<Survival> {
        counts
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| *n > 0)
            .map(|(i, &(n, right))| {
                let (from, to) = bounds(i);
                Survival {
                    from,
                    to,
                    samples: n,
                    exact_match: right as f64 / n as f64,
                }
            })
            .collect()
    }

    /// Count one sample (answered exactly or not) in `counts[at]`, growing it as needed.
    fn count(counts: &mut Vec<(usize, usize)>, at: usize, whole: bool) {
        if counts.len() <= at {
            counts.resize(at + 1, (0, 0));
        }
        counts[at].0 += 1;
        counts[at].1 += usize::from(whole);
    }
}

/// The two-way table as lines, a row of later facts each (`0 after it: 0: 1.000 (20), 1:
/// ...`); `None` unless the samples differ in later facts (as [`interference_line`]).
pub fn interference_by_distance_lines(rows: &[LaterFacts]) -> Option<Vec<String>> {
    (rows.len() > 1).then(|| {
        rows.iter()
            .map(|row| {
                let ranges: Vec<String> = row.survival.iter().map(Survival::to_string).collect();
                format!("{} after it: {}", row.later_facts, ranges.join(", "))
            })
            .collect()
    })
}

/// The survival table on one line, `by segments back: 0: 0.983 (60), 1: 0.550 (80), ...`;
/// `None` when it is empty.
pub fn survival_line(survival: &[Survival]) -> Option<String> {
    (!survival.is_empty()).then(|| {
        let ranges: Vec<String> = survival.iter().map(Survival::to_string).collect();
        format!("by segments back: {}", ranges.join(", "))
    })
}

/// The interference table on one line, `by facts written after it: 0: 0.986 (211), 1: ...`;
/// `None` unless the samples differ in it (a one-fact task has only 0).
pub fn interference_line(interference: &[Survival]) -> Option<String> {
    (interference.len() > 1).then(|| {
        let counts: Vec<String> = interference.iter().map(Survival::to_string).collect();
        format!("by facts written after it: {}", counts.join(", "))
    })
}

impl std::fmt::Display for Survival {
    /// `2-3: 0.750 (40)`: the range of segments back, the exact match, the samples.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.from == self.to {
            true => write!(f, "{}", self.from)?,
            false => write!(f, "{}-{}", self.from, self.to)?,
        }
        write!(f, ": {:.3} ({})", self.exact_match, self.samples)
    }
}

/// The held-out seed stream: disjoint from training's `seed` stream.
pub fn eval_seed(seed: u64) -> u64 {
    seed ^ 0x005E_ED0F_E7A1_u64
}

/// Evaluate `model` (a plain, non-autodiff model) on `samples` held-out sequences of `task`.
pub fn evaluate(
    model: &Model,
    task: &Task,
    seed: u64,
    samples: usize,
    batch_size: usize,
    device: &Device,
) -> EvalReport {
    evaluate_with(model, task, seed, samples, batch_size, device, |_| {})
}

/// Sequences per evaluation batch for inputs of `input_len` tokens: up to 128, fewer as inputs
/// grow (about 64 Ki tokens a batch), so a long evaluation reports progress often and holds
/// one modest batch at a time.
pub fn batch_for(input_len: usize) -> usize {
    (65_536 / input_len.max(1)).clamp(1, 128)
}

/// A retention task's held-out evaluation, streamed: each batch of samples is generated and
/// read segment by segment ([`crate::task::retention::Stream`]), the memory carried, and only
/// the segments that hold the answer are kept, for the teacher-forced answer loss and the
/// greedy answer. Memory stays constant whatever the input length (a million tokens and more).
/// The samples are those [`evaluate`] draws (the same seeds), so the figures are the same; their
/// noise comes from the split `task` names ([`Task::with_noise`]): callers pass a held-out one.
///
/// Both layouts: the decoder predicts the answer from the positions before it, the encoder at
/// its own positions, hidden from its input (its teacher-forced predictions are its answer).
pub fn evaluate_retention(
    model: &Model,
    task: &Task,
    seed: u64,
    samples: usize,
    batch_size: usize,
    device: &Device,
    mut on_progress: impl FnMut(usize),
) -> Result<EvalReport> {
    use crate::task::retention::{Stream, Units};
    use rand::SeedableRng;
    let corpus = task
        .corpus()
        .expect("a retention task reads its noise from a corpus");
    let tokenizer = task.tokenizer();
    let encoder = model.config().layout == Layout::Encoder;
    let (kind, moves) = (task.config().kind, task.config().moves);
    let (input_len, total) = (task.input_len(), task.input_len() + 1);
    let seg_len = model.step_len(input_len);
    let (mut nll, mut correct, mut greedy_correct, mut exact, mut answers) =
        (0.0, 0usize, 0usize, 0usize, 0usize);
    // Per survival range, per count of later facts, and per both: samples, and those
    // answered exactly.
    let mut survival: Vec<(usize, usize)> = Vec::new();
    let mut interference: Vec<(usize, usize)> = Vec::new();
    let mut both: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut start = 0;
    while start < samples {
        let n = batch_size.min(samples - start);
        let mut streams = (start..start + n)
            .map(|i| {
                let rng = rand::rngs::StdRng::seed_from_u64(crate::task::dataset::mix(
                    eval_seed(seed),
                    i as u64,
                ));
                let units = Units::new(Some(&tokenizer))?;
                // One question, as BABILong asks, whatever training asked.
                Stream::new(
                    kind,
                    moves,
                    1,
                    corpus,
                    task.noise(),
                    units,
                    total,
                    None,
                    rng,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        start += n;
        // The input position that predicts the first answer token (the decoder's is the one
        // before it), and its segment: every segment before that one only moves the memory on.
        let first = streams[0].answer().start - usize::from(!encoder);
        let tail_start = first / seg_len * seg_len;
        let mut state = model.init_state(n, device);
        let mut buf = Vec::with_capacity(seg_len);
        let mut flat: Vec<i64> = Vec::with_capacity(n * seg_len);
        for seg in (0..tail_start).step_by(seg_len) {
            flat.clear();
            for stream in &mut streams {
                buf.clear();
                stream.read(seg_len, &mut buf)?;
                flat.extend(buf.iter().map(|&b| b as i64));
            }
            let tokens =
                Tensor::<2, Int>::from_data(TensorData::new(flat.clone(), [n, seg_len]), device);
            let current = std::mem::replace(&mut state, crate::model::State::Empty);
            state = model.advance(tokens, current);
            debug_assert!(seg + seg_len <= tail_start);
        }
        // The tail, as rows of its own: the decoder's input position p reads token p and
        // predicts token p + 1; the encoder's reads token p (padding where it is the answer)
        // and predicts it.
        let tail_len = input_len - tail_start;
        let rows: Vec<Rows> = streams
            .iter_mut()
            .map(|stream| {
                let answer = stream.answer();
                let mut ids = Vec::with_capacity(tail_len + 1);
                stream.read(usize::MAX, &mut ids)?;
                let token = |i: usize| ids.get(i).copied().unwrap_or(crate::task::PAD);
                let is_answer = |i: usize| answer.contains(&(tail_start + i));
                let shift = usize::from(!encoder);
                Ok(Rows {
                    inputs: (0..tail_len)
                        .map(|i| match encoder && is_answer(i) {
                            true => crate::task::PAD,
                            false => token(i),
                        })
                        .collect(),
                    targets: (0..tail_len).map(|i| token(i + shift)).collect(),
                    answer: (0..tail_len).map(|i| is_answer(i + shift)).collect(),
                })
            })
            .collect::<Result<_>>()?;
        // Teacher-forced: the tail with the true answers as input.
        let batch = crate::task::Batch::from_rows(&rows, device);
        let out = super::loss::forward_batch_from(model, &batch, seg_len, state.clone());
        let stats = out.stats();
        nll += stats.nll;
        correct += stats.correct as usize;
        answers += batch.answer_tokens;
        let predictions = match encoder {
            true => out.predictions(),
            false => greedy_from(model, &rows, seg_len, state, device),
        };
        let (right, whole) = score(&rows, &predictions);
        greedy_correct += right;
        exact += whole.iter().filter(|&&w| w).count();
        for (stream, &whole) in streams.iter().zip(&whole) {
            let fact = stream
                .support_start()
                .expect("every fact is read before the question");
            // A fact in the answer's own segment (or after its start) is 0 segments back.
            let back = (tail_start / seg_len).saturating_sub(fact / seg_len);
            let later = stream.later_facts();
            Survival::count(&mut survival, Survival::range(back), whole);
            Survival::count(&mut interference, later, whole);
            if both.len() <= later {
                both.resize(later + 1, Vec::new());
            }
            Survival::count(&mut both[later], Survival::range(back), whole);
        }
        on_progress(start);
    }
    let answers = answers.max(1) as f64;
    Ok(EvalReport {
        loss: nll / answers,
        token_accuracy: correct as f64 / answers,
        greedy_token_accuracy: greedy_correct as f64 / answers,
        exact_match: exact as f64 / samples.max(1) as f64,
        samples,
        bits_per_byte: None,
        survival: Survival::table(&survival),
        interference: Survival::each(&interference),
        interference_by_distance: both
            .iter()
            .enumerate()
            .filter(|(_, counts)| counts.iter().any(|&(n, _)| n > 0))
            .map(|(later_facts, counts)| LaterFacts {
                later_facts,
                survival: Survival::table(counts),
            })
            .collect(),
    })
}

/// The held-out evaluation of `task` during training: [`evaluate_with`] for the synthetic
/// tasks; [`evaluate_retention`] for the retention tasks, their noise from the validation
/// documents; [`evaluate_text`] on the validation split for text, reading up to
/// `samples * input_len` bytes.
pub fn evaluate_task(
    model: &Model,
    task: &Task,
    seed: u64,
    samples: usize,
    batch_size: usize,
    device: &Device,
) -> Result<EvalReport> {
    match task.corpus() {
        Some(corpus) if task.config().kind == crate::task::TaskKind::Text => evaluate_text(
            model,
            model.step_len(task.input_len()),
            corpus,
            Split::Validation,
            (samples * task.input_len()) as u64,
            device,
            |_| {},
        ),
        Some(_) => {
            let task = task.with_noise(Split::Validation);
            evaluate_retention(model, &task, seed, samples, batch_size, device, |_| {})
        }
        _ => Ok(evaluate(model, task, seed, samples, batch_size, device)),
    }
}

/// [`evaluate`], calling `on_progress` with the number of sequences done after each batch.
pub fn evaluate_with(
    model: &Model,
    task: &Task,
    seed: u64,
    samples: usize,
    batch_size: usize,
    device: &Device,
    mut on_progress: impl FnMut(usize),
) -> EvalReport {
    let layout = model.config().layout;
    let batcher = SegmentBatcher::new(layout, task.input_len());
    let data = TaskDataset::new(task.clone(), eval_seed(seed), samples);
    let (mut nll, mut correct, mut greedy_correct, mut exact, mut answers) =
        (0.0, 0.0, 0usize, 0usize, 0usize);
    let mut start = 0;
    while start < samples {
        let items: Vec<Sample> = (start..(start + batch_size).min(samples))
            .map(|i| data.sample(i))
            .collect();
        start += items.len();
        let batch = batcher.batch(items.clone(), device);
        let out = forward_batch(model, &batch, model.step_len(task.input_len()));
        let stats = out.stats();
        nll += stats.nll;
        correct += stats.correct;
        answers += batch.answer_tokens;

        let rows: Vec<Rows> = items.iter().map(|s| batcher.rows(s)).collect();
        let predictions = match layout {
            Layout::Decoder => greedy(model, &rows, model.step_len(task.input_len()), device),
            // The encoder never sees answer tokens: its teacher-forced predictions are greedy.
            Layout::Encoder => out.predictions(),
        };
        let (right, whole) = score(&rows, &predictions);
        greedy_correct += right;
        exact += whole.iter().filter(|&&w| w).count();
        on_progress(start);
    }
    let answers = answers.max(1) as f64;
    EvalReport {
        loss: nll / answers,
        token_accuracy: correct / answers,
        greedy_token_accuracy: greedy_correct as f64 / answers,
        exact_match: exact as f64 / samples.max(1) as f64,
        samples,
        bits_per_byte: None,
        survival: Vec::new(),
        interference: Vec::new(),
        interference_by_distance: Vec::new(),
    }
}

/// Bits per byte of `model` (reading `seg_len` bytes a step) on the documents of `split`, each
/// streamed from its start with the memory carried through the whole document, segment by
/// segment as `remem stream` reads it.
/// Reading stops after `max_bytes` bytes in all (the evaluations during training read a
/// budget; `remem eval` reads everything). The first byte of a document is context only: there
/// is nothing before it to predict it from.
///
/// `on_progress` gets the bytes read so far after every document. The report's `loss` is in
/// nats per token (per byte for byte models), `token_accuracy` and `greedy_token_accuracy` are
/// both the fraction of tokens whose most likely prediction is right, and `exact_match` is 0
/// (text has no single answer).
///
/// A model with a pretrained tokenizer reads each document through it (segments of `seg_len`
/// of its tokens); bits per byte are then its total loss over the document's bytes, so they
/// compare with byte models' and with other tokenizers'.
pub fn evaluate_text(
    model: &Model,
    seg_len: usize,
    corpus: &Corpus,
    split: Split,
    max_bytes: u64,
    device: &Device,
    on_progress: impl FnMut(u64),
) -> Result<EvalReport> {
    evaluate_text_with(
        model,
        seg_len,
        corpus,
        split,
        max_bytes,
        MemorySource::Carried,
        device,
        on_progress,
    )
}

/// Where each segment of [`evaluate_text_with`] takes its memory (or cache) from: the
/// controls that say what a memory's gain on text is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemorySource {
    /// What the previous segment of the same document left: the model as it streams.
    #[default]
    Carried,
    /// The model's initial state, every segment: what a learned initial memory (a learned
    /// prefix) gives without carrying anything.
    Reset,
    /// What the same model left after reading as many segments of *another* document of the
    /// split (the next one, in split order, and those after it when it runs out). Carried
    /// against this is what the memory holds of the document itself; this against reset is
    /// what having read some text of the corpus gives. Reads every segment twice.
    Foreign,
}

/// The tokens a model reads for at most `limit` bytes of `doc`, and how many bytes they are.
fn document_tokens(
    doc: &Document,
    limit: u64,
    tokenizer: Option<&crate::tokenizer::Tokenizer>,
    vocab: usize,
) -> Result<(Vec<i64>, usize)> {
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(Corpus::reader(doc)?, limit),
        &mut bytes,
    )
    .map_err(|e| crate::error::Error::io(&doc.path, e))?;
    let tokens = match tokenizer {
        Some(t) => {
            let ids = t.encode(&String::from_utf8_lossy(&bytes), vocab)?;
            ids.into_iter().map(i64::from).collect()
        }
        None => bytes.iter().map(|&b| b as i64).collect(),
    };
    Ok((tokens, bytes.len()))
}

/// A `[1, n]` tensor of `ids`.
fn id_tensor(ids: &[i64], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(TensorData::new(ids.to_vec(), [1, ids.len()]), device)
}

/// [`MemorySource::Foreign`]'s stream: the split's other documents read in order from the one
/// after the document evaluated, each from its start with a fresh state, `seg_len` tokens a
/// step, as the evaluated document is.
struct ForeignStream<'a> {
    documents: Vec<&'a Document>,
    /// The document evaluated, which the stream skips.
    skip: usize,
    /// The document being read, its tokens and the next token to read.
    at: usize,
    tokens: Vec<i64>,
    next: usize,
    state: crate::model::State,
}

impl<'a> ForeignStream<'a> {
    /// The stream for the document at `skip` in `documents`.
    fn new(documents: Vec<&'a Document>, skip: usize, model: &Model, device: &Device) -> Self {
        Self {
            documents,
            skip,
            at: skip,
            tokens: Vec::new(),
            next: 0,
            state: model.init_state(1, device),
        }
    }

    /// Move the stream on by one segment of `seg_len` tokens, opening the next other document
    /// (with a fresh state) when the current one is done. Each document is read to at most
    /// `limit` bytes (the evaluated document's own length: the stream never needs more).
    fn advance(
        &mut self,
        model: &Model,
        seg_len: usize,
        limit: u64,
        tokenizer: Option<&crate::tokenizer::Tokenizer>,
        device: &Device,
    ) -> Result<()> {
        // The same segments the evaluated document reads: up to its last token but one.
        let mut tries = 0;
        while self.next + 1 >= self.tokens.len() {
            self.at = (self.at + 1) % self.documents.len();
            if self.at == self.skip {
                self.at = (self.at + 1) % self.documents.len();
            }
            tries += 1;
            if tries > self.documents.len() {
                return Err(crate::error::Error::Input(
                    "the foreign-memory control needs another document of at least 2 tokens \
                     in the split"
                        .into(),
                ));
            }
            let vocab = model.config().vocab_size;
            self.tokens = document_tokens(self.documents[self.at], limit, tokenizer, vocab)?.0;
            self.next = 0;
            self.state = model.init_state(1, device);
        }
        let end = (self.next + seg_len).min(self.tokens.len() - 1);
        let state = std::mem::replace(&mut self.state, crate::model::State::Empty);
        self.state = model.advance(id_tensor(&self.tokens[self.next..end], device), state);
        self.next = end;
        Ok(())
    }
}

/// [`evaluate_text`], each segment's memory taken from `memory` ([`MemorySource`]): the
/// controls that separate what a memory carries from what its learned initial value gives by
/// itself, and what it holds of the document from what any text would give.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_text_with(
    model: &Model,
    seg_len: usize,
    corpus: &Corpus,
    split: Split,
    max_bytes: u64,
    memory: MemorySource,
    device: &Device,
    mut on_progress: impl FnMut(u64),
) -> Result<EvalReport> {
    let (mut nll, mut correct, mut predicted, mut read, mut documents) =
        (0.0, 0usize, 0u64, 0u64, 0);
    // A pretrained model reads its tokenizer's ids; bits per byte then counts the document's
    // bytes (tokenizer-independent), the loss stays per token.
    let pretrained = model
        .config()
        .tokenizer
        .clone()
        .filter(|t| matches!(t, crate::tokenizer::Tokenizer::Pretrained { .. }));
    let all: Vec<&Document> = corpus.split(split).collect();
    if memory == MemorySource::Foreign && all.len() < 2 {
        return Err(crate::error::Error::Input(format!(
            "the foreign-memory control needs at least 2 documents in the {split:?} split, \
             which has {}",
            all.len()
        )));
    }
    let mut predicted_bytes = 0u64;
    for (index, &doc) in all.iter().enumerate() {
        if read >= max_bytes {
            break;
        }
        let limit = max_bytes - read;
        let vocab = model.config().vocab_size;
        let (tokens, len) = document_tokens(doc, limit, pretrained.as_ref(), vocab)?;
        read += len as u64;
        documents += 1;
        predicted_bytes += match &pretrained {
            Some(_) => len as u64,
            None => len.saturating_sub(1) as u64,
        };
        let mut foreign = (memory == MemorySource::Foreign)
            .then(|| ForeignStream::new(all.clone(), index, model, device));
        let mut state = model.init_state(1, device);
        let last = tokens.len().saturating_sub(1);
        for start in (0..last).step_by(seg_len) {
            let end = (start + seg_len).min(last);
            let (input, targets) = (
                id_tensor(&tokens[start..end], device),
                id_tensor(&tokens[start + 1..end + 1], device),
            );
            let current = match (memory, foreign.as_mut()) {
                (MemorySource::Reset, _) => model.init_state(1, device),
                (MemorySource::Foreign, Some(stream)) if start > 0 => {
                    stream.advance(model, seg_len, len as u64, pretrained.as_ref(), device)?;
                    stream.state.clone()
                }
                (MemorySource::Foreign, _) => model.init_state(1, device),
                (MemorySource::Carried, _) => {
                    std::mem::replace(&mut state, crate::model::State::Empty)
                }
            };
            let out = if end < last && memory == MemorySource::Carried {
                let (out, next) = model.step(input, current, false);
                state = next;
                out
            } else {
                model.last_step(input, current)
            };
            let logp = burn::tensor::activation::log_softmax(out.logits.clone(), 2);
            let picked = logp.gather(2, targets.clone().unsqueeze_dim::<3>(2));
            let right = out
                .logits
                .argmax(2)
                .equal(targets.unsqueeze_dim::<3>(2))
                .int()
                .sum();
            nll -= picked.sum().into_scalar::<f32>() as f64;
            correct += right.into_scalar::<i64>() as usize;
            predicted += (end - start) as u64;
        }
        on_progress(read);
    }
    let n = predicted.max(1) as f64;
    let accuracy = correct as f64 / n;
    Ok(EvalReport {
        loss: nll / n,
        token_accuracy: accuracy,
        greedy_token_accuracy: accuracy,
        exact_match: 0.0,
        samples: documents,
        bits_per_byte: Some(nll / predicted_bytes.max(1) as f64 / std::f64::consts::LN_2),
        survival: Vec::new(),
        interference: Vec::new(),
        interference_by_distance: Vec::new(),
    })
}

/// Answer tokens predicted right, and per row whether its every answer token is right.
fn score(rows: &[Rows], predictions: &[Vec<u32>]) -> (usize, Vec<bool>) {
    let (mut right, mut whole) = (0, Vec::with_capacity(rows.len()));
    for (row, pred) in rows.iter().zip(predictions) {
        let mut all = true;
        for ((&answer, &target), &guess) in row.answer.iter().zip(&row.targets).zip(pred) {
            if answer {
                if guess == target {
                    right += 1;
                } else {
                    all = false;
                }
            }
        }
        whole.push(all);
    }
    (right, whole)
}

/// Decode answers greedily: each answer position's input is the model's own previous answer.
///
/// Returns, per row, the prediction at every position (only answer positions are filled).
pub fn greedy(model: &Model, rows: &[Rows], seg_len: usize, device: &Device) -> Vec<Vec<u32>> {
    greedy_from(
        model,
        rows,
        seg_len,
        model.init_state(rows.len(), device),
        device,
    )
}

/// [`greedy`] from `state`: `rows` continue an input whose earlier segments `state` holds.
pub fn greedy_from(
    model: &Model,
    rows: &[Rows],
    seg_len: usize,
    mut state: crate::model::State,
    device: &Device,
) -> Vec<Vec<u32>> {
    let n = rows.len();
    let len = rows[0].inputs.len();
    let mut inputs: Vec<Vec<u32>> = rows.iter().map(|r| r.inputs.clone()).collect();
    let mut preds = vec![vec![0u32; len]; n];
    for seg_start in (0..len).step_by(seg_len) {
        let seg_end = (seg_start + seg_len).min(len);
        let tokens = |inputs: &[Vec<u32>]| {
            let flat: Vec<i64> = inputs
                .iter()
                .flat_map(|r| r[seg_start..seg_end].iter().map(|&t| t as i64))
                .collect();
            Tensor::<2, Int>::from_data(TensorData::new(flat, [n, seg_end - seg_start]), device)
        };
        for p in seg_start..seg_end {
            if !rows.iter().any(|r| r.answer[p]) {
                continue;
            }
            // Only the logits are read: the step skips the next state.
            let out = model.last_step(tokens(&inputs), state.clone());
            let j = p - seg_start;
            let best: Vec<i64> = out
                .logits
                .slice(s![.., j..j + 1, ..])
                .argmax(2)
                .into_data()
                .iter::<i64>()
                .collect();
            for (i, row) in rows.iter().enumerate() {
                if row.answer[p] {
                    preds[i][p] = best[i] as u32;
                    if p + 1 < len {
                        inputs[i][p + 1] = best[i] as u32;
                    }
                }
            }
        }
        if seg_end < len {
            state = model.step(tokens(&inputs), state, false).1;
        }
    }
    preds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ModelConfig;
    use burn::module::{Module, ModuleMapper, Param};

    /// Sets every weight to zero: the logits are all zero, so the model predicts every byte
    /// with probability 1/256.
    struct Zero;

    impl ModuleMapper for Zero {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            param.map(|t| t.zeros_like())
        }
    }

    /// A uniform predictor scores exactly 8 bits per byte, over every byte but each
    /// document's first, and streams each document in segments (the last one partial).
    #[test]
    fn a_uniform_predictor_scores_eight_bits_per_byte() {
        let dir = tempfile::tempdir().unwrap();
        // 40 documents so every split has some; lengths not multiples of the segment.
        for i in 0..40 {
            let text: Vec<u8> = (0..50 + i).map(|j| b'a' + ((i + j) % 26) as u8).collect();
            std::fs::write(dir.path().join(format!("{i}.txt")), text).unwrap();
        }
        let corpus = Corpus::open(&[dir.path().to_path_buf()]).unwrap();
        let device = Device::flex();
        let config = ModelConfig {
            vocab_size: 256,
            d_model: 16,
            n_heads: 2,
            d_ff: 32,
            memory_tokens: 2,
            segment_len: 8,
            ..ModelConfig::default()
        };
        let model = Model::new(&config, 0, &device).map(&mut Zero);
        let mut progress = Vec::new();
        let report = evaluate_text(&model, 8, &corpus, Split::Test, u64::MAX, &device, |read| {
            progress.push(read)
        })
        .unwrap();
        let test: Vec<_> = corpus.split(Split::Test).collect();
        assert_eq!(report.samples, test.len());
        assert_eq!(
            progress.last().copied(),
            Some(test.iter().map(|d| d.len).sum::<u64>())
        );
        let bpb = report.bits_per_byte.unwrap();
        assert!((bpb - 8.0).abs() < 1e-4, "{bpb}");
        // Every argmax is byte 0, which the text never holds.
        assert_eq!(report.token_accuracy, 0.0);

        // A byte budget stops reading early.
        let short = evaluate_text(&model, 8, &corpus, Split::Train, 100, &device, |_| {}).unwrap();
        let mut read = 0;
        let spanned = corpus
            .split(Split::Train)
            .take_while(|d| {
                let before = read;
                read += d.len;
                before < 100
            })
            .count();
        assert_eq!(short.samples, spanned);
    }
    /// The foreign-memory control reads another document in lockstep: when every document is
    /// the same text it is exactly the carried memory; on different documents it differs, as
    /// the reset control does; without a memory all three are the same.
    #[test]
    fn the_memory_controls() {
        let corpus_of = |same: bool| {
            let dir = tempfile::tempdir().unwrap();
            for i in 0..40 {
                let text: Vec<u8> = (0..70)
                    .map(|j| b'a' + ((j * 7 + if same { 0 } else { i * 5 }) % 26) as u8)
                    .collect();
                std::fs::write(dir.path().join(format!("{i}.txt")), text).unwrap();
            }
            let corpus = Corpus::open(&[dir.path().to_path_buf()]).unwrap();
            (dir, corpus)
        };
        let device = Device::flex();
        let bpb = |model: &Model, corpus: &Corpus, memory| {
            evaluate_text_with(
                model,
                8,
                corpus,
                Split::Test,
                u64::MAX,
                memory,
                &device,
                |_| {},
            )
            .unwrap()
            .bits_per_byte
            .unwrap()
        };
        let config = |memory_tokens| ModelConfig {
            vocab_size: 256,
            d_model: 16,
            n_heads: 2,
            d_ff: 32,
            memory_tokens,
            segment_len: 8,
            ..ModelConfig::default()
        };
        let model = Model::new(&config(2), 3, &device);
        let (_same_dir, same) = corpus_of(true);
        let (_other_dir, other) = corpus_of(false);
        assert!(corpus_of(false).1.split(Split::Test).count() >= 2);
        use MemorySource::*;
        // (Equal up to rounding: scoring without writing a memory takes fewer rows through the
        // last layer.)
        let (foreign, carried) = (bpb(&model, &same, Foreign), bpb(&model, &same, Carried));
        assert!((foreign - carried).abs() < 1e-6, "{foreign} {carried}");
        let carried = bpb(&model, &other, Carried);
        let (foreign, reset) = (bpb(&model, &other, Foreign), bpb(&model, &other, Reset));
        assert!((foreign - carried).abs() > 1e-6, "{foreign} {carried}");
        assert!((reset - carried).abs() > 1e-6, "{reset} {carried}");
        assert!((reset - foreign).abs() > 1e-6, "{reset} {foreign}");

        let plain = Model::new(&config(0), 3, &device);
        let carried = bpb(&plain, &other, Carried);
        for control in [Foreign, Reset] {
            let b = bpb(&plain, &other, control);
            assert!((b - carried).abs() < 1e-6, "{control:?} {b} {carried}");
        }
    }
}

#[cfg(test)]
mod retention_tests {
    use super::*;
    use crate::task::{TaskConfig, TaskKind};
    use crate::train::RunConfig;

    /// The streamed evaluation reads the same samples as the whole-sample one and scores them
    /// the same, for an answer that starts mid-segment and for one at a segment's start.
    #[test]
    fn the_streamed_evaluation_equals_the_whole_sample_one() {
        let dir = tempfile::tempdir().unwrap();
        let line = "It was a bright cold day in April. The clocks were striking thirteen. ";
        for i in 0..8 {
            std::fs::write(dir.path().join(format!("{i}.txt")), line.repeat(30 + i)).unwrap();
        }
        let device = Device::flex();
        for (kind, segments, segment_len) in [
            (TaskKind::Memorize, 8, 16),
            // The first answer byte is predicted at the start of a segment.
            (TaskKind::Memorize, 14, 9),
            (TaskKind::Qa1, 20, 16),
            (TaskKind::Needle, 12, 15),
        ] {
            let mut config = RunConfig {
                task: TaskConfig {
                    kind,
                    segments,
                    data: vec![dir.path().to_path_buf()],
                    ..TaskConfig::default()
                },
                ..RunConfig::default()
            };
            config.model.segment_len = segment_len;
            config.model.d_model = 16;
            config.model.n_heads = 2;
            config.model.d_ff = 32;
            config.model.memory_tokens = 2;
            for layout in [Layout::Decoder, Layout::Encoder] {
                config.model.layout = layout;
                let task = config.resolve().unwrap();
                let model = Model::new(&config.model, 3, &device);
                let whole = evaluate(&model, &task, 5, 10, 4, &device);
                let streamed =
                    evaluate_retention(&model, &task, 5, 10, 4, &device, |_| {}).unwrap();
                assert_eq!(whole.samples, streamed.samples);
                assert_eq!(
                    whole.exact_match, streamed.exact_match,
                    "{kind:?} {layout:?}"
                );
                assert_eq!(
                    whole.greedy_token_accuracy, streamed.greedy_token_accuracy,
                    "{kind:?} {layout:?}"
                );
                assert!(
                    (whole.loss - streamed.loss).abs() < 1e-4 * whole.loss.max(1.0),
                    "{kind:?} {layout:?}: {} against {}",
                    whole.loss,
                    streamed.loss
                );
                assert!((whole.token_accuracy - streamed.token_accuracy).abs() < 1e-9);
                // The survival and the interference tables each split the samples and their
                // exact matches; interference counts one value a row.
                for table in [&streamed.survival, &streamed.interference] {
                    let counted: usize = table.iter().map(|s| s.samples).sum();
                    assert_eq!(counted, streamed.samples, "{kind:?} {layout:?}");
                    let right: f64 = table.iter().map(|s| s.exact_match * s.samples as f64).sum();
                    assert!((right - streamed.exact_match * streamed.samples as f64).abs() < 1e-9);
                }
                assert!(streamed.interference.iter().all(|s| s.from == s.to));
                // The two-way table: each row is its interference row split by distance, and
                // its columns summed over the rows are the survival table.
                let rows = &streamed.interference_by_distance;
                assert_eq!(
                    rows.len(),
                    streamed.interference.len(),
                    "{kind:?} {layout:?}"
                );
                let mut columns: Vec<(usize, usize, usize, f64)> = Vec::new();
                for (row, total) in rows.iter().zip(&streamed.interference) {
                    assert_eq!(row.later_facts, total.from);
                    let n: usize = row.survival.iter().map(|s| s.samples).sum();
                    let right: f64 = row
                        .survival
                        .iter()
                        .map(|s| s.exact_match * s.samples as f64)
                        .sum();
                    assert_eq!(n, total.samples);
                    assert!((right - total.exact_match * n as f64).abs() < 1e-9);
                    for cell in &row.survival {
                        match columns.iter_mut().find(|c| c.0 == cell.from) {
                            Some(c) => {
                                c.2 += cell.samples;
                                c.3 += cell.exact_match * cell.samples as f64;
                            }
                            None => columns.push((
                                cell.from,
                                cell.to,
                                cell.samples,
                                cell.exact_match * cell.samples as f64,
                            )),
                        }
                    }
                }
                columns.sort_by_key(|c| c.0);
                assert_eq!(
                    columns.len(),
                    streamed.survival.len(),
                    "{kind:?} {layout:?}"
                );
                for (c, s) in columns.iter().zip(&streamed.survival) {
                    assert_eq!((c.0, c.1, c.2), (s.from, s.to, s.samples));
                    assert!((c.3 - s.exact_match * s.samples as f64).abs() < 1e-9);
                }
                if kind == TaskKind::Memorize {
                    // The fact opens the text: it lies as many segments back as the segment
                    // that predicts the answer's first token is from the first.
                    let first = task.input_len() + 1
                        - crate::task::retention::answer_width(kind)
                        - usize::from(layout == Layout::Decoder);
                    let back = first / segment_len;
                    let [range] = &streamed.survival[..] else {
                        panic!("one range: {:?}", streamed.survival)
                    };
                    assert!(range.from <= back && back <= range.to, "{back}: {range:?}");
                    // One fact: nothing is written after it.
                    let [only] = &streamed.interference[..] else {
                        panic!("one count: {:?}", streamed.interference)
                    };
                    assert_eq!((only.from, only.samples), (0, streamed.samples));
                }
            }
        }
    }

    /// Survival ranges: 0, 1, 2-3, 4-7, ...; the empty ones are left out. Interference counts
    /// one value a row.
    #[test]
    fn survival_ranges_double() {
        let ranges: Vec<usize> = [0, 1, 2, 3, 4, 7, 8, 1000].map(Survival::range).into();
        assert_eq!(ranges, [0, 1, 2, 2, 3, 3, 4, 10]);
        let table = Survival::table(&[(2, 1), (0, 0), (4, 4), (1, 0)]);
        let shown: Vec<String> = table.iter().map(Survival::to_string).collect();
        assert_eq!(shown, ["0: 0.500 (2)", "2-3: 1.000 (4)", "4-7: 0.000 (1)"]);
        // Counted one value a row: the interference table, on one line when it has two rows.
        let mut counts = Vec::new();
        for (at, whole) in [(3, true), (0, false), (3, false), (0, false)] {
            Survival::count(&mut counts, at, whole);
        }
        let table = Survival::each(&counts);
        assert_eq!(
            interference_line(&table).unwrap(),
            "by facts written after it: 0: 0.000 (2), 3: 0.500 (2)"
        );
        assert_eq!(interference_line(&table[..1]), None);
        // The two-way table, a line per count of later facts; none with one count.
        let rows = vec![
            LaterFacts {
                later_facts: 0,
                survival: Survival::table(&[(2, 2)]),
            },
            LaterFacts {
                later_facts: 4,
                survival: Survival::table(&[(0, 0), (1, 0), (3, 1)]),
            },
        ];
        assert_eq!(
            interference_by_distance_lines(&rows).unwrap(),
            [
                "0 after it: 0: 1.000 (2)",
                "4 after it: 1: 0.000 (1), 2-3: 0.333 (3)"
            ]
        );
        assert_eq!(interference_by_distance_lines(&rows[..1]), None);
    }
}
