//! Facts hidden in book text: the retention tasks of RMT-1M, BABILong and RULER, written from
//! their published descriptions (see `../shared/DATA.md`), as bytes.
//!
//! Every sample is book text (the noise: documents of one split of the corpus, training for
//! training and held out for evaluation, see [`noise`]) with
//! the task's facts inserted, in order, at sentence boundaries; then a question; then the answer,
//! which alone is scored. The sample fills the input exactly, so the question always ends the
//! last segment and the facts sit as far back as the input reaches.
//!
//! | task | facts | question | answer |
//! |---|---|---|---|
//! | `memorize` | one move, at the very start | `Where is Mary?` | a place |
//! | `detect` | one move, at a random sentence boundary | `Where is Mary?` | a place |
//! | `reasoning` | a pick-up and a move of one person, at random boundaries | `Where is the apple?` | a place |
//! | `qa1` | 6 moves of 4 people (`task.moves`) | `Where is Mary?` (her last move) | a place |
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

use super::text::{Corpus, Split, Window};
use super::{Sample, TaskKind};
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// The six places: the answer of every bAbI-style task (chance 1/6).
pub const PLACES: [&str; 6] = [
    "kitchen", "garden", "office", "bathroom", "hallway", "bedroom",
];
/// People who move.
pub const PEOPLE: [&str; 6] = ["Mary", "John", "Sandra", "Daniel", "Fred", "Julie"];
/// Objects that are picked up.
pub const OBJECTS: [&str; 4] = ["apple", "football", "milk", "book"];
/// Verbs of a move.
pub const MOVES: [&str; 4] = ["went", "moved", "journeyed", "travelled"];
/// Moves in a qa1 story unless `task.moves` says otherwise.
pub const QA1_MOVES: usize = 6;
/// People in a qa1 story (not all of them need move): the most questions one can ask.
pub const QA1_PEOPLE: usize = 4;
/// Needle keys.
pub const KEYS: [&str; 8] = [
    "tulip", "falcon", "copper", "meadow", "lantern", "walnut", "harbor", "violet",
];

/// Bytes of book text a noise piece reads at most from one document.
const PIECE: usize = 1 << 16;
/// Bytes of a piece read at a time (a streamed sample holds this much of its noise).
const PART: usize = 1 << 12;
/// Letters in the longest story word (a longer run of letters cannot be one).
const LONGEST_WORD: usize = {
    const fn longest(words: &[&str], at_least: usize) -> usize {
        let (mut i, mut most) = (0, at_least);
        while i < words.len() {
            if words[i].len() > most {
                most = words[i].len();
            }
            i += 1;
        }
        most
    }
    longest(
        &KEYS,
        longest(&OBJECTS, longest(&PEOPLE, longest(&PLACES, 0))),
    )
};

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
/// `moves` and `questions`: a qa1 story's moves and questions (other tasks ignore them).
pub fn max_story_len(kind: TaskKind, moves: usize, questions: usize) -> usize {
    max_story_units(kind, moves, questions, &Units::Bytes).expect("bytes always encode")
}

/// [`max_story_len`] in `units`. Both kinds of pretrained tokenizer split text into words
/// (at spaces and punctuation) before anything else, so a sentence's length is the sum of its
/// words', and the longest story is the longest word in each slot; numbers and variable names
/// count one unit per byte, which no tokenizer exceeds.
pub fn max_story_units(
    kind: TaskKind,
    moves: usize,
    questions: usize,
    units: &Units,
) -> Result<usize> {
    let n = |text: &str| units.encode(text).map(|ids| ids.len());
    let longest = |words: &[&str]| -> Result<usize> {
        let mut most = 0;
        for w in words {
            most = most.max(n(&format!(" {w}"))?);
        }
        Ok(most)
    };
    let (person, place, object, key, verb) = (
        longest(&PEOPLE)?,
        longest(&PLACES)?,
        longest(&OBJECTS)?,
        longest(&KEYS)?,
        longest(&MOVES)?,
    );
    // " <person> <verb> to the <place>.", " <person> picked up the <object>."
    let moved = person + verb + n(" to the")? + place + n(".")?;
    let picked = person + n(" picked up the")? + object + n(".")?;
    let needle = n(" The special magic number for")? + key + n(" is")? + " 1234567".len() + n(".")?;
    let asked = |opening: &str, slot: usize| -> Result<usize> { Ok(n(opening)? + slot + n("? ")?) };
    let (facts, question) = match kind {
        TaskKind::Memorize | TaskKind::Detect => (moved, asked("\nWhere is", person)?),
        TaskKind::Reasoning => (moved + picked, asked("\nWhere is the", object)?),
        // The questions before the last are answered in the story, as widely as the last.
        TaskKind::Qa1 => (
            moves * moved + (questions - 1) * answer_width(kind),
            questions * asked("\nWhere is", person)?,
        ),
        TaskKind::Qa2 => (6 * moved + picked, asked("\nWhere is the", object)?),
        TaskKind::Qa3 => (
            3 * moved + picked,
            asked("\nWhere was the", object)? + n(" before the")? + place,
        ),
        TaskKind::Needle => (
            needle,
            asked("\nWhat is the special magic number for", key)?,
        ),
        TaskKind::Needles => (
            4 * needle,
            asked("\nWhat is the special magic number for", key)?,
        ),
        TaskKind::Variables => (
            2 * " VAR XX = 12345.".len() + 6 * " VAR XX = VAR XX.".len(),
            asked("\nWhich variables equal", " 12345".len())?,
        ),
        _ => (0, 0),
    };
    Ok(facts + question + answer_width(kind))
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
    /// The earliest fact the answer needs (an index into `facts`): how far back it lies is how
    /// long the memory had to keep it.
    pub support: usize,
    /// Questions asked and answered before `question` (qa1 training with several questions),
    /// each `(question, answer)` in their forms; empty for one question.
    pub earlier: Vec<(String, String)>,
}

/// A move: `{who} {verb} to the {place}.`
fn move_fact(who: &str, verb: &str, place: &str) -> String {
    format!("{who} {verb} to the {place}.")
}

