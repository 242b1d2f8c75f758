//! Synthetic tasks from the RMT paper, generated from a seed, and next-byte language modelling
//! on real text ([`text`]), as Burn datasets with a batcher.
//!
//! Every task writes a token sequence and marks the positions that are the answer; the loss and
//! the accuracies count those positions only (for text, every position). In the synthetic tasks
//! token 0 is padding and 1 the separator; text is bytes.

pub mod associative;
#[cfg(feature = "train")]
pub mod batch;
pub mod copy;
#[cfg(feature = "train")]
pub mod dataset;
pub mod quadratic;
pub mod retention;
pub mod sort;
pub mod text;

use std::path::PathBuf;
use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

#[cfg(feature = "train")]
pub use batch::{Batch, SegmentBatcher};
#[cfg(feature = "train")]
pub use dataset::TaskDataset;

/// Padding token id (never an answer, never in the loss).
pub const PAD: u32 = 0;
/// Separator token id: ends the question, and ends the quadratic task's answer.
pub const SEP: u32 = 1;

/// Which task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    /// `X, sep, X, X`: write the source out twice (the paper's `[1]+X+X`).
    #[default]
    Copy,
    /// `X, sep, reversed(X)`.
    Reverse,
    /// `k1 v1 .. kK vK, sep, query key, its value`.
    Associative,
    /// A quadratic equation and its worked solution, as characters.
    Quadratic,
    /// Symbols drawn from a drifting distribution, a separator, then every symbol sorted by
    /// decreasing frequency (the infinity-former paper's sorting task).
    Sort,
    /// Next-byte language modelling on text files (`task.data`): every position is predicted.
    Text,
    /// RMT-1M's memorize: one fact at the start of book text, the question at the end
    /// ([`retention`]; the noise comes from `task.data`).
    Memorize,
    /// RMT-1M's detect and memorize: one fact at a random place in the text.
    Detect,
    /// RMT-1M's reasoning: two facts at random places, both needed.
    Reasoning,
    /// BABILong qa1: one supporting fact among several moves.
    Qa1,
    /// BABILong qa2: two supporting facts (a pick-up and the holder's moves).
    Qa2,
    /// BABILong qa3: three supporting facts (where an object was before a place).
    Qa3,
    /// RULER's needle in a haystack: one key and its number.
    Needle,
    /// RULER's multi-key needles: four keys, one asked.
    Needles,
    /// RULER's variable tracking: which variables a chain of assignments gives a value.
    Variables,
}

/// A task and its size. Unknown keys in a config file are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// Which task.
    pub kind: TaskKind,
    /// Number of segments S the input is split into.
    pub segments: usize,
    /// Distinct symbols in X (copy, reverse) or symbols to sort (sort; the paper uses 20).
    pub symbols: usize,
    /// Key-value pairs (associative retrieval).
    pub pairs: usize,
    /// Moves in a qa1 story (default 6): fewer make a shorter story with fewer moves to tell
    /// apart. Only qa1 takes it.
    #[serde(skip_serializing_if = "is_default_moves")]
    pub moves: usize,
    /// Questions a qa1 training story ends with (default 1, at most 4): each about another
    /// person who moved, the earlier ones answered before the last, every answer scored. More
    /// answers per story ask the memory for every person's place, not only the one asked;
    /// held-out stories always ask one question, as BABILong does (training's exact match
    /// counts a story right only when every answer is). Only qa1 takes it.
    #[serde(skip_serializing_if = "is_one")]
    pub questions: usize,
    /// Retention training: the fraction (0 to 1, default 0) of training stories whose facts
    /// all go in their last [`TaskConfig::late_segments`] segments instead of anywhere. Under
    /// `model.bptt_depth` k only the last k + 1 segments pass gradients, so a fact written
    /// farther back than that never trains its own write; a late story has its facts written
    /// into a memory a long input has already filled, with gradients. Held-out stories are
    /// never late. Not for memorize (its fact opens the input).
    #[serde(skip_serializing_if = "is_zero")]
    pub late_facts: f64,
    /// How many segments at the end of a late story hold its facts (see
    /// [`TaskConfig::late_facts`]; typically `model.bptt_depth + 1`).
    #[serde(skip_serializing_if = "is_zero")]
    pub late_segments: usize,
    /// Text files or folders (the text task), split by document into train, validation and
    /// test as [`text`] describes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<PathBuf>,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            kind: TaskKind::Copy,
            segments: 3,
            symbols: 10,
            pairs: 4,
            moves: retention::QA1_MOVES,
            questions: 1,
            late_facts: 0.0,
            late_segments: 0,
            data: Vec::new(),
        }
    }
}

