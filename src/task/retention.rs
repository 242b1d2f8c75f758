//! Facts hidden in book text: the retention tasks of RMT-1M, BABILong and RULER, written from
//! their published descriptions (see `../shared/DATA.md`), as bytes.
//!
//! Every sample is book text (the noise: training documents of the corpus, see [`noise`]) with
//! the task's facts inserted, in order, at sentence boundaries; then a question; then the answer,
//! which alone is scored. The sample fills the input exactly, so the question always ends the
//! last segment and the facts sit as far back as the input reaches.
//!
//! | task | facts | question | answer |
//! |---|---|---|---|
//! | `memorize` | one move, at the very start | `Where is Mary?` | a place |
//! | `detect` | one move, at a random sentence boundary | `Where is Mary?` | a place |
//! | `reasoning` | a pick-up and a move of one person, at random boundaries | `Where is the apple?` | a place |
//! | `qa1` | 6 moves of 4 people | `Where is Mary?` (her last move) | a place |
//! | `qa2` | moves of 4 people and one pick-up | `Where is the apple?` (its holder's last place) | a place |
//! | `qa3` | a move, a pick-up, then moves of the holder | `Where was the apple before the office?` | a place |
//! | `needle` | `The special magic number for tulip is 4821907.` | `What is the special magic number for tulip?` | 7 digits |
//! | `needles` | four such needles with different keys | one of the four | 7 digits |
//! | `variables` | a chain `VAR QX = 48213.`, `VAR JD = VAR QX.`, ... and a distractor chain | `Which variables equal 48213?` | the chain's names, in order |
//!
//! Place, person and object words, and the needles' keys, are replaced in the noise by `x`s of
//! the same length, so the noise never holds an answer or a name the question asks about.

use rand::Rng;
use rand::seq::IndexedRandom;

use super::text::Corpus;
use super::{Sample, TaskKind};
use crate::error::{Error, Result};

/// The six places: the answer of every bAbI-style task (chance 1/6).
pub const PLACES: [&str; 6] = [
    "kitchen", "garden", "office", "bathroom", "hallway", "bedroom",
];
/// People who move.
pub const PEOPLE: [&str; 6] = ["Mary", "John", "Sandra", "Daniel", "Fred", "Julie"];
/// Objects that are picked up.
pub const OBJECTS: [&str; 4] = ["apple", "football", "milk", "book"];
/// Verbs of a move.
const MOVES: [&str; 4] = ["went", "moved", "journeyed", "travelled"];
/// Needle keys.
pub const KEYS: [&str; 8] = [
    "tulip", "falcon", "copper", "meadow", "lantern", "walnut", "harbor", "violet",
];

/// Bytes of book text a noise piece reads at most from one document.
const PIECE: usize = 1 << 16;

/// This module's tasks.
pub const TASKS: [TaskKind; 9] = [
    TaskKind::Memorize,
    TaskKind::Detect,
    TaskKind::Reasoning,
    TaskKind::Qa1,
    TaskKind::Qa2,
    TaskKind::Qa3,
    TaskKind::Needle,
    TaskKind::Needles,
    TaskKind::Variables,
];

/// Whether `kind` is one of this module's tasks.
pub fn is_retention(kind: TaskKind) -> bool {
    TASKS.contains(&kind)
}

/// Chance accuracy of a task's whole answer.
pub fn chance(kind: TaskKind) -> f64 {
    match kind {
        TaskKind::Needle | TaskKind::Needles => 1e-7,
        TaskKind::Variables => 1e-5,
        _ => 1.0 / PLACES.len() as f64,
    }
}

/// The widest answer of `kind`, its final `.` included. Every sample ends where an answer this
/// wide would end (a shorter answer is followed by padding, outside the loss), so the
/// question's place in the last segment never tells the answer's length.
pub fn answer_width(kind: TaskKind) -> usize {
    match kind {
        TaskKind::Needle | TaskKind::Needles => 8,
        TaskKind::Variables => 12,
        _ => PLACES.iter().map(|p| p.len()).max().unwrap_or(0) + 1,
    }
}

