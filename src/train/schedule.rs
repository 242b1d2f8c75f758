//! Learning-rate schedule: linear warmup, then cosine or linear decay.
//!
//! A pure function of the step (rather than Burn's stateful schedulers), so a resumed run gets
//! exactly the learning rate it would have had.

use serde::{Deserialize, Serialize};

/// Shape of the decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Half a cosine from the peak down to `min_lr`.
    #[default]
    Cosine,
    /// A straight line from the peak down to `min_lr`.
    Linear,
    /// Stay at the peak.
    Constant,
}

/// Learning rate at `step` (0-based) of `total` steps.
pub fn learning_rate(
    step: usize,
    total: usize,
    peak: f64,
    min: f64,
    warmup: usize,
    decay: Decay,
) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).clamp(0.0, 1.0);
    let factor = match decay {
        Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        Decay::Linear => 1.0 - progress,
        Decay::Constant => 1.0,
    };
    min + (peak - min) * factor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_peak_and_floor() {
        let lr = |s, d| learning_rate(s, 110, 1e-3, 1e-4, 10, d);
        assert!((lr(0, Decay::Cosine) - 1e-4).abs() < 1e-12);
        assert!((lr(9, Decay::Cosine) - 1e-3).abs() < 1e-12);
        assert!((lr(10, Decay::Cosine) - 1e-3).abs() < 1e-12);
        assert!((lr(60, Decay::Cosine) - 5.5e-4).abs() < 1e-9);
        assert!((lr(60, Decay::Linear) - 5.5e-4).abs() < 1e-9);
        assert!((lr(110, Decay::Linear) - 1e-4).abs() < 1e-12);
        assert!((lr(500, Decay::Cosine) - 1e-4).abs() < 1e-12);
        assert!((lr(80, Decay::Constant) - 1e-3).abs() < 1e-12);
    }
}
