//! How the next token is chosen from the model's logits: greedy, or sampled with a temperature
//! and an optional top-k cut, from a seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Greedy decoding (`temperature == 0`) or seeded sampling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// Softmax temperature; 0 = always the most likely token.
    pub temperature: f32,
    /// Sample among the `k` most likely tokens only.
    pub top_k: Option<usize>,
    /// Seed of the sampler: the same seed, model and input give the same tokens.
    pub seed: u64,
}

impl Sampling {
    /// Always the most likely token.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            seed: 0,
        }
    }

    /// Whether this is greedy decoding.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0 || self.top_k == Some(1)
    }

    /// A sampler that draws tokens as this says.
    pub fn sampler(&self) -> Sampler {
        Sampler {
            sampling: *self,
            rng: StdRng::seed_from_u64(self.seed),
        }
    }
}

/// Draws token ids from logits; owns the random stream.
#[derive(Debug, Clone)]
pub struct Sampler {
    sampling: Sampling,
    rng: StdRng,
}

impl Sampler {
    /// One token id drawn from `logits` (`[vocab]`).
    pub fn draw(&mut self, logits: &[f32]) -> u32 {
        let argmax = || {
            logits
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or(0, |(i, _)| i as u32)
        };
        if self.sampling.is_greedy() {
            return argmax();
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        order.truncate(self.sampling.top_k.unwrap_or(logits.len()).max(1));
        let top = logits[order[0]];
        let weights: Vec<f64> = order
            .iter()
            .map(|&i| (((logits[i] - top) / self.sampling.temperature) as f64).exp())
            .collect();
        let mut x = self.rng.random::<f64>() * weights.iter().sum::<f64>();
        for (&i, w) in order.iter().zip(&weights) {
            if x < *w {
                return i as u32;
            }
            x -= w;
        }
        order[order.len() - 1] as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_top_k_and_temperature_behave() {
        let logits = [0.0, 3.0, 1.0, 2.9];
        assert_eq!(Sampling::greedy().sampler().draw(&logits), 1);
        // top-2 only ever draws ids 1 and 3, both often at a high temperature.
        let mut s = Sampling {
            temperature: 5.0,
            top_k: Some(2),
            seed: 7,
        }
        .sampler();
        let draws: Vec<u32> = (0..400).map(|_| s.draw(&logits)).collect();
        assert!(draws.iter().all(|&d| d == 1 || d == 3));
        let ones = draws.iter().filter(|&&d| d == 1).count();
        assert!((120..280).contains(&ones), "{ones}");
        // A low temperature is close to greedy; the same seed repeats.
        let mut cold = Sampling {
            temperature: 0.01,
            top_k: None,
            seed: 1,
        }
        .sampler();
        assert!((0..50).all(|_| cold.draw(&logits) == 1));
        let again: Vec<u32> = {
            let mut s = Sampling {
                temperature: 5.0,
                top_k: Some(2),
                seed: 7,
            }
            .sampler();
            (0..400).map(|_| s.draw(&logits)).collect()
        };
        assert_eq!(again, draws);
    }
}