/// The longest story `kind` can draw, in bytes: its facts (each with the space that joins it
/// to the text), its question and its widest answer. A sample needs at least this many.
pub fn max_story_len(kind: TaskKind) -> usize {
    let longest = |words: &[&str]| words.iter().map(|w| w.len()).max().unwrap_or(0);
    let (person, place, object, key) = (
        longest(&PEOPLE),
        longest(&PLACES),
        longest(&OBJECTS),
        longest(&KEYS),
    );
    // "<person> <verb> to the <place>.", "<person> picked up the <object>."
    let moved = person + 1 + longest(&MOVES) + " to the .".len() + place;
    let picked = person + " picked up the .".len() + object;
    let needle = "The special magic number for  is 1234567.".len() + key;
    let (facts, question) = match kind {
        TaskKind::Memorize | TaskKind::Detect => (moved + 1, "\nWhere is ? ".len() + person),
        TaskKind::Reasoning => (moved + picked + 2, "\nWhere is the ? ".len() + object),
        TaskKind::Qa1 => (6 * (moved + 1), "\nWhere is ? ".len() + person),
        TaskKind::Qa2 => (
            6 * (moved + 1) + picked + 1,
            "\nWhere is the ? ".len() + object,
        ),
        TaskKind::Qa3 => (
            3 * (moved + 1) + picked + 1,
            "\nWhere was the  before the ? ".len() + object + place,
        ),
        TaskKind::Needle => (
            needle + 1,
            "\nWhat is the special magic number for ? ".len() + key,
        ),
        TaskKind::Needles => (
            4 * (needle + 1),
            "\nWhat is the special magic number for ? ".len() + key,
        ),
        TaskKind::Variables => (
            2 * "VAR XX = 12345.".len() + 6 * "VAR XX = VAR XX.".len() + 8,
            "\nWhich variables equal 12345? ".len(),
        ),
        _ => (0, 0),
    };
    facts + question + answer_width(kind)
}

/// The story of one sample: facts in order, the question, the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Story {
    /// Sentences to insert, in order.
    pub facts: Vec<String>,
    /// Whether the first fact opens the text (memorize) instead of a random boundary.
    pub first_at_start: bool,
    /// The question, ending with `? `.
    pub question: String,
    /// The answer, ending with `.`.
    pub answer: String,
}

