//! Layer normalisation as a module ([`LayerNorm`]); the operation itself, one autodiff node
//! with its CPU and GPU kernels, is [`crate::ops::layer_norm`]. Parameters are named as in
//! Burn's module (`gamma`, `beta`), so checkpoints load either way.

use burn::module::Param;
use burn::nn::Initializer;
use burn::prelude::*;

pub use crate::ops::layer_norm::layer_norm;

use crate::ops::affine::RowNorm;

/// Configuration of [`LayerNorm`].
#[derive(Config, Debug)]
pub struct LayerNormConfig {
    /// Width of the last axis.
    pub d_model: usize,
    /// Added to the variance before the square root.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

/// `(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last axis.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Scale, `[d_model]`, initially ones.
    pub gamma: Param<Tensor<1>>,
    /// Shift, `[d_model]`, initially zeros.
    pub beta: Param<Tensor<1>>,
    epsilon: f64,
}

impl LayerNormConfig {
    /// Build the layer on `device`.
    pub fn init(&self, device: &Device) -> LayerNorm {
        LayerNorm {
            gamma: Initializer::Ones.init([self.d_model], device),
            beta: Initializer::Zeros.init([self.d_model], device),
            epsilon: self.epsilon,
        }
    }
}

impl LayerNorm {
    /// Normalise each row of `x` along the last axis, then scale and shift.
    ///
    /// # Shapes
    /// - x: `[..., d_model]`
    /// - output: as `x`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        layer_norm(x, self.gamma.val(), self.beta.val(), self.epsilon)
    }

    /// This norm for a product to apply as it reads its input ([`crate::nn::linear::norm_linear`]).
    pub(crate) fn row_norm(&self) -> RowNorm {
        RowNorm {
            gamma: self.gamma.val(),
            beta: self.beta.val(),
            epsilon: self.epsilon,
        }
    }
}