impl Story {
    /// RMT-1M's memorize story with the given words: `{who} {verb} to the {place}.` opens the
    /// text, `Where is {who}?` ends it, `{place}.` answers (the page's retention demo buries a
    /// visitor's fact this way).
    pub fn memorize(who: &str, verb: &str, place: &str) -> Story {
        Story {
            facts: vec![move_fact(who, verb, place)],
            first_at_start: true,
            question: format!("\nWhere is {who}? "),
            answer: format!("{place}."),
            support: 0,
            earlier: Vec::new(),
        }
    }

    /// The story as bytes around `noise` (masked here, see [`mask`]): its facts open the text,
    /// each followed by a space, then the noise, the question and the answer. For a memorize
    /// story these are the bytes a [`Stream`] writes with this noise. Returns the ids and
    /// where the answer lies in them.
    pub fn around(&self, noise: &[u8]) -> (Vec<u32>, std::ops::Range<usize>) {
        let mut text = Vec::with_capacity(noise.len() + 64);
        for fact in &self.facts {
            text.extend_from_slice(fact.as_bytes());
            text.push(b' ');
        }
        let at = text.len();
        text.extend_from_slice(noise);
        mask(&mut text[at..]);
        for (question, answer) in &self.earlier {
            text.extend_from_slice(question.as_bytes());
            text.extend_from_slice(answer.as_bytes());
        }
        text.extend_from_slice(self.question.as_bytes());
        let start = text.len();
        text.extend_from_slice(self.answer.as_bytes());
        let answer = start..text.len();
        (text.into_iter().map(u32::from).collect(), answer)
    }
}