/// Draw a story of `kind`.
pub fn story(kind: TaskKind, rng: &mut impl Rng) -> Story {
    let pick = |rng: &mut dyn rand::RngCore, from: &[&'static str]| -> &'static str {
        from[rng.random_range(0..from.len())]
    };
    let moved = |rng: &mut dyn rand::RngCore, who: &str, place: &str| {
        format!(
            "{who} {} to the {place}.",
            MOVES[rng.random_range(0..MOVES.len())]
        )
    };
    let (facts, question, answer): (Vec<String>, String, String) = match kind {
        TaskKind::Memorize | TaskKind::Detect => {
            let (who, place) = (pick(rng, &PEOPLE), pick(rng, &PLACES));
            (
                vec![moved(rng, who, place)],
                format!("Where is {who}?"),
                place.into(),
            )
        }
        TaskKind::Reasoning => {
            let (who, place, what) = (pick(rng, &PEOPLE), pick(rng, &PLACES), pick(rng, &OBJECTS));
            let mut facts = vec![
                format!("{who} picked up the {what}."),
                moved(rng, who, place),
            ];
            if rng.random_bool(0.5) {
                facts.swap(0, 1);
            }
            (facts, format!("Where is the {what}?"), place.into())
        }
        TaskKind::Qa1 => {
            let people: Vec<&str> = PEOPLE.choose_multiple(rng, 4).copied().collect();
            let mut last: Vec<(&str, &str)> = Vec::new();
            let facts: Vec<String> = (0..6)
                .map(|_| {
                    let (who, place) = (pick(rng, &people), pick(rng, &PLACES));
                    last.retain(|&(w, _)| w != who);
                    last.push((who, place));
                    moved(rng, who, place)
                })
                .collect();
            let (who, place) = last[rng.random_range(0..last.len())];
            (facts, format!("Where is {who}?"), place.into())
        }
        TaskKind::Qa2 => {
            let people: Vec<&str> = PEOPLE.choose_multiple(rng, 4).copied().collect();
            let (holder, what) = (people[0], pick(rng, &OBJECTS));
            let mut facts = Vec::new();
            let mut at = std::collections::BTreeMap::new();
            // The holder is somewhere first; the pick-up comes at a random point of 5 moves.
            let start = pick(rng, &PLACES);
            facts.push(moved(rng, holder, start));
            at.insert(holder, start);
            let pickup = rng.random_range(0..5);
            for i in 0..5 {
                if i == pickup {
                    facts.push(format!("{holder} picked up the {what}."));
                }
                let (who, place) = (pick(rng, &people), pick(rng, &PLACES));
                at.insert(who, place);
                facts.push(moved(rng, who, place));
            }
            (facts, format!("Where is the {what}?"), at[holder].into())
        }
        TaskKind::Qa3 => {
            let who = pick(rng, &PEOPLE);
            let what = pick(rng, &OBJECTS);
            // Three distinct places: picked up in a, carried to b, then to c.
            let places: Vec<&str> = PLACES.choose_multiple(rng, 3).copied().collect();
            let facts = vec![
                moved(rng, who, places[0]),
                format!("{who} picked up the {what}."),
                moved(rng, who, places[1]),
                moved(rng, who, places[2]),
            ];
            let before = rng.random_range(1..3);
            (
                facts,
                format!("Where was the {what} before the {}?", places[before]),
                places[before - 1].into(),
            )
        }
        TaskKind::Needle | TaskKind::Needles => {
            let count = if kind == TaskKind::Needle { 1 } else { 4 };
            let keys: Vec<&str> = KEYS.choose_multiple(rng, count).copied().collect();
            let values: Vec<String> = (0..count)
                .map(|_| rng.random_range(1_000_000..10_000_000u32).to_string())
                .collect();
            let facts = keys
                .iter()
                .zip(&values)
                .map(|(k, v)| format!("The special magic number for {k} is {v}."))
                .collect();
            let q = rng.random_range(0..count);
            (
                facts,
                format!("What is the special magic number for {}?", keys[q]),
                values[q].clone(),
            )
        }
        TaskKind::Variables => {
            let mut names: Vec<String> = Vec::new();
            while names.len() < 8 {
                let name: String = (0..2)
                    .map(|_| char::from(b'A' + rng.random_range(0..26u8)))
                    .collect();
                if !names.contains(&name) {
                    names.push(name);
                }
            }
            let value = rng.random_range(10_000..100_000u32);
            let other = loop {
                let v = rng.random_range(10_000..100_000u32);
                if v != value {
                    break v;
                }
            };
            let chain = |names: &[String], value: u32| -> Vec<String> {
                let mut facts = vec![format!("VAR {} = {value}.", names[0])];
                for w in names.windows(2) {
                    facts.push(format!("VAR {} = VAR {}.", w[1], w[0]));
                }
                facts
            };
            let (ours, theirs) = (chain(&names[..4], value), chain(&names[4..], other));
            // Interleave the two chains, each in its own order.
            let mut facts = Vec::new();
            let (mut i, mut j) = (0, 0);
            while i < ours.len() || j < theirs.len() {
                if j == theirs.len() || (i < ours.len() && rng.random_bool(0.5)) {
                    facts.push(ours[i].clone());
                    i += 1;
                } else {
                    facts.push(theirs[j].clone());
                    j += 1;
                }
            }
            (
                facts,
                format!("Which variables equal {value}?"),
                names[..4].join(" "),
            )
        }
        other => unreachable!("{other:?} is not a retention task"),
    };
    Story {
        facts,
        first_at_start: kind == TaskKind::Memorize,
        question: format!("\n{question} "),
        answer: format!("{answer}."),
    }
}

/// Replace every whole-word occurrence (any case) of a story word in `text` by `x`s.
fn mask(text: &mut [u8]) {
    let words: Vec<&str> = PLACES
        .iter()
        .chain(&PEOPLE)
        .chain(&OBJECTS)
        .chain(&KEYS)
        .copied()
        .collect();
    let is_letter = |b: u8| b.is_ascii_alphabetic();
    let mut i = 0;
    while i < text.len() {
        if !is_letter(text[i]) || (i > 0 && is_letter(text[i - 1])) {
            i += 1;
            continue;
        }
        let end = (i..text.len())
            .find(|&j| !is_letter(text[j]))
            .unwrap_or(text.len());
        let word = &text[i..end];
        if words
            .iter()
            .any(|w| w.as_bytes().eq_ignore_ascii_case(word))
        {
            text[i..end].fill(b'x');
        }
        i = end;
    }
}

/// One sample, made as it is read: book noise in pieces of up to 64 KiB from random training
/// documents (joined by a newline, story words masked), each fact going in, in order, at the
/// first sentence boundary (after `.`, `!` or `?` and a space or newline) at or after a point
/// drawn uniformly over the noise (memorize: its fact opens the text), then the question and
/// the answer. Only the current piece is held, so a sample of any length takes constant
/// memory: the long evaluations read it segment by segment.
#[derive(Debug)]
pub struct Stream<'a, R: Rng> {
    corpus: &'a Corpus,
    rng: R,
    /// Facts not yet written, with the noise offset from which each may go in.
    facts: std::collections::VecDeque<(usize, String)>,
    /// Noise bytes still to write.
    noise_left: usize,
    /// Noise bytes written.
    noise_done: usize,
    /// The current noise piece and the read position in it.
    piece: Vec<u8>,
    at: usize,
    /// The last noise byte written (for sentence boundaries).
    last: u8,
    /// Bytes ready to be read (a fact, or the question and answer at the end).
    ready: std::collections::VecDeque<u8>,
    /// Whether the question and answer have been queued.
    ended: bool,
    /// Bytes of the whole sample, and where the answer starts and ends.
    len: usize,
    answer: std::ops::Range<usize>,
    question: String,
    answer_text: String,
    read: usize,
}

