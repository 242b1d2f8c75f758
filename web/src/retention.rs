//! The page's retention demo: a visitor's fact opens book text of any length, a model trained on
//! RMT-1M's memorize task reads it segment by segment, and the question ends it.
//!
//! Along the way the page is shown how long the fact survives in the memory: at points spread
//! over the text (probes), the memory read so far answers the question as if the text ended
//! there ([`Probe::p_answer`]), and each memory slot is compared with what it held just after
//! the fact's segment ([`Probe::similarity`]). At the end the model writes its answer, and the
//! page draws the attention of the segment that held the fact and of the one that asked.
//!
//! The input is built as the task builds its samples ([`Story::around`]), so the question sits
//! where training put it: the last segment ends `answer_width - 1` bytes after it.

use std::ops::Range;

use burn::prelude::*;
use serde::Serialize;

use remem::infer::Session;
use remem::model::{Layout, SegmentModel};
use remem::task::TaskKind;
use remem::task::retention::{MOVES, PEOPLE, PLACES, Story, answer_width};
use remem::tokenizer::Tokenizer;
use remem::train::Checkpoint;
use remem::{Error, Result};

use crate::demo::{
    Attention, attention_view, cosines, floats, ints, memory_slots, slot_rows, slots,
};

/// Longest text the page buries a fact under, in segments (of 32 bytes: 512 KiB).
pub const MAX_SEGMENTS: usize = 16_384;

/// Probes over one run at most: spread evenly in the logarithm of the distance.
pub const PROBES: usize = 48;

/// The model and what the visitor may choose.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// `rmt`, `xl`, `infinity`, ...
    pub model: String,
    /// Bytes per segment.
    pub segment_len: usize,
    /// Segments of the trained input.
    pub trained_segments: usize,
    /// Memory tokens (RMT, MemTr-XL), 0 for the others.
    pub memory_tokens: usize,
    /// Layers.
    pub layers: usize,
    /// Heads per layer.
    pub heads: usize,
    /// Optimiser steps the checkpoint was trained for.
    pub trained_steps: usize,
    /// Who may move, how, and where: the task's words (the model knows no others).
    pub people: Vec<String>,
    /// Verbs of a move.
    pub verbs: Vec<String>,
    /// Places.
    pub places: Vec<String>,
    /// Fewest and most segments a run may read.
    pub min_segments: usize,
    /// See [`MAX_SEGMENTS`].
    pub max_segments: usize,
}

/// What a run will read.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The fact, as written into the text.
    pub fact: String,
    /// The question that ends the text.
    pub question: String,
    /// Bytes of the whole input through the question.
    pub tokens: usize,
    /// Segments, the last one holding the question.
    pub segments: usize,
    /// Bytes of book text between the fact and the question.
    pub noise: usize,
}

/// The memory asked about the fact after some segments of text.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// Segments read before the question's segment.
    pub segments: usize,
    /// Bytes from the end of the fact to the end of the question.
    pub distance: usize,
    /// Probability the model gives the right answer (every byte of it) if the text ended
    /// here with the question.
    pub p_answer: f32,
    /// Per memory slot: cosine similarity to the slot just after the fact's segment (1: kept
    /// as it was written).
    pub similarity: Vec<f32>,
}

/// How far a run has read.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// Segments read.
    pub read: usize,
    /// Segments before the question's.
    pub total: usize,
    /// The probes taken in this call.
    pub probes: Vec<Probe>,
}

/// The end of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// What the model wrote.
    pub answer: String,
    /// The fact's place, with its full stop.
    pub truth: String,
    /// Whether they are equal.
    pub correct: bool,
    /// Segments read, the question's included.
    pub segments: usize,
    /// Attention of the segment that held the fact.
    pub fact_attention: Attention,
    /// Attention of the segment that asked the question, its answer written in.
    pub question_attention: Attention,
}

/// A run: the input, where it stands, and what it showed.
struct Run {
    ids: Vec<u32>,
    answer: Range<usize>,
    /// Bytes of the question, and where the fact ends (its space included).
    question_len: usize,
    fact_end: usize,
    segments: usize,
    read: usize,
    probe_at: Vec<usize>,
    after_fact: Option<Vec<Vec<f32>>>,
    fact_attention: Option<Attention>,
}

/// A memorize model loaded on a device, and the run it is on.
pub struct Retention {
    session: Session,
    device: Device,
    info: Info,
    run: Option<Run>,
}