fn is_default_moves(moves: &usize) -> bool {
    *moves == retention::QA1_MOVES
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_zero<T: Default + PartialEq>(x: &T) -> bool {
    *x == T::default()
}

/// One generated sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// The whole sequence, question and answer.
    pub tokens: Vec<u32>,
    /// `true` at the positions of `tokens` that are the answer.
    pub answer: Vec<bool>,
}

/// A task bound to a segment length: generates samples whose input fills `segments` segments.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    config: TaskConfig,
    segment_len: usize,
    /// The text task's documents (opened once, shared by the curriculum's stages).
    corpus: Option<Arc<text::Corpus>>,
    /// How the text (text and retention tasks) becomes ids when not byte by byte: a
    /// pretrained model's tokenizer ([`Task::with_tokenizer`]).
    text_tokenizer: Option<Tokenizer>,
    /// The documents a retention task's noise comes from ([`Task::with_noise`]).
    noise: text::Split,
}

/// Bytes read per token a text window needs, for a pretrained tokenizer: English averages about
/// 4 bytes per BPE or WordPiece token, so 8 leaves room.
const BYTES_PER_TOKEN: usize = 8;

impl Task {
    /// Bind `config` to segments of `segment_len` tokens, checking that the task fits.
    pub fn new(config: TaskConfig, segment_len: usize) -> Result<Self> {
        Self::build(config, segment_len, None)
    }

    /// [`Task::new`] for the text task or a retention task reading its text through a
    /// pretrained `tokenizer` (see [`Task::with_tokenizer`]); sizes are checked in its tokens.
    pub fn new_with_tokenizer(
        config: TaskConfig,
        segment_len: usize,
        tokenizer: Tokenizer,
    ) -> Result<Self> {
        Self::build(config, segment_len, Some(tokenizer))
    }

    fn build(config: TaskConfig, segment_len: usize, tokenizer: Option<Tokenizer>) -> Result<Self> {
        let corpus = match config.kind {
            TaskKind::Text if config.data.is_empty() => {
                return Err(Error::config(
                    "task.data",
                    "the text task needs text files or folders (--data PATH)",
                ));
            }
            TaskKind::Text => Some(Arc::new(text::Corpus::open(&config.data)?)),
            kind if retention::is_retention(kind) && config.data.is_empty() => {
                return Err(Error::config(
                    "task.data",
                    format!("{kind:?} hides facts in book text: give it with --data PATH"),
                ));
            }
            kind if retention::is_retention(kind) => {
                Some(Arc::new(text::Corpus::open(&config.data)?))
            }
            _ if !config.data.is_empty() => {
                return Err(Error::config(
                    "task.data",
                    format!(
                        "{:?} does not read files; --data goes with --task text or a \
                         retention task",
                        config.kind
                    ),
                ));
            }
            _ => None,
        };
        let task = Task {
            config,
            segment_len,
            corpus,
            text_tokenizer: None,
            noise: text::Split::Train,
        };
        match tokenizer {
            Some(t) => task.with_tokenizer(t),
            None => {
                task.validate()?;
                Ok(task)
            }
        }
    }

    /// The text task, or a retention task, reading its text through `tokenizer` (a pretrained
    /// model's) instead of byte by byte: lengths then count the tokenizer's tokens.
    pub fn with_tokenizer(self, tokenizer: Tokenizer) -> Result<Self> {
        let kind = self.config.kind;
        if kind != TaskKind::Text && !retention::is_retention(kind) {
            return Err(Error::config(
                "task.kind",
                format!(
                    "{kind:?} writes its own symbol ids; only the text and retention tasks read \
                     through a pretrained tokenizer"
                ),
            ));
        }
        if retention::is_retention(kind) {
            retention::Units::tokens(&tokenizer)?;
        }
        let task = Task {
            text_tokenizer: Some(tokenizer),
            ..self
        };
        task.validate()?;
        Ok(task)
    }

