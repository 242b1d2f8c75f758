//! The pre-norm transformer block: `x + attn(norm(x))`, then `x + ff(norm(x))`.

use burn::nn::{Dropout, DropoutConfig, Gelu, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;

use super::attention::{Attention, AttentionConfig};

/// Configuration of [`Block`].
#[derive(Config, Debug)]
pub struct BlockConfig {
    /// Model width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// Hidden width of the feed-forward layer.
    pub d_ff: usize,
    /// Dropout on attention weights and on each residual branch.
    #[config(default = 0.0)]
    pub dropout: f64,
}

/// One pre-norm transformer layer.
#[derive(Module, Debug)]
pub struct Block {
    norm_attn: LayerNorm,
    attn: Attention,
    norm_ff: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
    gelu: Gelu,
    dropout: Dropout,
}

/// What [`Block::forward`] returns.
#[derive(Debug, Clone)]
pub struct BlockOutput {
    /// `[batch, seq, d_model]`.
    pub hidden: Tensor<3>,
    /// Attention weights `[batch, n_heads, seq, seq]` when asked for.
    pub weights: Option<Tensor<4>>,
}

impl BlockConfig {
    /// Build the block on `device`.
    pub fn init(&self, device: &Device) -> Block {
        Block {
            norm_attn: LayerNormConfig::new(self.d_model).init(device),
            attn: AttentionConfig::new(self.d_model, self.n_heads)
                .with_dropout(self.dropout)
                .init(device),
            norm_ff: LayerNormConfig::new(self.d_model).init(device),
            ff_in: LinearConfig::new(self.d_model, self.d_ff).init(device),
            ff_out: LinearConfig::new(self.d_ff, self.d_model).init(device),
            gelu: Gelu::new(),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl Block {
    /// Self-attention under `bias` (see [`crate::nn::Mask::bias`]) then the feed-forward layer.
    ///
    /// # Shapes
    /// - x: `[batch, seq, d_model]`
    /// - bias: `[seq, seq]`
    pub fn forward(&self, x: Tensor<3>, bias: Tensor<2>, return_weights: bool) -> BlockOutput {
        let normed = self.norm_attn.forward(x.clone());
        let attn = self
            .attn
            .forward(normed.clone(), normed, bias, return_weights);
        let x = x + self.dropout.forward(attn.context);
        let ff = self.ff_out.forward(
            self.gelu
                .forward(self.ff_in.forward(self.norm_ff.forward(x.clone()))),
        );
        BlockOutput {
            hidden: x + self.dropout.forward(ff),
            weights: attn.weights,
        }
    }
}