/// Draw a story of `kind`; a qa1 story has `moves` moves and asks about up to `questions` of
/// the people who moved (other tasks ignore both). One question draws the same story whatever
/// the number asked for.
pub fn story(kind: TaskKind, moves: usize, questions: usize, rng: &mut impl Rng) -> Story {
    let pick = |rng: &mut dyn rand::RngCore, from: &[&'static str]| -> &'static str {
        from[rng.random_range(0..from.len())]
    };
    let moved = |rng: &mut dyn rand::RngCore, who: &str, place: &str| {
        move_fact(who, MOVES[rng.random_range(0..MOVES.len())], place)
    };
    let mut earlier = Vec::new();
    let (facts, question, answer, support): (Vec<String>, String, String, usize) = match kind {
        TaskKind::Memorize | TaskKind::Detect => {
            let (who, place) = (pick(rng, &PEOPLE), pick(rng, &PLACES));
            (
                vec![moved(rng, who, place)],
                format!("Where is {who}?"),
                place.into(),
                0,
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
            // Both facts are needed: the first of them is the earliest.
            (facts, format!("Where is the {what}?"), place.into(), 0)
        }
        TaskKind::Qa1 => {
            let people: Vec<&str> = PEOPLE.choose_multiple(rng, QA1_PEOPLE).copied().collect();
            // Each person's last move: who, where, and which fact says so.
            let mut last: Vec<(&str, &str, usize)> = Vec::new();
            let facts: Vec<String> = (0..moves)
                .map(|i| {
                    let (who, place) = (pick(rng, &people), pick(rng, &PLACES));
                    last.retain(|&(w, _, _)| w != who);
                    last.push((who, place, i));
                    moved(rng, who, place)
                })
                .collect();
            let (who, place, at) = last.swap_remove(rng.random_range(0..last.len()));
            // Before it, others who moved, in random order.
            let others = (questions - 1).min(last.len());
            if others > 0 {
                for &(who, place, _) in last.choose_multiple(rng, others) {
                    earlier.push((format!("\nWhere is {who}? "), format!("{place}.")));
                }
            }
            (facts, format!("Where is {who}?"), place.into(), at)
        }
        TaskKind::Qa2 => {
            let people: Vec<&str> = PEOPLE.choose_multiple(rng, 4).copied().collect();
            let (holder, what) = (people[0], pick(rng, &OBJECTS));
            let mut facts = Vec::new();
            // Each person's last place, and the fact that put them there.
            let mut at = std::collections::BTreeMap::new();
            // The holder is somewhere first; the pick-up comes at a random point of 5 moves.
            let start = pick(rng, &PLACES);
            facts.push(moved(rng, holder, start));
            at.insert(holder, (start, 0));
            let pickup = rng.random_range(0..5);
            let mut picked = 0;
            for i in 0..5 {
                if i == pickup {
                    picked = facts.len();
                    facts.push(format!("{holder} picked up the {what}."));
                }
                let (who, place) = (pick(rng, &people), pick(rng, &PLACES));
                at.insert(who, (place, facts.len()));
                facts.push(moved(rng, who, place));
            }
            // Needed: the pick-up (whose object it is) and the holder's last move.
            let (place, moved_at) = at[holder];
            (
                facts,
                format!("Where is the {what}?"),
                place.into(),
                picked.min(moved_at),
            )
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
            // Needed: the pick-up (fact 1) and the move to the place asked about's predecessor
            // (fact 0 or 2).
            let support = if before == 1 { 0 } else { 1 };
            (
                facts,
                format!("Where was the {what} before the {}?", places[before]),
                places[before - 1].into(),
                support,
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
                q,
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
            // The answer names the whole chain: its value's assignment comes first.
            let support = facts
                .iter()
                .position(|f| f == &ours[0])
                .expect("the chain's first fact is in the story");
            (
                facts,
                format!("Which variables equal {value}?"),
                names[..4].join(" "),
                support,
            )
        }
        other => unreachable!("{other:?} is not a retention task"),
    };
    Story {
        facts,
        first_at_start: kind == TaskKind::Memorize,
        question: format!("\n{question} "),
        answer: format!("{answer}."),
        support,
        earlier,
    }
}

/// Replace every whole-word occurrence (any case) of a story word in `text` by `x`s, so book
/// text never names a person, place, object or key a question asks about.
pub fn mask(text: &mut [u8]) {
    mask_after(text, false);
}

/// [`mask`] for a part of a text: `after_letter` says whether the byte before `text` is a
/// letter (then the letters `text` opens with end a word that began before it, and are left).
fn mask_after(text: &mut [u8], after_letter: bool) {
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
        let continues = if i == 0 {
            after_letter
        } else {
            is_letter(text[i - 1])
        };
        if !is_letter(text[i]) || continues {
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

/// How a sample's text becomes ids: one per byte (remem's models trained from scratch), or a
/// pretrained model's tokens.
#[derive(Debug, Clone)]
pub enum Units<'a> {
    /// Byte values.
    Bytes,
    /// A pretrained tokenizer's ids ([`Units::tokens`]).
    Tokens {
        /// The tokenizer.
        tokenizer: &'a Tokenizer,
        /// Ids after which a sentence ends (`.`, `!`, `?`).
        enders: Vec<u32>,
        /// Every id of a story word's encodings (any case, with or without a leading space):
        /// replaced in the noise by `x`, since masking words as bytes misses a story word that
        /// opens a longer one (`kitchens` is `kitchen ##s` to WordPiece).
        story: std::collections::HashSet<u32>,
        /// The id of `x`.
        x: u32,
    },
}

impl<'a> Units<'a> {
    /// The units of `tokenizer`: [`Units::Bytes`] for the byte tokenizer, else its tokens.
    pub fn new(tokenizer: Option<&'a Tokenizer>) -> Result<Self> {
        match tokenizer {
            None | Some(Tokenizer::Bytes) => Ok(Units::Bytes),
            Some(t) => Self::tokens(t),
        }
    }

    /// The units of a pretrained `tokenizer`.
    pub fn tokens(tokenizer: &'a Tokenizer) -> Result<Self> {
        let encode = |text: &str| tokenizer.encode(text, usize::MAX);
        let single = |text: &str| -> Result<u32> {
            match encode(text)?.as_slice() {
                [id] => Ok(*id),
                ids => Err(Error::Input(format!(
                    "the tokenizer writes `{text}` as {} tokens, not one: it cannot carry the \
                     retention tasks",
                    ids.len()
                ))),
            }
        };
        let enders = [".", "!", "?"]
            .iter()
            .map(|p| single(p))
            .collect::<Result<_>>()?;
        let x = single("x")?;
        let mut story = std::collections::HashSet::new();
        for word in PLACES.iter().chain(&PEOPLE).chain(&OBJECTS).chain(&KEYS) {
            for form in [word.to_string(), word.to_lowercase()] {
                story.extend(encode(&form)?);
                story.extend(encode(&format!(" {form}"))?);
            }
        }
        story.remove(&x);
        Ok(Units::Tokens {
            tokenizer,
            enders,
            story,
            x,
        })
    }

    /// `text` as ids.
    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Units::Bytes => Ok(text.bytes().map(u32::from).collect()),
            Units::Tokens { tokenizer, .. } => tokenizer.encode(text, usize::MAX),
        }
    }

    /// A fact as it goes into the text: after a space, or (bytes, at the very start) before one.
    fn fact(&self, fact: &str, at_start: bool) -> Result<Vec<u32>> {
        match self {
            Units::Bytes if at_start => self.encode(&format!("{fact} ")),
            _ => self.encode(&format!(" {fact}")),
        }
    }

    /// A piece of book text as a tokenizer's noise, into `out`: story words masked, then
    /// every id of a story word (or a part of one) replaced by `x`'s. (Bytes are read in parts
    /// by [`Stream`] itself.)
    fn token_noise(&self, bytes: &mut [u8], out: &mut Vec<u32>) -> Result<()> {
        mask(bytes);
        out.clear();
        if let Units::Tokens { story, x, .. } = self {
            out.extend(self.encode(&String::from_utf8_lossy(bytes))?);
            for id in out.iter_mut() {
                if story.contains(id) {
                    *id = *x;
                }
            }
        }
        Ok(())
    }

    /// Whether `last` ends a sentence: `.`, `!` or `?` (as bytes, a boundary also needs
    /// whitespace next).
    fn ends_sentence(&self, last: u32) -> bool {
        match self {
            Units::Bytes => matches!(u8::try_from(last), Ok(b'.' | b'!' | b'?')),
            Units::Tokens { enders, .. } => enders.contains(&last),
        }
    }

    /// Bytes of book text to read for `units` units of noise.
    fn bytes_for(&self, units: usize) -> usize {
        match self {
            Units::Bytes => units,
            Units::Tokens { .. } => units.saturating_mul(super::BYTES_PER_TOKEN),
        }
    }
}

/// One sample, made as it is read: book noise in pieces of up to 64 KiB from random training
/// documents (story words masked; as bytes, joined by a newline), each fact going in, in order,
/// at the first sentence boundary (bytes: after `.`, `!` or `?` and before a space or newline;
/// tokens: after a `.`, `!` or `?` token) at or after a point drawn uniformly over the noise
/// (memorize: its fact opens the text), then the question and the answer. Lengths count
/// [`Units`]: bytes, or a pretrained tokenizer's tokens. Only the current piece is held, so a
/// sample of any length takes constant memory: the long evaluations read it segment by segment.
#[derive(Debug)]
pub struct Stream<'a, R: Rng> {
    corpus: &'a Corpus,
    /// The documents the noise comes from.
    split: Split,
    units: Units<'a>,
    rng: R,
    /// Facts not yet written, with the noise offset from which each may go in.
    facts: std::collections::VecDeque<(usize, String)>,
    /// Noise units still to write.
    noise_left: usize,
    /// Noise units written.
    noise_done: usize,
    /// Bytes: the noise piece being read, a part at a time.
    window: Option<Window>,
    /// Bytes: the part read (masked up to `masked`; after it, a word cut by the part's end,
    /// masked with the next part). Tokens: the whole piece's bytes.
    bytes: Vec<u8>,
    /// Bytes: where the masked part ends; whether the piece opened with a newline (then its
    /// last byte is dropped, so its length holds); whether the byte before `bytes` is a letter
    /// that a word continues from.
    masked: usize,
    newline: bool,
    after_letter: bool,
    /// Bytes: how many bytes of a piece to read at a time ([`PART`]; tests vary it).
    part: usize,
    /// Tokens: the current piece's ids.
    piece: Vec<u32>,
    /// The read position in the current part (bytes) or piece (tokens).
    at: usize,
    /// The last noise unit written (for sentence boundaries).
    last: u32,
    /// Units ready to be read (a fact, or the question and answer at the end).
    ready: std::collections::VecDeque<u32>,
    /// Whether the question and answer have been queued.
    ended: bool,
    /// Units of the whole sample, and where the answer starts and ends.
    len: usize,
    answer: std::ops::Range<usize>,
    question: Vec<u32>,
    answer_ids: Vec<u32>,
    /// The earlier questions with their answers ([`Story::earlier`]), and where those answers
    /// lie in the sample.
    earlier: Vec<u32>,
    earlier_answers: Vec<std::ops::Range<usize>>,
    read: usize,
    /// Which fact the answer needs first ([`Story::support`]), and where each fact written so
    /// far starts.
    support: usize,
    fact_starts: Vec<usize>,
    /// Facts in the story.
    fact_count: usize,
}

impl<'a, R: Rng> Stream<'a, R> {
    /// A sample of `kind` (a qa1 story of `moves` moves and `questions` questions) for `total`
    /// units, its noise from the documents of `split`, drawn with `rng` (see [`sample`]).
    /// With `within` `Some(n)`, every fact lies in the sample's last `n` units (a late story,
    /// [`crate::task::TaskConfig::late_facts`]); with `None`, anywhere.
    ///
    /// # Errors
    /// [`Error::Config`] when `total` (or `within`) cannot hold the story; the tokenizer's
    /// errors.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: TaskKind,
        moves: usize,
        questions: usize,
        corpus: &'a Corpus,
        split: Split,
        units: Units<'a>,
        total: usize,
        within: Option<usize>,
        mut rng: R,
    ) -> Result<Self> {
        let story = story(kind, moves, questions, &mut rng);
        let mut facts_len = 0;
        for (i, fact) in story.facts.iter().enumerate() {
            facts_len += units.fact(fact, i == 0 && story.first_at_start)?.len();
        }
        let question = units.encode(&story.question)?;
        let answer_ids = units.encode(&story.answer)?;
        let (mut earlier, mut spans) = (Vec::new(), Vec::new());
        for (question, answer) in &story.earlier {
            earlier.extend(units.encode(question)?);
            let at = earlier.len();
            earlier.extend(units.encode(answer)?);
            spans.push(at..earlier.len());
        }
        // A token holds at least a byte, so the byte width bounds every tokenizer's answer.
        let width = answer_width(kind);
        debug_assert!(answer_ids.len() <= width);
        let fixed = facts_len + earlier.len() + question.len() + width;
        if fixed > total {
            return Err(Error::config(
                "task.segments",
                format!(
                    "a {kind:?} story needs {fixed} tokens; segments * segment_len + 1 is only \
                     {total}"
                ),
            ));
        }
        if let Some(window) = within.filter(|&n| fixed > n.min(total)) {
            return Err(Error::config(
                "task.late_segments",
                format!("a {kind:?} story needs {fixed} tokens; its late window is only {window}"),
            ));
        }
        let noise = total - fixed;
        // A fact at noise offset `s` has `noise - s + fixed` units from its start to the end.
        let first = within.map_or(0, |n| total.saturating_sub(n));
        let mut starts: Vec<usize> = (0..story.facts.len())
            .map(|_| rng.random_range(first..=noise))
            .collect();
        if story.first_at_start {
            starts[0] = 0;
        }
        starts.sort_unstable();
        let answer_start = total - width;
        // The earlier questions and answers come just before the last question.
        let earlier_start = answer_start - question.len() - earlier.len();
        let earlier_answers = spans
            .into_iter()
            .map(|r| earlier_start + r.start..earlier_start + r.end)
            .collect();
        let fact_count = story.facts.len();
        Ok(Stream {
            corpus,
            split,
            units,
            rng,
            facts: starts.into_iter().zip(story.facts).collect(),
            noise_left: noise,
            noise_done: 0,
            window: None,
            bytes: Vec::new(),
            masked: 0,
            newline: false,
            after_letter: false,
            part: PART,
            piece: Vec::new(),
            at: 0,
            last: u32::from(b'.'),
            ready: Default::default(),
            ended: false,
            len: answer_start + answer_ids.len(),
            answer: answer_start..answer_start + answer_ids.len(),
            question,
            answer_ids,
            earlier,
            earlier_answers,
            read: 0,
            support: story.support,
            fact_starts: Vec::new(),
            fact_count,
        })
    }

    /// Units in the whole sample.
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

    /// Where every answer lies in the sample: the earlier questions' (in order), then the last
    /// one's ([`Stream::answer`]).
    pub fn answers(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        self.earlier_answers
            .iter()
            .cloned()
            .chain(std::iter::once(self.answer()))
    }

    /// Where the earliest fact the answer needs ([`Story::support`]) starts in the sample, once
    /// it has been read.
    pub fn support_start(&self) -> Option<usize> {
        self.fact_starts.get(self.support).copied()
    }

    /// How many facts the story writes after the earliest one the answer needs: the writes
    /// that could overwrite it in the memory (qa1: the other people's later moves).
    pub fn later_facts(&self) -> usize {
        self.fact_count - self.support - 1
    }

    /// Append the next `n` units (fewer at the end) to `out`.
    pub fn read(&mut self, n: usize, out: &mut Vec<u32>) -> Result<()> {
        let goal = self.read.saturating_add(n).min(self.len);
        while self.read < goal {
            if let Some(b) = self.ready.pop_front() {
                out.push(b);
                self.read += 1;
                continue;
            }
            // A fact goes in at its point, at a sentence boundary (or at once at the start).
            let due = self
                .facts
                .front()
                .is_some_and(|(from, _)| self.noise_left == 0 || *from <= self.noise_done);
            if due {
                let boundary = self.noise_done == 0
                    || (self.units.ends_sentence(self.last)
                        && (!matches!(self.units, Units::Bytes)
                            || self.next_noise()?.is_some_and(|b| {
                                u8::try_from(b).is_ok_and(|b| b.is_ascii_whitespace())
                            })));
                if self.noise_left == 0 || boundary {
                    let (_, fact) = self.facts.pop_front().expect("a fact");
                    let ids = self.units.fact(&fact, self.noise_done == 0)?;
                    // Nothing is waiting in `ready`: the fact's first unit is the next read.
                    self.fact_starts.push(self.read);
                    self.ready.extend(ids);
                    continue;
                }
            }
            if self.noise_left > 0 {
                let b = self.next_noise()?.expect("noise is left");
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
                self.ready.extend(self.earlier.iter().copied());
                self.ready.extend(self.question.iter().copied());
                self.ready.extend(self.answer_ids.iter().copied());
                continue;
            }
            unreachable!("the sample's length counts every unit");
        }
        Ok(())
    }

    /// The next noise unit, reading on in the piece or opening a new one.
    fn next_noise(&mut self) -> Result<Option<u32>> {
        if self.noise_left == 0 {
            return Ok(None);
        }
        if matches!(self.units, Units::Bytes) {
            while self.at == self.masked {
                self.read_part()?;
            }
            return Ok(Some(u32::from(self.bytes[self.at])));
        }
        while self.at == self.piece.len() {
            let want = self.piece_len();
            self.corpus
                .window_into(self.split, want, &mut self.rng, &mut self.bytes)?;
            self.units.token_noise(&mut self.bytes, &mut self.piece)?;
            self.at = 0;
        }
        Ok(Some(self.piece[self.at]))
    }

    /// Bytes of book text for the next piece.
    fn piece_len(&self) -> usize {
        let longest = self.corpus.longest(self.split) as usize;
        self.units
            .bytes_for(self.noise_left)
            .min(PIECE)
            .min(longest)
    }

    /// Bytes: the next part of the piece (opening a new piece when this one is done), masked.
    /// The same text as masking the whole piece at once: a word the part's end cuts waits for
    /// the next part (a run of letters longer than any story word cannot be one and goes on).
    /// A piece after the first opens with a newline and drops its last byte.
    fn read_part(&mut self) -> Result<()> {
        self.bytes.drain(..self.at);
        self.at = 0;
        if self.window.as_ref().is_none_or(|w| w.left() == 0) {
            let want = self.piece_len();
            self.window = Some(self.corpus.open_window(self.split, want, &mut self.rng)?);
            self.newline = self.noise_done > 0;
            self.after_letter = false;
            debug_assert!(self.bytes.is_empty(), "a piece ends with no word held");
            if self.newline {
                self.bytes.push(b'\n');
            }
        }
        let window = self.window.as_mut().expect("a piece is open");
        window.read(self.part, &mut self.bytes)?;
        let ends = window.left() == 0;
        let is_letter = |b: &u8| b.is_ascii_alphabetic();
        let run = self.bytes.iter().rev().take_while(|b| is_letter(b)).count();
        // The run is a word's start unless it fills the part and continues the part before.
        let starts_word = run < self.bytes.len() || !self.after_letter;
        let held = if !ends && run <= LONGEST_WORD && starts_word {
            run
        } else {
            0
        };
        let mut ready = self.bytes.len() - held;
        mask_after(&mut self.bytes[..ready], self.after_letter);
        if ready > 0 {
            self.after_letter = held == 0 && is_letter(&self.bytes[ready - 1]);
        }
        if ends && self.newline {
            self.bytes.pop();
            ready -= 1;
        }
        self.masked = ready;
        Ok(())
    }
}