    fn validate(&self) -> Result<()> {
        let c = &self.config;
        if c.moves != retention::QA1_MOVES && c.kind != TaskKind::Qa1 {
            return Err(Error::config(
                "task.moves",
                format!("only qa1 stories have a number of moves, not {:?}", c.kind),
            ));
        }
        if c.moves == 0 {
            return Err(Error::config("task.moves", "must be at least 1"));
        }
        if c.questions != 1 && c.kind != TaskKind::Qa1 {
            return Err(Error::config(
                "task.questions",
                format!("only qa1 stories ask several questions, not {:?}", c.kind),
            ));
        }
        if !(1..=retention::QA1_PEOPLE).contains(&c.questions) {
            return Err(Error::config(
                "task.questions",
                format!(
                    "must be 1 to {} (a qa1 story's people), not {}",
                    retention::QA1_PEOPLE,
                    c.questions
                ),
            ));
        }
        if self.segment_len == 0 {
            return Err(Error::config("model.segment_len", "must be at least 1"));
        }
        self.validate_late()?;
        if c.segments == 0 {
            return Err(Error::config("task.segments", "must be at least 1"));
        }
        let capacity = self.input_len();
        match c.kind {
            TaskKind::Copy | TaskKind::Reverse => {
                if c.symbols < 2 {
                    return Err(Error::config("task.symbols", "must be at least 2"));
                }
                let parts = if c.kind == TaskKind::Copy { 3 } else { 2 };
                if !capacity.is_multiple_of(parts) || capacity < parts {
                    return Err(Error::config(
                        "task.segments",
                        format!(
                            "{:?} needs segments * segment_len ({} * {} = {capacity}) to be a positive multiple of {parts}",
                            c.kind, c.segments, self.segment_len
                        ),
                    ));
                }
            }
            TaskKind::Associative => {
                if c.pairs == 0 || c.pairs > associative::KEYS {
                    return Err(Error::config(
                        "task.pairs",
                        format!("must be in 1..={}", associative::KEYS),
                    ));
                }
                let need = 2 * c.pairs + 2;
                if need > capacity {
                    return Err(Error::config(
                        "task.segments",
                        format!(
                            "{} pairs need {need} input tokens; segments * segment_len is only {capacity}",
                            c.pairs
                        ),
                    ));
                }
            }
            TaskKind::Sort => {
                if c.symbols < 2 {
                    return Err(Error::config("task.symbols", "must be at least 2"));
                }
                if capacity < c.symbols + 1 {
                    return Err(Error::config(
                        "task.segments",
                        format!(
                            "sorting {} symbols needs more than {} input tokens; segments * segment_len is only {capacity}",
                            c.symbols, c.symbols
                        ),
                    ));
                }
            }
            TaskKind::Text => {
                let longest = self.corpus.as_ref().map_or(0, |c| c.longest_train());
                let per_token = match self.text_tokenizer {
                    Some(_) => BYTES_PER_TOKEN,
                    None => 1,
                };
                if ((capacity + 1) * per_token) as u64 > longest {
                    return Err(Error::config(
                        "task.data",
                        format!(
                            "a training window of (segments * segment_len + 1) * {per_token} = {} \
                             bytes is longer than every training document (the longest has \
                             {longest}): give longer documents, or fewer or shorter segments",
                            (capacity + 1) * per_token
                        ),
                    ));
                }
            }
            kind if retention::is_retention(kind) => {
                let units = retention::Units::new(self.text_tokenizer.as_ref())?;
                let need = retention::max_story_units(kind, c.moves, c.questions, &units)?;
                if capacity + 1 < need {
                    return Err(Error::config(
                        "task.segments",
                        format!(
                            "a {kind:?} story needs up to {need} positions; segments * segment_len + 1 \
                             is only {}",
                            capacity + 1
                        ),
                    ));
                }
            }
            TaskKind::Quadratic => {
                if quadratic::MAX_LEN - 1 > capacity {
                    return Err(Error::config(
                        "task.segments",
                        format!(
                            "quadratic equations need up to {} input tokens; segments * segment_len is only {capacity}",
                            quadratic::MAX_LEN - 1
                        ),
                    ));
                }
            }
            _ => unreachable!("every kind but the retention tasks has its arm above"),
        }
        Ok(())
    }

    /// The task's configuration.
    pub fn config(&self) -> &TaskConfig {
        &self.config
    }

