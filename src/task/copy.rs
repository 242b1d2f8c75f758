//! Copy and reverse (RMT paper, section 4): a random string, a separator, then the string again.

use rand::Rng;

use super::{SEP, Sample};

fn source(rng: &mut impl Rng, len: usize, symbols: usize) -> Vec<u32> {
    (0..len)
        .map(|_| 2 + rng.random_range(0..symbols as u32))
        .collect()
}

pub(super) fn with_answer(question: Vec<u32>, answer: Vec<u32>) -> Sample {
    let answer_mask = std::iter::repeat_n(false, question.len())
        .chain(std::iter::repeat_n(true, answer.len()))
        .collect();
    let mut tokens = question;
    tokens.extend(answer);
    Sample {
        tokens,
        answer: answer_mask,
    }
}

/// `X (len), sep, X, X`: `3 * len + 1` tokens, the last `2 * len` the answer.
pub fn copy(rng: &mut impl Rng, len: usize, symbols: usize) -> Sample {
    let x = source(rng, len, symbols);
    let mut question = x.clone();
    question.push(SEP);
    with_answer(question, [x.clone(), x].concat())
}

/// `X (len), sep, reversed(X)`: `2 * len + 1` tokens, the last `len` the answer.
pub fn reverse(rng: &mut impl Rng, len: usize, symbols: usize) -> Sample {
    let x = source(rng, len, symbols);
    let mut question = x.clone();
    question.push(SEP);
    with_answer(question, x.into_iter().rev().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn copy_and_reverse_hold_their_source() {
        let mut rng = StdRng::seed_from_u64(1);
        let s = copy(&mut rng, 4, 10);
        assert_eq!(s.tokens.len(), 13);
        assert_eq!(s.tokens[4], SEP);
        assert_eq!(s.tokens[0..4], s.tokens[5..9]);
        assert_eq!(s.tokens[0..4], s.tokens[9..13]);
        assert_eq!(s.answer.iter().filter(|&&a| a).count(), 8);
        assert!(s.tokens.iter().all(|&t| t == SEP || (2..12).contains(&t)));

        let r = reverse(&mut rng, 3, 10);
        let rev: Vec<u32> = r.tokens[0..3].iter().rev().copied().collect();
        assert_eq!(r.tokens[4..7], rev[..]);
        assert_eq!(r.answer, [false, false, false, false, true, true, true]);
    }
}