impl Retention {
    /// Load a checkpoint of a byte-level decoder trained on the memorize task (`name` names it
    /// in errors) onto `device`. It needs none of the text it was trained on.
    pub fn load(bytes: &[u8], name: &str, device: &Device) -> Result<Self> {
        let checkpoint = Checkpoint::from_bytes(bytes, name.as_ref())?;
        let config = &checkpoint.config;
        if config.task.kind != TaskKind::Memorize {
            return Err(Error::Input(format!(
                "{name} was trained on {:?}; the retention demo needs a memorize model",
                config.task.kind
            )));
        }
        if config.model.layout == Layout::Encoder {
            return Err(Error::Input(format!(
                "{name} is an encoder-layout model; the retention demo runs decoders"
            )));
        }
        let mut session = Session::from_checkpoint_bytes(bytes, name, device)?;
        if !matches!(session.tokenizer(), Tokenizer::Bytes) {
            return Err(Error::Input(format!(
                "{name} does not read bytes; the retention demo buries facts in book text"
            )));
        }
        if session.model().config().kind.whole_input() {
            return Err(Error::Input(format!(
                "{name} reads its whole input at once; the retention demo streams segments"
            )));
        }
        session.pad_predictions(true);
        let m = &config.model;
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect();
        let info = Info {
            model: format!("{:?}", m.kind).to_lowercase(),
            segment_len: session.step_len(),
            trained_segments: config.task.segments,
            memory_tokens: memory_slots(m),
            layers: m.n_layers,
            heads: m.n_heads,
            trained_steps: checkpoint.progress.step,
            people: words(&PEOPLE),
            verbs: words(&MOVES),
            places: words(&PLACES),
            min_segments: 2,
            max_segments: MAX_SEGMENTS,
        };
        Ok(Retention {
            session,
            device: device.clone(),
            info,
            run: None,
        })
    }

    /// The model and the words of a fact.
    pub fn info(&self) -> &Info {
        &self.info
    }

    /// Start a run from an empty memory: `who verb to the place.` opens the first bytes of
    /// `text` (story words in it are masked, so the text cannot give the answer), and the
    /// question ends the `segments`-th segment where training put it.
    ///
    /// # Errors
    /// [`Error::Input`] for a word the model does not know, a segment count out of range, or
    /// a text too short to fill the segments.
    pub fn start(
        &mut self,
        who: &str,
        verb: &str,
        place: &str,
        text: &[u8],
        segments: usize,
    ) -> Result<Plan> {
        let known = |word: &str, words: &[String], what: &str| {
            if words.iter().any(|w| w == word) {
                Ok(())
            } else {
                Err(Error::Input(format!(
                    "the model knows no {what} `{word}`; choose one of {}",
                    words.join(", ")
                )))
            }
        };
        known(who, &self.info.people, "person")?;
        known(verb, &self.info.verbs, "verb")?;
        known(place, &self.info.places, "place")?;
        if !(self.info.min_segments..=self.info.max_segments).contains(&segments) {
            return Err(Error::Input(format!(
                "{segments} segments: the page reads {} to {}",
                self.info.min_segments, self.info.max_segments
            )));
        }
        let story = Story::memorize(who, verb, place);
        let l = self.session.step_len();
        // As in training: the answer starts `width` bytes before the input's end (the input
        // is `segments * l` bytes, plus the last answer byte, which is only predicted).
        let answer_start = segments * l + 1 - answer_width(TaskKind::Memorize);
        // The fact and the question around no text: where the answer would start.
        let fixed = story.around(&[]).1.start;
        let noise = answer_start.checked_sub(fixed).ok_or_else(|| {
            Error::Input(format!(
                "{segments} segments cannot hold the fact and question"
            ))
        })?;
        if text.len() < noise {
            return Err(Error::Input(format!(
                "the text holds {} bytes; {segments} segments of {l} need {noise}: give more \
                 text or choose fewer segments",
                text.len()
            )));
        }
        let (ids, answer) = story.around(&text[..noise]);
        debug_assert_eq!(answer.start, answer_start);
        self.session.reset();
        self.session.record_attention(true);
        let before = segments - 1;
        self.run = Some(Run {
            ids,
            answer,
            question_len: story.question.len(),
            fact_end: story.facts[0].len() + 1,
            segments,
            read: 0,
            probe_at: probe_points(before),
            after_fact: None,
            fact_attention: None,
        });
        Ok(Plan {
            fact: story.facts[0].clone(),
            question: story.question.trim().to_string(),
            tokens: answer_start,
            segments,
            noise,
        })
    }

    /// Read up to `n` more segments of text (never the question's), probing the memory where
    /// the plan says.
    pub async fn read(&mut self, n: usize) -> Result<Progress> {
        let run = self.run.as_mut().ok_or_else(no_run)?;
        let l = self.session.step_len();
        let total = run.segments - 1;
        let mut probes = Vec::new();
        for _ in 0..n {
            if run.read == total {
                break;
            }
            let segment = &run.ids[run.read * l..(run.read + 1) * l];
            let mut attention = None;
            self.session
                .feed_with(segment, |s| attention = s.attention)?;
            run.read += 1;
            if run.read == 1 {
                // The fact's segment: keep its attention and what it wrote.
                self.session.record_attention(false);
                let tokens = text_tokens(self.session.tokenizer(), segment);
                let layers = attention.ok_or_else(|| Error::Input("no attention".into()))?;
                run.fact_attention =
                    Some(attention_view(layers, &tokens, self.info.memory_tokens).await?);
                if let Some((_, memory)) = slots(self.session.memory()) {
                    run.after_fact = Some(slot_rows(memory).await?);
                }
            }
            if run.probe_at.first() == Some(&run.read) {
                run.probe_at.remove(0);
                probes.push(probe(&self.session, &self.device, run).await?);
            }
        }
        Ok(Progress {
            read: run.read,
            total,
            probes,
        })
    }