    /// Tokens per segment.
    pub fn segment_len(&self) -> usize {
        self.segment_len
    }

    /// Input positions: `segments * segment_len`.
    pub fn input_len(&self) -> usize {
        self.config.segments * self.segment_len
    }

    /// Number of token ids the task uses (pad and separator included).
    pub fn vocab_size(&self) -> usize {
        if let Some(t) = &self.text_tokenizer {
            return t.min_vocab();
        }
        match self.config.kind {
            TaskKind::Copy | TaskKind::Reverse | TaskKind::Sort => 2 + self.config.symbols,
            TaskKind::Associative => associative::VOCAB,
            TaskKind::Quadratic => quadratic::VOCAB,
            _ => 256,
        }
    }

    /// How the task's ids read as text: one character per symbol, `|` as separator.
    pub fn tokenizer(&self) -> Tokenizer {
        if let Some(t) = &self.text_tokenizer {
            return t.clone();
        }
        match self.config.kind {
            TaskKind::Copy | TaskKind::Reverse | TaskKind::Sort => {
                Tokenizer::symbols(self.config.symbols)
            }
            TaskKind::Associative => associative::tokenizer(),
            TaskKind::Quadratic => quadratic::tokenizer(),
            _ => Tokenizer::Bytes,
        }
    }

    /// Accuracy of guessing uniformly among the answer symbols.
    pub fn chance(&self) -> f64 {
        match self.config.kind {
            TaskKind::Copy | TaskKind::Reverse | TaskKind::Sort => 1.0 / self.config.symbols as f64,
            TaskKind::Associative => 1.0 / associative::VALUES as f64,
            TaskKind::Quadratic => 1.0 / (quadratic::VOCAB - 2) as f64,
            TaskKind::Text => 1.0 / self.vocab_size() as f64,
            kind => retention::chance(kind),
        }
    }

    /// The same task with another number of segments (the curriculum's stages). Associative
    /// retrieval in fewer segments than its config keeps as many pairs as still fit, so a
    /// curriculum over segments is also one over pairs (4 pairs in segments of 3: 2 pairs in 2
    /// segments, 3 in 3, 4 in 4).
    pub fn with_segments(&self, segments: usize) -> Result<Self> {
        let mut pairs = self.config.pairs;
        if self.config.kind == TaskKind::Associative && segments < self.config.segments {
            // Pairs, the separator and the query in `segments * segment_len` tokens.
            let fit = (segments * self.segment_len).saturating_sub(2) / 2;
            pairs = pairs.min(fit.max(1));
        }
        let task = Task {
            config: TaskConfig {
                segments,
                pairs,
                ..self.config.clone()
            },
            segment_len: self.segment_len,
            corpus: self.corpus.clone(),
            text_tokenizer: self.text_tokenizer.clone(),
            noise: self.noise,
        };
        task.validate()?;
        Ok(task)
    }

    /// Checks [`TaskConfig::late_facts`] and [`TaskConfig::late_segments`].
    fn validate_late(&self) -> Result<()> {
        let c = &self.config;
        if !(0.0..=1.0).contains(&c.late_facts) {
            return Err(Error::config(
                "task.late_facts",
                format!("must be a fraction from 0 to 1, not {}", c.late_facts),
            ));
        }
        if c.late_facts == 0.0 {
            if c.late_segments != 0 {
                return Err(Error::config(
                    "task.late_segments",
                    "only late stories have a late window: set task.late_facts above 0",
                ));
            }
            return Ok(());
        }
        if !retention::is_retention(c.kind) || c.kind == TaskKind::Memorize {
            return Err(Error::config(
                "task.late_facts",
                format!(
                    "only retention tasks whose facts go anywhere have late stories, not {:?}",
                    c.kind
                ),
            ));
        }
        if !(1..=c.segments).contains(&c.late_segments) {
            return Err(Error::config(
                "task.late_segments",
                format!(
                    "must be 1 to task.segments ({}), not {}",
                    c.segments, c.late_segments
                ),
            ));
        }
        let units = retention::Units::new(self.text_tokenizer.as_ref())?;
        let need = retention::max_story_units(c.kind, c.moves, c.questions, &units)?;
        let window = c.late_segments * self.segment_len;
        if window < need {
            return Err(Error::config(
                "task.late_segments",
                format!(
                    "a {:?} story needs up to {need} positions; late_segments * segment_len is \
                     only {window}",
                    c.kind
                ),
            ));
        }
        Ok(())
    }

