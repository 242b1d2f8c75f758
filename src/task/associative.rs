//! Associative retrieval: key-value pairs, then a query key; the answer is its value.

use rand::Rng;
use rand::seq::index::sample as distinct;

use super::{SEP, Sample};

/// Size of the key vocabulary.
pub const KEYS: usize = 26;
/// Values are digits.
pub const VALUES: usize = 10;
/// Token ids: pad, sep, keys, values.
pub const VOCAB: usize = 2 + KEYS + VALUES;

/// Keys as `a-z`, values as `0-9`, `|` as separator.
pub fn tokenizer() -> crate::tokenizer::Tokenizer {
    const { assert!(KEYS == 26 && VALUES == 10) };
    crate::tokenizer::Tokenizer::Chars {
        alphabet: "abcdefghijklmnopqrstuvwxyz0123456789".into(),
        sep: '|',
    }
}

/// `k1 v1 .. kK vK, sep, q, v(q)`: `2K + 3` tokens; keys distinct, the last token the answer.
pub fn sample(rng: &mut impl Rng, pairs: usize) -> Sample {
    let keys = distinct(rng, KEYS, pairs);
    let mut tokens = Vec::with_capacity(2 * pairs + 3);
    let mut values = Vec::with_capacity(pairs);
    for key in keys.iter() {
        let value = 2 + KEYS as u32 + rng.random_range(0..VALUES as u32);
        tokens.push(2 + key as u32);
        tokens.push(value);
        values.push(value);
    }
    let q = rng.random_range(0..pairs);
    tokens.push(SEP);
    tokens.push(tokens[2 * q]);
    tokens.push(values[q]);
    let mut answer = vec![false; tokens.len()];
    answer[tokens.len() - 1] = true;
    Sample { tokens, answer }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn the_answer_is_the_value_of_the_queried_key() {
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            let s = sample(&mut rng, 4);
            let n = s.tokens.len();
            let (query, answer) = (s.tokens[n - 2], s.tokens[n - 1]);
            let pos = (0..4).find(|&i| s.tokens[2 * i] == query).unwrap();
            assert_eq!(s.tokens[2 * pos + 1], answer);
            let mut keys: Vec<u32> = (0..4).map(|i| s.tokens[2 * i]).collect();
            keys.dedup();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), 4, "keys are distinct");
        }
    }
}
