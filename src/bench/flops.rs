//! Floating-point operations of a model step, counted from its config.
//!
//! A multiply-add is 2 FLOPs. Counted as remem computes them: attention is dense over the whole
//! layout (masked scores are computed, then zeroed by the softmax), and Transformer-XL projects
//! keys and values of its cache again at every step. Layer norms, softmax and GELU are left out
//! (a few FLOPs per element against `d_model` or more per element in the matmuls).

use crate::model::{Layout, ModelConfig, ModelKind};

/// Forward FLOPs of one step over `t` tokens with `cached` cached states per layer.
pub fn step_forward(config: &ModelConfig, t: usize, cached: usize) -> f64 {
    let d = config.d_model as f64;
    let ff = config.d_ff as f64;
    let m = config.memory_len();
    // Positions the layers run over.
    let n = match (config.kind, config.layout) {
        (ModelKind::Rmt, Layout::Encoder) => m + t,
        _ => 2 * m + t,
    } as f64;
    let keys = n + cached as f64;
    let projections = 2.0 * d * d * (2.0 * n + 2.0 * keys); // q, out on n; k, v on all keys
    let attention = 2.0 * 2.0 * n * keys * d; // scores and the weighted sum
    let feed_forward = 2.0 * 2.0 * d * ff * n;
    let head = 2.0 * d * config.vocab_size as f64 * t as f64;
    let ltm = match config.kind {
        ModelKind::Infinity => long_term_memory(config, n, t as f64),
        _ => 0.0,
    };
    config.n_layers as f64 * (projections + attention + feed_forward + ltm) + head
}

/// One layer's long-term memory: the read from `n` queries and the refit of `t` new states.
fn long_term_memory(config: &ModelConfig, n: f64, t: f64) -> f64 {
    let d = config.d_model as f64;
    let basis = config.ltm.basis as f64;
    let samples = config.ltm.samples as f64;
    let heads = config.n_heads as f64;
    let projections = 2.0 * d * d * (2.0 * n + 2.0 * basis); // q, out on n; k, v on N
    let attention = 2.0 * 2.0 * n * basis * d; // scores and r V
    let density = 2.0 * 2.0 * n * heads * basis; // w_mu, w_sigma
    let write = 2.0 * samples * basis * d + 2.0 * basis * (samples + t) * d; // sample, refit
    projections + attention + density + write
}

/// Training FLOPs per input token of a sequence of `segments` steps of `t` tokens: forward plus
/// a backward of twice the forward (the usual 3x estimate).
pub fn train_per_token(config: &ModelConfig, segments: usize, t: usize) -> f64 {
    let cache = config.cache_len();
    let total: f64 = (0..segments)
        .map(|s| step_forward(config, t, (s * t).min(cache)))
        .sum();
    3.0 * total / (segments * t) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_layer_counts_as_the_textbook_formula() {
        // No memory, no cache: 24 d^2 + 4 n d per token and layer, plus the head.
        let config = ModelConfig {
            kind: ModelKind::Rmt,
            memory_tokens: 0,
            vocab_size: 10,
            d_model: 8,
            d_ff: 32,
            n_layers: 1,
            ..ModelConfig::default()
        };
        let (t, d) = (4.0, 8.0);
        let expected = t * (24.0 * d * d + 4.0 * t * d) + 2.0 * d * 10.0 * t;
        assert_eq!(step_forward(&config, 4, 0), expected);
        // The cache adds keys and values: 4 d^2 per cached state, and 4 d per query and key.
        let xl = ModelConfig {
            kind: ModelKind::Xl,
            ..config
        };
        let with_cache = step_forward(&xl, 4, 3) - step_forward(&xl, 4, 0);
        assert_eq!(with_cache, 3.0 * 4.0 * d * d + 4.0 * t * 3.0 * d);
    }
}