    /// This task with a retention task's noise drawn from the documents of `split`: training
    /// reads the training documents (the default), evaluations a held-out split, so no
    /// evaluated sample holds text the model was trained on. Other tasks are unchanged.
    pub fn with_noise(&self, split: text::Split) -> Task {
        Task {
            noise: split,
            ..self.clone()
        }
    }

    /// The split a retention task's noise comes from.
    pub fn noise(&self) -> text::Split {
        self.noise
    }

    /// The text task's documents.
    pub fn corpus(&self) -> Option<&text::Corpus> {
        self.corpus.as_deref()
    }

    /// Whether a story drawn from `rng` is late ([`TaskConfig::late_facts`]), as the story's
    /// first draw: the window its facts go in (positions at the input's end), or `None`.
    /// Held-out stories and tasks without facts in book text are never late. Drawn only when
    /// late stories are asked for, so other runs' samples are as they always were.
    fn draw_late(&self, rng: &mut impl Rng) -> Option<usize> {
        let late = self.config.late_facts;
        let eligible = self.corpus.is_some()
            && self.config.kind != TaskKind::Text
            && self.noise == text::Split::Train;
        (eligible && late > 0.0 && rng.random_bool(late))
            .then_some(self.config.late_segments * self.segment_len)
    }

    /// Whether the sample `rng` would draw next is a late story (see
    /// [`TaskConfig::late_facts`]), without drawing it: the training metrics split on it.
    pub fn is_late(&self, rng: &mut impl Rng) -> bool {
        self.draw_late(rng).is_some()
    }

    /// Draw one sample: for text, a window of `input_len + 1` bytes of a training document,
    /// every position but the first an answer.
    ///
    /// # Errors
    /// [`Error::Io`] when a text file can no longer be read.
    pub fn try_sample(&self, rng: &mut impl Rng) -> Result<Sample> {
        match &self.corpus {
            Some(corpus) if self.config.kind != TaskKind::Text => {
                let units = retention::Units::new(self.text_tokenizer.as_ref())?;
                let (kind, total) = (self.config.kind, self.input_len() + 1);
                let moves = self.config.moves;
                // Several questions train; a held-out story asks one.
                let questions = match self.noise {
                    text::Split::Train => self.config.questions,
                    _ => 1,
                };
                let within = self.draw_late(rng);
                retention::sample(
                    kind, moves, questions, corpus, self.noise, units, total, within, rng,
                )
            }
            Some(corpus) if self.text_tokenizer.is_some() => {
                let tokenizer = self.text_tokenizer.as_ref().expect("checked");
                text_window(corpus, tokenizer, self.input_len() + 1, rng)
            }
            Some(corpus) => {
                let bytes = corpus.window(self.input_len() + 1, rng)?;
                Ok(Sample {
                    answer: vec![true; bytes.len()],
                    tokens: bytes.into_iter().map(u32::from).collect(),
                })
            }
            None => Ok(self.sample(rng)),
        }
    }

    /// The next window of training stream `stream` of `streams`, for a run that carries its
    /// memory from one window to the next (`train.carry_memory`): the training documents are
    /// joined into one loop ([`text::Corpus::read_loop`]), stream `b` starts `b / streams` of
    /// the way round it, and `read` bytes of every stream have been consumed before this
    /// window. The window holds `input_len + 1` bytes, so its last byte is the next window's
    /// first input and no byte goes unpredicted.
    ///
    /// # Errors
    /// [`Error::Input`] for a task other than byte-level text; [`Error::Io`] when a file can
    /// no longer be read.
    pub fn stream_sample(&self, stream: usize, streams: usize, read: u64) -> Result<Sample> {
        let corpus = match &self.corpus {
            Some(c) if self.config.kind == TaskKind::Text && self.text_tokenizer.is_none() => c,
            _ => {
                return Err(Error::Input(
                    "only byte-level text is read as streams (train.carry_memory)".into(),
                ));
            }
        };
        let total = corpus.bytes(text::Split::Train);
        let start = (u128::from(total) * stream as u128 / streams.max(1) as u128) as u64;
        let mut bytes = Vec::new();
        corpus.read_loop(
            text::Split::Train,
            start + read % total.max(1),
            self.input_len() + 1,
            &mut bytes,
        )?;
        Ok(Sample {
            answer: vec![true; bytes.len()],
            tokens: bytes.into_iter().map(u32::from).collect(),
        })
    }

