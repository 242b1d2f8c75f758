//! Floating-point operations of a model step, counted from its config.
//!
//! A multiply-add is 2 FLOPs. Counted as remem computes them: attention is dense over the whole
//! layout (masked scores are computed, then zeroed by the softmax), Transformer-XL projects
//! keys and values of its cache again at every step, and RMT leaves out the rows nothing reads
//! (its last layer's read memory; the memory of a step whose next state is not needed). Layer
//! norms, softmax and GELU are left out (a few FLOPs per element against `d_model` or more per
//! element in the matmuls).

use crate::model::{Layout, ModelConfig, ModelKind};

/// Forward FLOPs of one step over `t` tokens with `cached` cached states per layer. `write`:
/// whether the step computes the next state (RMT leaves its memory out of a step after which
/// none is needed, [`crate::model::Model::last_step`]: the last segment of a training sequence).
pub fn step_forward(config: &ModelConfig, t: usize, cached: usize, write: bool) -> f64 {
    let d = config.d_model as f64;
    let ff = config.d_ff as f64;
    let m = config.memory_len();
    let rmt = config.kind == ModelKind::Rmt;
    // Positions the layers run over.
    let armt = config.kind == ModelKind::Armt;
    let n = match config.layout {
        _ if armt && write => t + m,
        _ if armt => t,
        Layout::Encoder if rmt => m + t,
        Layout::Decoder if rmt && !write => m + t,
        _ => 2 * m + t,
    };
    // RMT's last layer carries only the rows read after it through its output projection and
    // feed-forward layer: not the decoder's read memory, nor the encoder's memory when no
    // memory is written.
    let last_rows = match config.layout {
        Layout::Decoder if rmt => n - m,
        Layout::Encoder if rmt && !write => n - m,
        _ => n,
    };
    let (n, keys, last_rows) = (n as f64, (n + cached) as f64, last_rows as f64);
    let ltm = match config.kind {
        ModelKind::Infinity => long_term_memory(config, n, t as f64),
        ModelKind::Armt => associative_memory(config, n, if write { m as f64 } else { 0.0 }),
        _ => 0.0,
    };
    // One layer whose output projection and feed-forward run on `rows` of its `n` positions.
    let layer = |rows: f64| {
        let projections = 2.0 * d * d * (n + 2.0 * keys + rows); // q on n; k, v on keys; out
        let attention = 2.0 * 2.0 * n * keys * d; // scores and the weighted sum
        let feed_forward = 2.0 * 2.0 * d * ff * rows;
        projections + attention + feed_forward + ltm
    };
    let head = 2.0 * d * config.vocab_size as f64 * t as f64;
    let layers = config.n_layers as f64;
    (layers - 1.0) * layer(n) + layer(last_rows) + head
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

/// One layer's associative memory (ARMT): the read from `n` rows and the write of `m` memory
/// rows.
fn associative_memory(config: &ModelConfig, n: f64, m: f64) -> f64 {
    let d = config.d_model as f64;
    let k = config.associative_key_dim() as f64;
    let features = 6.0 * k;
    let read = 2.0 * d * k * n + 2.0 * features * (d + 1.0) * n; // queries; the store's product
    let projections = 2.0 * d * (k + d + 1.0) * m; // keys, values, strengths
    let write = 2.0 * 2.0 * features * (d + 1.0) * m; // the lookup and the update
    read + projections + write
}

/// Training FLOPs per input token of a sequence of `segments` steps of `t` tokens: forward plus
/// a backward of twice the forward (the usual 3x estimate).
pub fn train_per_token(config: &ModelConfig, segments: usize, t: usize) -> f64 {
    let cache = config.cache_len();
    let total: f64 = (0..segments)
        .map(|s| step_forward(config, t, (s * t).min(cache), s + 1 < segments))
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
        assert_eq!(step_forward(&config, 4, 0, true), expected);
        // The cache adds keys and values: 4 d^2 per cached state, and 4 d per query and key.
        let xl = ModelConfig {
            kind: ModelKind::Xl,
            ..config
        };
        let with_cache = step_forward(&xl, 4, 3, true) - step_forward(&xl, 4, 0, true);
        assert_eq!(with_cache, 3.0 * 4.0 * d * d + 4.0 * t * 3.0 * d);
    }

    #[test]
    fn rmt_counts_only_the_rows_it_computes() {
        // Decoder, M = 2, t = 4: layers over 2M + t = 8 rows, the last layer's output projection
        // and feed-forward over M + t = 6 (no read memory); a step that writes no memory runs
        // over M + t = 6 rows, its last layer over t = 4.
        let config = ModelConfig {
            kind: ModelKind::Rmt,
            memory_tokens: 2,
            vocab_size: 10,
            d_model: 8,
            d_ff: 32,
            n_layers: 3,
            ..ModelConfig::default()
        };
        let (d, ff) = (8.0, 32.0);
        let layer = |n: f64, rows: f64| {
            2.0 * d * d * (3.0 * n + rows) + 4.0 * n * n * d + 4.0 * d * ff * rows
        };
        let head = 2.0 * d * 10.0 * 4.0;
        let writing = 2.0 * layer(8.0, 8.0) + layer(8.0, 6.0) + head;
        let last = 2.0 * layer(6.0, 6.0) + layer(6.0, 4.0) + head;
        assert_eq!(step_forward(&config, 4, 0, true), writing);
        assert_eq!(step_forward(&config, 4, 0, false), last);
        assert_eq!(train_per_token(&config, 2, 4), 3.0 * (writing + last) / 8.0);
    }
}