impl<'a, R: Rng> Stream<'a, R> {
    /// A sample of `kind` for `total` bytes, drawn with `rng` (see [`sample`]).
    ///
    /// # Errors
    /// [`Error::Config`] when `total` cannot hold the story.
    pub fn new(kind: TaskKind, corpus: &'a Corpus, total: usize, mut rng: R) -> Result<Self> {
        let story = story(kind, &mut rng);
        let facts: usize = story.facts.iter().map(|f| f.len() + 1).sum();
        let fixed = facts + story.question.len() + answer_width(kind);
        if fixed > total {
            return Err(Error::config(
                "task.segments",
                format!(
                    "a {kind:?} story needs {fixed} bytes; segments * segment_len + 1 is only \
                     {total}"
                ),
            ));
        }
        let noise = total - fixed;
        let mut starts: Vec<usize> = (0..story.facts.len())
            .map(|_| rng.random_range(0..=noise))
            .collect();
        if story.first_at_start {
            starts[0] = 0;
        }
        starts.sort_unstable();
        let answer_start = total - answer_width(kind);
        Ok(Stream {
            corpus,
            rng,
            facts: starts.into_iter().zip(story.facts).collect(),
            noise_left: noise,
            noise_done: 0,
            piece: Vec::new(),
            at: 0,
            last: b'.',
            ready: Default::default(),
            ended: false,
            len: answer_start + story.answer.len(),
            answer: answer_start..answer_start + story.answer.len(),
            question: story.question,
            answer_text: story.answer,
            read: 0,
        })
    }

    /// Bytes in the whole sample.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the sample is empty (never: it holds at least its question and answer).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the answer lies in the sample.
    pub fn answer(&self) -> std::ops::Range<usize> {
        self.answer.clone()
    }

    /// Append the next `n` bytes (fewer at the end) to `out`.
    pub fn read(&mut self, n: usize, out: &mut Vec<u8>) -> Result<()> {
        let goal = self.read.saturating_add(n).min(self.len);
        while self.read < goal {
            if let Some(b) = self.ready.pop_front() {
                out.push(b);
                self.read += 1;
                continue;
            }
            // A fact goes in at its point, at a sentence boundary (or at once at the start).
            let boundary = self.noise_done == 0
                || (matches!(self.last, b'.' | b'!' | b'?')
                    && self
                        .next_noise_byte()?
                        .is_some_and(|b| b.is_ascii_whitespace()));
            if let Some((from, _)) = self.facts.front()
                && (self.noise_left == 0 || (*from <= self.noise_done && boundary))
            {
                let (_, fact) = self.facts.pop_front().expect("a fact");
                if self.noise_done == 0 {
                    self.ready.extend(fact.bytes());
                    self.ready.push_back(b' ');
                } else {
                    self.ready.push_back(b' ');
                    self.ready.extend(fact.bytes());
                }
                continue;
            }
            if self.noise_left > 0 {
                let b = self.next_noise_byte()?.expect("noise is left");
                self.at += 1;
                self.noise_left -= 1;
                self.noise_done += 1;
                self.last = b;
                out.push(b);
                self.read += 1;
                continue;
            }
            if !self.ended {
                self.ended = true;
                self.ready.extend(self.question.bytes());
                self.ready.extend(self.answer_text.bytes());
                continue;
            }
            unreachable!("the sample's length counts every byte");
        }
        Ok(())
    }