    /// Draw one sample.
    ///
    /// # Panics
    /// For the text task, when a file can no longer be read: use [`Task::try_sample`].
    pub fn sample(&self, rng: &mut impl Rng) -> Sample {
        let c = &self.config;
        let sample = match c.kind {
            _ if self.corpus.is_some() => {
                return self
                    .try_sample(rng)
                    .unwrap_or_else(|e| panic!("text sample: {e}"));
            }
            TaskKind::Copy => copy::copy(rng, self.input_len() / 3, c.symbols),
            TaskKind::Reverse => copy::reverse(rng, self.input_len() / 2, c.symbols),
            TaskKind::Associative => associative::sample(rng, c.pairs),
            TaskKind::Quadratic => quadratic::sample(rng),
            // The sequence fills the input: L = input_len - symbols, then sep and the answer.
            TaskKind::Sort => sort::sample(rng, self.input_len() - c.symbols, c.symbols),
            _ => unreachable!("a task with a corpus returned above"),
        };
        debug_assert!(sample.tokens.len() <= self.input_len() + 1);
        sample
    }

    /// The answer to `question` (everything before the answer, in this task's format), of any
    /// length: what a model that solves the task writes next.
    ///
    /// # Errors
    /// [`Error::Input`] when the question is not in the task's format, and for quadratic
    /// equations, whose worked solutions only the generator writes.
    pub fn answer(&self, question: &[u32]) -> Result<Vec<u32>> {
        let c = &self.config;
        let bad = |why: String| Err(Error::Input(why));
        let symbol = |t: u32| (2..2 + c.symbols as u32).contains(&t);
        match c.kind {
            TaskKind::Copy | TaskKind::Reverse | TaskKind::Sort => {
                let Some((&SEP, x)) = question.split_last() else {
                    return bad("the question must end with the separator".into());
                };
                if x.is_empty() {
                    return bad("there is nothing before the separator".into());
                }
                if let Some(i) = x.iter().position(|&t| !symbol(t)) {
                    return bad(format!(
                        "token {} at position {i} is not one of the {} symbols",
                        x[i], c.symbols
                    ));
                }
                Ok(match c.kind {
                    TaskKind::Copy => [x, x].concat(),
                    TaskKind::Reverse => x.iter().rev().copied().collect(),
                    _ => sort::sorted_by_frequency(x, c.symbols),
                })
            }
            TaskKind::Associative => {
                let key = |t: u32| (2..2 + associative::KEYS as u32).contains(&t);
                let value = |t: u32| t >= 2 + associative::KEYS as u32;
                let n = question.len();
                if n < 4 || !n.is_multiple_of(2) || question[n - 2] != SEP {
                    return bad("expected key-value pairs, the separator, then one key".into());
                }
                let pairs = &question[..n - 2];
                let query = question[n - 1];
                for (i, pair) in pairs.chunks(2).enumerate() {
                    if !key(pair[0]) || !value(pair[1]) {
                        return bad(format!("pair {i} is not a key followed by a value"));
                    }
                }
                match pairs.chunks(2).rev().find(|p| p[0] == query) {
                    Some(pair) if key(query) => Ok(vec![pair[1]]),
                    _ => bad("the queried key is not among the pairs".into()),
                }
            }
            TaskKind::Quadratic => {
                bad("only the generator knows a quadratic equation's worked solution".into())
            }
            TaskKind::Text => bad("text has no single right continuation".into()),
            _ => {
                bad("a retention task's answer follows from its facts, not from a question".into())
            }
        }
    }
}

