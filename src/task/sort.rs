//! Frequency sort with a drifting distribution (the infinity-former paper, section 4.1).
//!
//! Each sequence draws two distributions over the symbols, `p_init` and `p_final` (integer
//! weights 1..=9, normalised); token `j` of the `L` tokens is drawn from
//! `(1 - r) p_init + r p_final` with `r = (j + 1) / L`. After a separator, the answer is every
//! symbol once, by decreasing count in the sequence (ties: first occurrence first; symbols that
//! never occur last, by id). Late tokens follow `p_final`, so a model that sees only the end of a
//! long sequence gets the order wrong: it must remember the whole.

use rand::Rng;

use super::Sample;
use super::copy::with_answer;

/// `L` drawn tokens, the separator, then the `symbols` symbols sorted: `L + 1 + symbols` tokens.
pub fn sample(rng: &mut impl Rng, len: usize, symbols: usize) -> Sample {
    let weights = |rng: &mut dyn rand::RngCore| -> Vec<f64> {
        let w: Vec<f64> = (0..symbols)
            .map(|_| rng.random_range(1..=9u32) as f64)
            .collect();
        let total: f64 = w.iter().sum();
        w.into_iter().map(|x| x / total).collect()
    };
    let (p_init, p_final) = (weights(rng), weights(rng));
    let mut question = Vec::with_capacity(len + 1);
    for j in 0..len {
        let r = (j + 1) as f64 / len as f64;
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let mut pick = symbols - 1;
        for s in 0..symbols {
            acc += (1.0 - r) * p_init[s] + r * p_final[s];
            if u < acc {
                pick = s;
                break;
            }
        }
        question.push(2 + pick as u32);
    }
    let answer = sorted_by_frequency(&question, symbols);
    question.push(super::SEP);
    with_answer(question, answer)
}

/// Symbol ids `2..2 + symbols` by decreasing count in `tokens`, ties by first occurrence, the
/// absent ones last by id.
pub fn sorted_by_frequency(tokens: &[u32], symbols: usize) -> Vec<u32> {
    let mut count = vec![0usize; symbols];
    let mut first = vec![usize::MAX; symbols];
    for (i, &t) in tokens.iter().enumerate() {
        let s = (t - 2) as usize;
        count[s] += 1;
        first[s] = first[s].min(i);
    }
    let mut order: Vec<usize> = (0..symbols).collect();
    order.sort_by_key(|&s| (std::cmp::Reverse(count[s]), first[s], s));
    order.into_iter().map(|s| 2 + s as u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn the_answer_sorts_by_count_then_first_occurrence() {
        // counts: 4 -> 3, 2 -> 2, 3 -> 2 (3 seen first), 5 -> 0
        let tokens = [3, 4, 2, 4, 3, 2, 4];
        assert_eq!(sorted_by_frequency(&tokens, 4), vec![4, 3, 2, 5]);
    }

    #[test]
    fn samples_have_the_right_shape_and_the_distribution_drifts() {
        let mut rng = StdRng::seed_from_u64(1);
        let (len, symbols) = (200, 20);
        let mut early_late_differ = 0;
        for _ in 0..50 {
            let s = sample(&mut rng, len, symbols);
            assert_eq!(s.tokens.len(), len + 1 + symbols);
            assert_eq!(s.tokens[len], super::super::SEP);
            assert_eq!(s.answer.iter().filter(|&&a| a).count(), symbols);
            let answer = &s.tokens[len + 1..];
            assert_eq!(answer, sorted_by_frequency(&s.tokens[..len], symbols));
            let mut distinct = answer.to_vec();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), symbols, "every symbol once");
            // The most frequent symbol of the first and last quarters usually differ.
            let top = |part: &[u32]| sorted_by_frequency(part, symbols)[0];
            if top(&s.tokens[..len / 4]) != top(&s.tokens[3 * len / 4..len]) {
                early_late_differ += 1;
            }
        }
        assert!(early_late_differ > 25, "{early_late_differ} of 50");
    }
}