    /// The next noise byte, reading a new piece when the current one is done.
    fn next_noise_byte(&mut self) -> Result<Option<u8>> {
        if self.noise_left == 0 {
            return Ok(None);
        }
        if self.at == self.piece.len() {
            let longest = self.corpus.longest_train() as usize;
            let want = self.noise_left.min(PIECE).min(longest);
            self.corpus
                .window_into(want, &mut self.rng, &mut self.piece)?;
            mask(&mut self.piece);
            if self.noise_done > 0 {
                // Pieces are joined by a newline, counted in the noise.
                self.piece.pop();
                self.piece.insert(0, b'\n');
            }
            self.at = 0;
        }
        Ok(Some(self.piece[self.at]))
    }
}

/// A sample of `kind` for `total` bytes (question, answer and all), whole: the [`Stream`]
/// collected. The answer ends `answer_width - answer.len()` bytes before `total` (see
/// [`answer_width`]).
///
/// # Errors
/// [`Error::Config`] when `total` cannot hold the story; the corpus's read errors.
pub fn sample(kind: TaskKind, corpus: &Corpus, total: usize, rng: &mut impl Rng) -> Result<Sample> {
    let mut stream = Stream::new(kind, corpus, total, rng)?;
    let mut text = Vec::with_capacity(stream.len());
    stream.read(stream.len(), &mut text)?;
    let mut answer = vec![false; text.len()];
    answer[stream.answer()].fill(true);
    Ok(Sample {
        tokens: text.into_iter().map(u32::from).collect(),
        answer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const ALL: [TaskKind; 9] = TASKS;

    /// Book-like text that names places, people, objects and keys, so masking is tested.
    fn corpus() -> (tempfile::TempDir, Corpus) {
        let dir = tempfile::tempdir().unwrap();
        let line = "The garden was quiet. Mary sat in the Kitchen with a book! Then John said: \
                    tulip, apple? Nobody knew. ";
        for i in 0..6 {
            std::fs::write(dir.path().join(format!("{i}.txt")), line.repeat(40 + i)).unwrap();
        }
        let corpus = Corpus::open(&[dir.path().to_path_buf()]).unwrap();
        (dir, corpus)
    }

    /// Facts found in `text`, in order: every sentence of the stories' grammar.
    fn facts(text: &str) -> Vec<String> {
        let mut found = Vec::new();
        let starts = |s: &str| {
            PEOPLE.iter().any(|p| s.starts_with(&format!("{p} ")))
                || s.starts_with("The special magic number for ")
                || s.starts_with("VAR ")
        };
        let mut i = 0;
        while i < text.len() {
            if text.is_char_boundary(i)
                && starts(&text[i..])
                && (i == 0 || !text.as_bytes()[i - 1].is_ascii_alphabetic())
            {
                let end = text[i..].find('.').map_or(text.len(), |e| i + e + 1);
                found.push(text[i..end].to_string());
                i = end;
            } else {
                i += 1;
            }
        }
        found
    }

    /// The answer, worked out from the facts found in the text and the question alone.
    fn solve(kind: TaskKind, facts: &[String], question: &str) -> String {
        let words = |s: &str| -> Vec<String> {
            s.trim_end_matches(['.', '?'])
                .split(' ')
                .map(str::to_string)
                .collect()
        };
        // Where each person is and who holds what, replaying the moves.
        let mut at = std::collections::BTreeMap::new();
        let mut held_by = std::collections::BTreeMap::new();
        let mut history: Vec<(String, String)> = Vec::new(); // (object, place) over time
        let mut numbers = std::collections::BTreeMap::new();
        let mut vars: Vec<(String, String)> = Vec::new();
        for f in facts {
            let w = words(f);
            if f.starts_with("The special") {
                numbers.insert(w[5].clone(), w[7].clone());
            } else if f.starts_with("VAR ") {
                let value = if w[3] == "VAR" {
                    vars.iter().find(|(n, _)| *n == w[4]).unwrap().1.clone()
                } else {
                    w[3].clone()
                };
                vars.push((w[1].clone(), value));
            } else if w[1] == "picked" {
                held_by.insert(w[4].clone(), w[0].clone());
                if let Some(p) = at.get(&w[0]) {
                    history.push((w[4].clone(), String::clone(p)));
                }
            } else {
                let place = w.last().unwrap().clone();
                at.insert(w[0].clone(), place.clone());
                for (object, holder) in &held_by {
                    if *holder == w[0] {
                        history.push((object.clone(), place.clone()));
                    }
                }
            }
        }
        let q = words(question.trim());
        let answer = match kind {
            TaskKind::Needle | TaskKind::Needles => numbers[q.last().unwrap()].clone(),
            TaskKind::Variables => {
                let value = &q[3];
                vars.iter()
                    .filter(|(_, v)| v == value)
                    .map(|(n, _)| n.clone())
                    .collect::<Vec<_>>()
                    .join(" ")
            }
            TaskKind::Qa3 => {
                let (object, place) = (&q[3], &q[6]);
                let places: Vec<&String> = history
                    .iter()
                    .filter(|(o, _)| o == object)
                    .map(|(_, p)| p)
                    .collect();
                let i = places.iter().position(|p| *p == place).unwrap();
                places[i - 1].clone()
            }
            _ if q[2] == "the" => at[&held_by[&q[3]]].clone(),
            _ => at[&q[2]].clone(),
        };
        format!("{answer}.")
    }

    #[test]
    fn every_answer_follows_from_the_facts_and_the_noise_never_holds_it() {
        let (_dir, corpus) = corpus();
        for kind in ALL {
            for seed in 0..30 {
                let mut rng = StdRng::seed_from_u64(seed);
                let total = 600;
                let s = sample(kind, &corpus, total, &mut rng).unwrap();
                let width = answer_width(kind);
                let start = s.answer.iter().position(|&a| a).unwrap();
                // The question ends at the same place whatever the answer.
                assert_eq!(start, total - width, "{kind:?}");
                assert!(s.tokens.len() <= total && s.tokens.len() - start <= width);
                let bytes: Vec<u8> = s.tokens.iter().map(|&t| t as u8).collect();
                assert!(s.answer[start..].iter().all(|&a| a));
                let text = String::from_utf8_lossy(&bytes[..start]).into_owned();
                let answer = String::from_utf8_lossy(&bytes[start..]).into_owned();
                let q = text.rfind('\n').unwrap();
                let (story, question) = text.split_at(q);
                let found = facts(story);
                assert_eq!(
                    solve(kind, &found, question),
                    answer,
                    "{kind:?} seed {seed}: {found:?} {question}"
                );
                // Without its facts, the text never names the answer or any story word.
                let mut noise = story.to_string();
                for f in &found {
                    noise = noise.replacen(f.as_str(), "", 1);
                }
                let lower = noise.to_lowercase();
                for word in PLACES.iter().chain(&PEOPLE).chain(&OBJECTS).chain(&KEYS) {
                    let w = word.to_lowercase();
                    let named = lower
                        .split(|c: char| !c.is_ascii_alphabetic())
                        .any(|x| x == w);
                    assert!(!named, "{kind:?}: the noise names {word}");
                }
                if kind == TaskKind::Memorize {
                    assert!(
                        story.starts_with(&found[0]),
                        "memorize's fact opens the text"
                    );
                }
            }
        }
    }

    #[test]
    fn every_story_fits_the_longest_story_bound() {
        let mut rng = StdRng::seed_from_u64(11);
        for kind in ALL {
            let bound = max_story_len(kind);
            let mut longest = 0;
            for _ in 0..2000 {
                let s = story(kind, &mut rng);
                let len = s.facts.iter().map(|f| f.len() + 1).sum::<usize>()
                    + s.question.len()
                    + answer_width(kind);
                assert!(len <= bound, "{kind:?}: {len} > {bound}");
                longest = longest.max(len);
            }
            assert!(
                longest + 12 >= bound,
                "{kind:?}: the bound {bound} is loose ({longest})"
            );
        }
    }

    #[test]
    fn samples_are_reproducible_and_a_short_input_is_an_error() {
        let (_dir, corpus) = corpus();
        for kind in ALL {
            let draw = |seed| sample(kind, &corpus, 500, &mut StdRng::seed_from_u64(seed)).unwrap();
            assert_eq!(draw(7), draw(7), "{kind:?}");
            assert_ne!(draw(7), draw(8), "{kind:?}");
            let err = sample(kind, &corpus, 20, &mut StdRng::seed_from_u64(1)).unwrap_err();
            assert!(err.to_string().contains("task.segments"), "{err}");
        }
    }

    #[test]
    fn long_noise_spans_documents() {
        let (_dir, corpus) = corpus();
        let mut rng = StdRng::seed_from_u64(3);
        let s = sample(TaskKind::Memorize, &corpus, 100_000, &mut rng).unwrap();
        assert_eq!(
            s.answer.iter().position(|&a| a),
            Some(100_000 - answer_width(TaskKind::Memorize))
        );
    }
}