/// `len` ids of a training window read through a pretrained `tokenizer`: a window of
/// `len * BYTES_PER_TOKEN` bytes, from its first whitespace on (so the first word is whole),
/// encoded and cut. A window that encodes to fewer ids is drawn again (8 tries).
fn text_window(
    corpus: &text::Corpus,
    tokenizer: &Tokenizer,
    len: usize,
    rng: &mut impl Rng,
) -> Result<Sample> {
    let vocab = usize::MAX;
    for _ in 0..8 {
        let bytes = corpus.window(len * BYTES_PER_TOKEN, rng)?;
        let text = String::from_utf8_lossy(&bytes);
        let start = text.find(char::is_whitespace).unwrap_or(0);
        let ids = tokenizer.encode(&text[start..], vocab)?;
        if ids.len() >= len {
            return Ok(Sample {
                tokens: ids[..len].to_vec(),
                answer: vec![true; len],
            });
        }
    }
    Err(Error::Input(format!(
        "windows of {} bytes of the training text encode to fewer than {len} tokens",
        len * BYTES_PER_TOKEN
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn answers_match_the_generator_and_bad_questions_are_named() {
        let mut rng = StdRng::seed_from_u64(3);
        for kind in [
            TaskKind::Copy,
            TaskKind::Reverse,
            TaskKind::Associative,
            TaskKind::Sort,
        ] {
            let task = Task::new(
                TaskConfig {
                    kind,
                    segments: 4,
                    ..TaskConfig::default()
                },
                6,
            )
            .unwrap();
            for _ in 0..20 {
                let sample = task.sample(&mut rng);
                let start = sample.answer.iter().position(|&a| a).unwrap();
                let (question, answer) = sample.tokens.split_at(start);
                assert_eq!(task.answer(question).unwrap(), answer, "{kind:?}");
            }
        }
        let copy = Task::new(TaskConfig::default(), 8).unwrap();
        assert!(
            copy.answer(&[2, 3, 4])
                .unwrap_err()
                .to_string()
                .contains("separator")
        );
        let err = copy.answer(&[2, 99, SEP]).unwrap_err().to_string();
        assert!(err.contains("position 1"), "{err}");
    }

    #[test]
    fn paper_sizes_fit() {
        // copy72 3x24, reverse48 4x12, AR10 4x3, quadratic 6x30.
        let mut rng = StdRng::seed_from_u64(0);
        let cases = [
            (TaskKind::Copy, 3, 24, 73),
            (TaskKind::Reverse, 4, 12, 49),
            (TaskKind::Associative, 4, 3, 11),
        ];
        for (kind, segments, t, len) in cases {
            let task = Task::new(
                TaskConfig {
                    kind,
                    segments,
                    ..TaskConfig::default()
                },
                t,
            )
            .unwrap();
            assert_eq!(task.sample(&mut rng).tokens.len(), len, "{kind:?}");
        }
        let q = Task::new(
            TaskConfig {
                kind: TaskKind::Quadratic,
                segments: 6,
                ..TaskConfig::default()
            },
            30,
        )
        .unwrap();
        for _ in 0..200 {
            assert!(q.sample(&mut rng).tokens.len() <= 181);
        }
    }

    /// A curriculum over segments on associative retrieval grows the number of pairs with the
    /// segments: each stage's samples hold as many pairs as its segments fit.
    #[test]
    fn associative_stages_hold_the_pairs_that_fit() {
        let mut rng = StdRng::seed_from_u64(1);
        let task = Task::new(
            TaskConfig {
                kind: TaskKind::Associative,
                segments: 4,
                pairs: 4,
                ..TaskConfig::default()
            },
            3,
        )
        .unwrap();
        let stages = crate::train::Curriculum::default().stages(&task);
        assert_eq!(
            stages,
            [2, 3, 4],
            "one segment cannot hold a pair and the query"
        );
        for (segments, pairs) in [(2, 2), (3, 3), (4, 4)] {
            let stage = task.with_segments(segments).unwrap();
            assert_eq!(stage.config().pairs, pairs);
            let sample = stage.sample(&mut rng);
            // Pairs, the separator, the query, then the answer.
            assert_eq!(sample.tokens.len(), 2 * pairs + 3, "{segments} segments");
        }
        // Longer inputs keep the config's pairs.
        assert_eq!(task.with_segments(8).unwrap().config().pairs, 4);
    }

    #[test]
    fn sizes_that_cannot_work_are_refused() {
        let reverse = TaskConfig {
            kind: TaskKind::Reverse,
            ..TaskConfig::default()
        };
        let err = Task::new(reverse, 7).unwrap_err().to_string();
        assert!(err.contains("task.segments"), "{err}");
        let err = Task::new(
            TaskConfig {
                kind: TaskKind::Associative,
                pairs: 8,
                segments: 2,
                ..TaskConfig::default()
            },
            4,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("pairs need 18 input tokens"), "{err}");
    }
}