/// A sample of `kind` (a qa1 story of `moves` moves and `questions` questions) for `total`
/// units (question, answer and all), its noise from the documents of `split`, whole: the
/// [`Stream`] collected, every answer marked. The last answer ends
/// `answer_width - answer.len()` units before `total` (see [`answer_width`]).
///
/// # Errors
/// [`Error::Config`] when `total` cannot hold the story; the corpus's read errors.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    kind: TaskKind,
    moves: usize,
    questions: usize,
    corpus: &Corpus,
    split: Split,
    units: Units<'_>,
    total: usize,
    within: Option<usize>,
    rng: &mut impl Rng,
) -> Result<Sample> {
    let mut stream = Stream::new(
        kind, moves, questions, corpus, split, units, total, within, rng,
    )?;
    let mut tokens = Vec::with_capacity(stream.len());
    stream.read(stream.len(), &mut tokens)?;
    let mut answer = vec![false; tokens.len()];
    for range in stream.answers() {
        answer[range].fill(true);
    }
    Ok(Sample { tokens, answer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const ALL: [TaskKind; 9] = TASKS;

    /// Every task with its default story, and qa1 with shorter and longer ones and with
    /// several questions: `(kind, moves, questions)`.
    fn shapes() -> impl Iterator<Item = (TaskKind, usize, usize)> {
        ALL.into_iter()
            .map(|kind| (kind, QA1_MOVES, 1))
            .chain([1, 2, 3, 10].map(|moves| (TaskKind::Qa1, moves, 1)))
            .chain([(6, 2), (6, 4), (10, 4)].map(|(m, q)| (TaskKind::Qa1, m, q)))
    }

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
                // A variable set from one the facts given never set has no value.
                let value = if w[3] == "VAR" {
                    vars.iter()
                        .find(|(n, _)| *n == w[4])
                        .map_or(String::new(), |(_, v)| v.clone())
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
        for (kind, moves, questions) in shapes() {
            for seed in 0..30 {
                let mut rng = StdRng::seed_from_u64(seed);
                let total = 600;
                let s = sample(
                    kind,
                    moves,
                    questions,
                    &corpus,
                    Split::Train,
                    Units::Bytes,
                    total,
                    None,
                    &mut rng,
                )
                .unwrap();
                let width = answer_width(kind);
                // The answers: runs of marked positions.
                let mut answers: Vec<std::ops::Range<usize>> = Vec::new();
                for (i, _) in s.answer.iter().enumerate().filter(|(_, a)| **a) {
                    match answers.last_mut() {
                        Some(run) if run.end == i => run.end += 1,
                        _ => answers.push(i..i + 1),
                    }
                }
                // The last question ends at the same place whatever the answer, which ends
                // the sample.
                let last = answers.last().unwrap().clone();
                assert_eq!(last.start, total - width, "{kind:?}");
                assert_eq!(last.end, s.tokens.len(), "{kind:?}");
                assert!(s.tokens.len() <= total && s.tokens.len() - last.start <= width);
                let bytes: Vec<u8> = s.tokens.iter().map(|&t| t as u8).collect();
                let text =
                    |r: std::ops::Range<usize>| String::from_utf8_lossy(&bytes[r]).into_owned();
                let first = answers[0].start;
                let q = bytes[..first].iter().rposition(|&b| b == b'\n').unwrap();
                let story = text(0..q);
                let story = story.as_str();
                let found = facts(story);
                if kind == TaskKind::Qa1 {
                    assert_eq!(found.len(), moves, "qa1 seed {seed}: {found:?}");
                }
                // Each question (a line of its own after the story or the answer before it)
                // is answered by the facts.
                let mut asked = Vec::new();
                let mut from = q;
                for answer in &answers {
                    let question = text(from..answer.start);
                    assert!(question.starts_with('\n') && !question[1..].contains('\n'));
                    assert_eq!(
                        solve(kind, &found, &question),
                        text(answer.clone()),
                        "{kind:?} seed {seed}: {found:?} {question}"
                    );
                    asked.push(question);
                    from = answer.end;
                }
                // Several questions ask about as many people as asked for (fewer when fewer
                // moved), none twice.
                let movers: std::collections::BTreeSet<&str> =
                    found.iter().filter_map(|f| f.split(' ').next()).collect();
                let expected = match kind {
                    TaskKind::Qa1 => questions.min(movers.len()),
                    _ => 1,
                };
                assert_eq!(asked.len(), expected, "{kind:?} seed {seed}: {asked:?}");
                asked.sort();
                asked.dedup();
                assert_eq!(asked.len(), expected, "{kind:?} seed {seed}: {asked:?}");
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

    /// The fact a story names as the earliest its answer needs ([`Story::support`]) is enough
    /// with the facts after it (the solver answers from them alone), is about the question (it
    /// shares a word with the question or the answer), and is where the stream says it starts,
    /// with as many facts after it as the stream says.
    #[test]
    fn the_supporting_fact_is_needed_and_found_where_the_stream_says() {
        let (_dir, corpus) = corpus();
        let common = [
            "the", "to", "is", "was", "up", "before", "where", "what", "which",
        ];
        let words = |s: &str| -> Vec<String> {
            s.split(|c: char| !c.is_ascii_alphanumeric())
                .filter(|w| !w.is_empty() && !common.contains(&w.to_lowercase().as_str()))
                .map(str::to_string)
                .collect()
        };
        let (mut back, mut after) = (0, Vec::new());
        for (kind, moves, questions) in shapes() {
            for seed in 0..30 {
                let rng = StdRng::seed_from_u64(seed);
                let told = story(kind, moves, questions, &mut rng.clone());
                let later = &told.facts[told.support..];
                assert_eq!(
                    solve(kind, later, &told.question),
                    told.answer,
                    "{kind:?} seed {seed}: {told:?}"
                );
                let support = &told.facts[told.support];
                let asked: Vec<String> = words(&told.question)
                    .into_iter()
                    .chain(words(&told.answer))
                    .collect();
                assert!(
                    words(support).iter().any(|w| asked.contains(w)),
                    "{kind:?} seed {seed}: {support} is not about {told:?}"
                );
                back += usize::from(told.support > 0);
                let mut stream = Stream::new(
                    kind,
                    moves,
                    questions,
                    &corpus,
                    Split::Train,
                    Units::Bytes,
                    600,
                    None,
                    rng,
                )
                .unwrap();
                let mut ids = Vec::new();
                stream.read(usize::MAX, &mut ids).unwrap();
                let at = stream.support_start().unwrap();
                let bytes: Vec<u8> = ids.iter().map(|&t| t as u8).collect();
                let text = String::from_utf8_lossy(&bytes[at..]).into_owned();
                assert!(
                    text.trim_start().starts_with(support.as_str()),
                    "{kind:?} seed {seed}: {support:?} is not at {at}: {text:?}"
                );
                // The facts written after it are those found in the text after it.
                assert_eq!(
                    facts(&text).len(),
                    1 + stream.later_facts(),
                    "{kind:?} seed {seed}: {text:?}"
                );
                after.push(stream.later_facts());
            }
        }
        // Not always the first fact: the measure tells the stories apart.
        assert!(back > 30, "{back}");
        // Nor always the last one.
        assert!(after.iter().filter(|&&n| n == 0).count() > 30, "{after:?}");
        assert!(after.iter().filter(|&&n| n > 1).count() > 30, "{after:?}");
    }

    #[test]
    fn every_story_fits_the_longest_story_bound() {
        let mut rng = StdRng::seed_from_u64(11);
        for (kind, moves, questions) in shapes() {
            let bound = max_story_len(kind, moves, questions);
            let mut longest = 0;
            for _ in 0..2000 {
                let s = story(kind, moves, questions, &mut rng);
                let len = s.facts.iter().map(|f| f.len() + 1).sum::<usize>()
                    + s.earlier
                        .iter()
                        .map(|(q, a)| q.len() + a.len())
                        .sum::<usize>()
                    + s.question.len()
                    + answer_width(kind);
                assert!(len <= bound, "{kind:?}: {len} > {bound}");
                longest = longest.max(len);
            }
            // The bound takes each slot's longest word; 2000 draws of many moves rarely do,
            // so each move past the sixth may leave a few bytes more, and each question
            // past the first (about different people, not all of the longest names).
            let slack = 12 + 3 * moves.saturating_sub(QA1_MOVES) + 3 * (questions - 1);
            assert!(
                longest + slack >= bound,
                "{kind:?} ({moves} moves): the bound {bound} is loose ({longest})"
            );
        }
    }

    #[test]
    fn samples_are_reproducible_and_a_short_input_is_an_error() {
        let (_dir, corpus) = corpus();
        for kind in ALL {
            let draw = |seed| {
                sample(
                    kind,
                    QA1_MOVES,
                    1,
                    &corpus,
                    Split::Train,
                    Units::Bytes,
                    500,
                    None,
                    &mut StdRng::seed_from_u64(seed),
                )
                .unwrap()
            };
            assert_eq!(draw(7), draw(7), "{kind:?}");
            assert_ne!(draw(7), draw(8), "{kind:?}");
            let err = sample(
                kind,
                QA1_MOVES,
                1,
                &corpus,
                Split::Train,
                Units::Bytes,
                20,
                None,
                &mut StdRng::seed_from_u64(1),
            )
            .unwrap_err();
            assert!(err.to_string().contains("task.segments"), "{err}");
        }
    }

    #[test]
    fn long_noise_spans_documents() {
        let (_dir, corpus) = corpus();
        let mut rng = StdRng::seed_from_u64(3);
        let s = sample(
            TaskKind::Memorize,
            QA1_MOVES,
            1,
            &corpus,
            Split::Train,
            Units::Bytes,
            100_000,
            None,
            &mut rng,
        )
        .unwrap();
        assert_eq!(
            s.answer.iter().position(|&a| a),
            Some(100_000 - answer_width(TaskKind::Memorize))
        );
    }

    #[test]
    fn noise_read_in_parts_is_the_noise_read_whole() {
        // Parts of a few bytes cut story words, words that only start like one ("Kitchenette")
        // and runs of letters longer than any story word; the text must be the same as reading
        // each piece whole.
        let (dir, _) = corpus();
        let odd = "Supercalifragilisticexpialidocious Mary. Kitchenette, bathroomfootball, \
                   aMary Julie! ";
        std::fs::write(dir.path().join("odd.txt"), odd.repeat(60)).unwrap();
        let corpus = Corpus::open(&[dir.path().to_path_buf()]).unwrap();
        let read = |kind, seed, part| {
            let rng = StdRng::seed_from_u64(seed);
            let mut stream = Stream::new(
                kind,
                QA1_MOVES,
                1,
                &corpus,
                Split::Train,
                Units::Bytes,
                20_000,
                None,
                rng,
            )
            .unwrap();
            stream.part = part;
            let mut out = Vec::new();
            while out.len() < stream.len() {
                stream.read(333, &mut out).unwrap();
            }
            out
        };
        for kind in [TaskKind::Memorize, TaskKind::Qa1, TaskKind::Needles] {
            for seed in 0..4 {
                let whole = read(kind, seed, usize::MAX);
                let text =
                    String::from_utf8_lossy(&whole.iter().map(|&b| b as u8).collect::<Vec<_>>())
                        .into_owned();
                assert!(
                    text.contains("Supercalifragilistic"),
                    "the odd file is in the noise"
                );
                for part in [1, 2, 3, 5, 8, 9, 13, 64, 4096] {
                    assert_eq!(
                        read(kind, seed, part),
                        whole,
                        "{kind:?}, seed {seed}, part {part}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_noise_comes_from_the_split_asked_for() {
        // Each document says only its own word, so the noise shows which documents it came from.
        let dir = tempfile::tempdir().unwrap();
        let words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
        for (i, word) in words.iter().enumerate() {
            let text = format!("{word} {word} {word}. ").repeat(200);
            std::fs::write(dir.path().join(format!("{i}.txt")), text).unwrap();
        }
        let corpus = Corpus::open(&[dir.path().to_path_buf()]).unwrap();
        let word_of = |split: Split| -> Vec<&str> {
            let docs: Vec<_> = corpus.split(split).collect();
            words
                .iter()
                .enumerate()
                .filter(|(i, _)| docs.iter().any(|d| d.name.starts_with(&format!("{i}.txt"))))
                .map(|(_, w)| *w)
                .collect()
        };
        for split in [Split::Train, Split::Validation, Split::Test] {
            let mine = word_of(split);
            assert!(!mine.is_empty(), "{split:?} has documents");
            for seed in 0..5 {
                let mut rng = StdRng::seed_from_u64(seed);
                let s = sample(
                    TaskKind::Detect,
                    QA1_MOVES,
                    1,
                    &corpus,
                    split,
                    Units::Bytes,
                    3000,
                    None,
                    &mut rng,
                );
                let bytes: Vec<u8> = s.unwrap().tokens.iter().map(|&t| t as u8).collect();
                let text = String::from_utf8_lossy(&bytes).into_owned();
                for word in words.iter().filter(|w| text.contains(*w)) {
                    assert!(
                        mine.contains(word),
                        "{split:?} seed {seed}: {word} in the noise"
                    );
                }
                assert!(mine.iter().any(|w| text.contains(w)), "{split:?}: no noise");
            }
        }
        // A task draws its noise from the split it is given: the evaluations' held-out one.
        let config = crate::task::TaskConfig {
            kind: TaskKind::Detect,
            segments: 6,
            data: vec![dir.path().to_path_buf()],
            ..Default::default()
        };
        let task = crate::task::Task::new(config, 500).unwrap();
        let held_out = task.with_noise(Split::Test);
        for (task, split) in [(&task, Split::Train), (&held_out, Split::Test)] {
            let s = task.try_sample(&mut StdRng::seed_from_u64(1)).unwrap();
            let bytes: Vec<u8> = s.tokens.iter().map(|&t| t as u8).collect();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let found: Vec<&str> = words.into_iter().filter(|w| text.contains(w)).collect();
            assert!(!found.is_empty() && found.iter().all(|w| word_of(split).contains(w)));
        }
    }

    /// A task of `kind` over 8 segments of 64 bytes of the test corpus in `dir`, with `set`
    /// changing its config, or the error that refuses it, as text.
    fn qa_task(
        dir: &std::path::Path,
        kind: TaskKind,
        set: impl Fn(&mut crate::task::TaskConfig),
    ) -> std::result::Result<crate::task::Task, String> {
        let mut config = crate::task::TaskConfig {
            kind,
            segments: 8,
            data: vec![dir.to_path_buf()],
            ..Default::default()
        };
        set(&mut config);
        crate::task::Task::new(config, 64).map_err(|e| e.to_string())
    }

    #[test]
    fn only_qa1_takes_a_number_of_moves_and_it_is_at_least_one() {
        let (dir, _) = corpus();
        let err = |kind, moves| qa_task(dir.path(), kind, |c| c.moves = moves).unwrap_err();
        assert!(err(TaskKind::Qa1, 0).contains("task.moves"));
        assert!(err(TaskKind::Qa2, 2).contains("task.moves"));
        // A story longer than the input is named by the input's size.
        assert!(err(TaskKind::Qa1, 40).contains("task.segments"));
        let task = qa_task(dir.path(), TaskKind::Qa1, |c| c.moves = 2).unwrap();
        let s = task.try_sample(&mut StdRng::seed_from_u64(1)).unwrap();
        let bytes: Vec<u8> = s.tokens.iter().map(|&t| t as u8).collect();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert_eq!(facts(&text).len(), 2, "{text}");
    }

    /// `task.questions`: only qa1, 1 to 4; training stories end with that many answered
    /// questions (when that many people moved), held-out ones with one.
    #[test]
    fn qa1_training_asks_several_questions_and_held_out_stories_one() {
        let (dir, _) = corpus();
        let err =
            |kind, questions| qa_task(dir.path(), kind, |c| c.questions = questions).unwrap_err();
        assert!(err(TaskKind::Qa2, 2).contains("task.questions"));
        assert!(err(TaskKind::Qa1, 0).contains("task.questions"));
        assert!(err(TaskKind::Qa1, 5).contains("task.questions"));
        let task = qa_task(dir.path(), TaskKind::Qa1, |c| c.questions = 4).unwrap();
        let held_out = task.with_noise(Split::Test);
        let (mut trained, mut several) = (0, 0);
        for seed in 0..20 {
            let runs = |task: &crate::task::Task| {
                let s = task.try_sample(&mut StdRng::seed_from_u64(seed)).unwrap();
                let starts = (0..s.answer.len())
                    .filter(|&i| s.answer[i] && (i == 0 || !s.answer[i - 1]))
                    .count();
                let bytes: Vec<u8> = s.tokens.iter().map(|&t| t as u8).collect();
                let text = String::from_utf8_lossy(&bytes).into_owned();
                (starts, text.matches("\nWhere is ").count())
            };
            let (answers, questions) = runs(&task);
            assert_eq!(answers, questions, "every question is answered and scored");
            trained += answers;
            several += usize::from(answers > 1);
            assert_eq!(runs(&held_out), (1, 1));
        }
        // Six moves of four people: most stories have three or four movers to ask about.
        assert!(
            several == 20 && trained > 60,
            "{trained} answers, {several} of 20"
        );
    }

    /// `task.late_facts`: that fraction of training stories has every fact in its last
    /// `late_segments` segments; held-out stories never do; bad values are named.
    #[test]
    fn late_stories_put_every_fact_in_their_last_segments() {
        let (dir, _) = corpus();
        let late = |p: f64, n: usize| {
            move |c: &mut crate::task::TaskConfig| {
                c.segments = 40;
                c.late_facts = p;
                c.late_segments = n;
            }
        };
        for (kind, p, n, key) in [
            (TaskKind::Qa1, 1.5, 8, "task.late_facts"),
            (TaskKind::Qa1, -0.1, 8, "task.late_facts"),
            (TaskKind::Qa1, 0.0, 8, "task.late_segments"),
            (TaskKind::Memorize, 1.0, 8, "task.late_facts"),
            (TaskKind::Qa1, 1.0, 0, "task.late_segments"),
            (TaskKind::Qa1, 1.0, 41, "task.late_segments"),
            // One segment of 64 bytes cannot hold a six-move story.
            (TaskKind::Qa1, 1.0, 1, "task.late_segments"),
        ] {
            let err = qa_task(dir.path(), kind, late(p, n)).unwrap_err();
            assert!(err.contains(key), "{kind:?} {p} {n}: {err}");
        }
        let window = 8 * 64;
        // Whether the story's first fact (and so every fact) lies in its last `window` bytes.
        let is_late = |task: &crate::task::Task, seed: u64| {
            let s = task.try_sample(&mut StdRng::seed_from_u64(seed)).unwrap();
            let bytes: Vec<u8> = s.tokens.iter().map(|&t| t as u8).collect();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let found = facts(&text);
            assert_eq!(found.len(), QA1_MOVES, "{text}");
            let at = text.find(found[0].as_str()).unwrap();
            usize::from(text.len() - at <= window)
        };
        let all = qa_task(dir.path(), TaskKind::Qa1, late(1.0, 8)).unwrap();
        let half = qa_task(dir.path(), TaskKind::Qa1, late(0.5, 8)).unwrap();
        let anywhere = qa_task(dir.path(), TaskKind::Qa1, |c| c.segments = 40).unwrap();
        let held_out = all.with_noise(Split::Test);
        let count = |task: &crate::task::Task| (0..40).map(|seed| is_late(task, seed)).sum();
        let counts: [usize; 4] = [
            count(&all),
            count(&half),
            count(&anywhere),
            count(&held_out),
        ];
        assert_eq!(counts[0], 40, "{counts:?}");
        assert!((10..=30).contains(&counts[1]), "{counts:?}");
        assert!(counts[2] < 5 && counts[3] < 5, "{counts:?}");
        // `Task::is_late` tells the late stories without drawing them: each story it calls
        // late has its facts at the end, and of the others only the few that land there by
        // chance; held-out stories and runs without late stories have none.
        let said =
            |task: &crate::task::Task, seed: u64| task.is_late(&mut StdRng::seed_from_u64(seed));
        let mut by_chance = 0;
        for seed in 0..40 {
            match said(&half, seed) {
                true => assert_eq!(is_late(&half, seed), 1, "seed {seed}"),
                false => by_chance += is_late(&half, seed),
            }
            assert!(said(&all, seed), "seed {seed}");
            assert!(
                !said(&anywhere, seed) && !said(&held_out, seed),
                "seed {seed}"
            );
        }
        let told: usize = (0..40).map(|seed| usize::from(said(&half, seed))).sum();
        assert_eq!(told + by_chance, counts[1]);
        assert!(by_chance < 5, "{by_chance}");
    }

    /// The page's retention demo builds its input with `Story::around`: for a memorize story it
    /// gives the very bytes the task's own sampler writes around the same noise.
    #[test]
    fn a_story_around_noise_is_the_memorize_sample() {
        let (_dir, corpus) = corpus();
        for seed in 0..20 {
            let total = 300;
            let s = sample(
                TaskKind::Memorize,
                QA1_MOVES,
                1,
                &corpus,
                Split::Train,
                Units::Bytes,
                total,
                None,
                &mut StdRng::seed_from_u64(seed),
            )
            .unwrap();
            let bytes: Vec<u8> = s.tokens.iter().map(|&t| t as u8).collect();
            let text = String::from_utf8(bytes.clone()).unwrap();
            // "<who> <verb> to the <place>. " opens it; "\nWhere is <who>? <place>." ends it.
            let fact_end = text.find(". ").unwrap() + 2;
            let words: Vec<&str> = text[..fact_end - 2].split(' ').collect();
            let (who, verb, place) = (words[0], words[1], words[4]);
            let story = Story::memorize(who, verb, place);
            let question = text.rfind("\nWhere is ").unwrap();
            let (ids, answer) = story.around(&bytes[fact_end..question]);
            assert_eq!(ids, s.tokens, "seed {seed}");
            let truth: Vec<usize> = (0..ids.len()).filter(|&i| s.answer[i]).collect();
            assert_eq!(answer, truth[0]..truth[truth.len() - 1] + 1);
            assert_eq!(
                &text[answer.clone()],
                format!("{place}."),
                "the answer is the fact's place"
            );
        }
    }
}