    /// Ask the question: read the last segment up to it, write the answer greedily, and
    /// return it with the attention of the fact's segment and the question's.
    ///
    /// # Errors
    /// [`Error::Input`] before every segment of text is read.
    pub async fn finish(&mut self) -> Result<Outcome> {
        let run = self.run.as_mut().ok_or_else(no_run)?;
        if run.read + 1 != run.segments {
            return Err(Error::Input(format!(
                "{} of {} segments read: read the text before asking",
                run.read,
                run.segments - 1
            )));
        }
        let l = self.session.step_len();
        let start = run.read * l;
        self.session.feed(&run.ids[start..run.answer.start])?;
        let mut answer = Vec::new();
        for _ in 0..run.answer.len() {
            let best = self.session.next_logits()?.argmax(0);
            let id = ints(best).await?[0] as u32;
            answer.push(id);
            self.session.feed(&[id])?;
        }
        // The question's segment with the answer in it, its attention recorded.
        let mut tokens: Vec<u32> = run.ids[start..run.answer.start].to_vec();
        tokens.extend(&answer);
        tokens.truncate(l);
        let (out, _) = self.session.model().step(
            ids(&tokens, &self.device),
            self.session.memory().clone(),
            true,
        );
        let layers = out
            .attention
            .ok_or_else(|| Error::Input("no attention".into()))?;
        let labels = text_tokens(self.session.tokenizer(), &tokens);
        let question_attention = attention_view(layers, &labels, self.info.memory_tokens).await?;
        let tokenizer = self.session.tokenizer();
        let truth = &run.ids[run.answer.clone()];
        Ok(Outcome {
            answer: tokenizer.decode(&answer),
            truth: tokenizer.decode(truth),
            correct: answer == truth,
            segments: run.segments,
            fact_attention: run
                .fact_attention
                .clone()
                .ok_or_else(|| Error::Input("the fact's segment was not read".into()))?,
            question_attention,
        })
    }
}

fn no_run() -> Error {
    Error::Input("no fact buried: start a run first".into())
}

/// Segment counts at which to probe, for `total` segments before the question's: about
/// [`PROBES`] of them, evenly spread in the logarithm, the first right after the fact's segment
/// and the last just before the question's.
fn probe_points(total: usize) -> Vec<usize> {
    let mut points: Vec<usize> = (0..PROBES)
        .map(|i| {
            let x = i as f64 / (PROBES - 1) as f64;
            (total as f64).powf(x).round() as usize
        })
        .filter(|&k| k >= 1 && k <= total)
        .collect();
    points.dedup();
    points
}

/// The memory after `run.read` segments asked the question: the next segment's first bytes of
/// text, then the question and the answer where the last segment of training holds them; the
/// answer's probability from its bytes' logits (teacher-forced).
async fn probe(session: &Session, device: &Device, run: &Run) -> Result<Probe> {
    let l = session.step_len();
    // Where the answer starts in a last segment, and the question before it.
    let at = l + 1 - answer_width(TaskKind::Memorize);
    let question = run.answer.start - run.question_len;
    let from = run.read * l;
    let mut tokens: Vec<u32> = run.ids[from..from + at - run.question_len].to_vec();
    tokens.extend(&run.ids[question..run.answer.end]);
    tokens.truncate(l);
    let logits = session
        .model()
        .last_step(ids(&tokens, device), session.memory().clone())
        .logits;
    let answer = &run.ids[run.answer.clone()];
    // Position `at - 1 + j` predicts answer byte `j`.
    let rows = logits.slice(s![0..1, at - 1..at - 1 + answer.len(), ..]);
    let vocab = rows.dims()[2];
    let values = floats(rows).await?;
    let mut log_p = 0.0f64;
    for (row, &truth) in values.chunks(vocab).zip(answer) {
        let most = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = row.iter().map(|&v| (v as f64 - most).exp()).sum();
        log_p += row[truth as usize] as f64 - most - sum.ln();
    }
    let similarity = match (&run.after_fact, slots(session.memory())) {
        (Some(first), Some((_, now))) => cosines(first, &slot_rows(now).await?),
        _ => Vec::new(),
    };
    Ok(Probe {
        segments: run.read,
        distance: from + at - run.fact_end,
        p_answer: log_p.exp() as f32,
        similarity,
    })
}

/// `tokens` as the model's input, `[1, n]`.
fn ids(tokens: &[u32], device: &Device) -> Tensor<2, Int> {
    let data: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
    Tensor::from_data(TensorData::new(data, [1, tokens.len()]), device)
}

/// Each byte as text (a newline as `⏎`, so the attention's labels stay on one line).
fn text_tokens(tokenizer: &Tokenizer, ids: &[u32]) -> Vec<String> {
    ids.iter()
        .map(|&t| match tokenizer.decode(&[t]).as_str() {
            "\n" => "⏎".to_string(),
            s => s.to_string(),
        })
        .collect()
}
