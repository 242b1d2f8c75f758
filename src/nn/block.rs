//! The pre-norm transformer block: `x + attn(norm(x))`, then `x + ff(norm(x))`.

use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, RotaryEncoding};
use burn::prelude::*;

use super::attention::{Attention, AttentionConfig};
use super::gelu::gelu;
use super::linear::linear;
use super::norm::{LayerNorm, LayerNormConfig};

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
        self.forward_cached(x, None, bias, None, return_weights)
    }

    /// Attention over `[cache | x]` (Transformer-XL): queries are the rows of `x`; keys and
    /// values also include the cached states, which are layer-normed like `x`. With `rotary`,
    /// keys sit at positions `0..cache + seq` and queries at `cache..cache + seq`.
    ///
    /// # Shapes
    /// - x: `[batch, seq, d_model]`
    /// - cache: `[batch, cache, d_model]`
    /// - bias: `[seq, cache + seq]`
    pub fn forward_cached(
        &self,
        x: Tensor<3>,
        cache: Option<Tensor<3>>,
        bias: Tensor<2>,
        rotary: Option<&RotaryEncoding>,
        return_weights: bool,
    ) -> BlockOutput {
        self.forward_with(x, cache, bias, rotary, return_weights, None)
    }

    /// [`Block::forward_cached`] with a second attention branch: `side` gets the layer-normed
    /// `x` and its output is added to the attention output before the residual (the
    /// infinity-former's long-term memory read).
    ///
    /// # Shapes
    /// as [`Block::forward_cached`]; `side` maps `[batch, seq, d_model]` to the same shape
    pub fn forward_with(
        &self,
        x: Tensor<3>,
        cache: Option<Tensor<3>>,
        bias: Tensor<2>,
        rotary: Option<&RotaryEncoding>,
        return_weights: bool,
        side: Option<&mut dyn FnMut(Tensor<3>) -> Tensor<3>>,
    ) -> BlockOutput {
        let normed = self.norm_attn.forward(x.clone());
        let (context, offset) = match cache {
            Some(cache) => {
                let offset = cache.dims()[1];
                (
                    Some(
                        self.norm_attn
                            .forward(Tensor::cat(vec![cache, x.clone()], 1)),
                    ),
                    offset,
                )
            }
            None => (None, 0),
        };
        let extra = side.map(|f| f(normed.clone()));
        let attn = self.attn.forward_rotary(
            normed,
            context,
            bias,
            rotary.map(|r| (r, offset)),
            return_weights,
        );
        let mixed = match extra {
            Some(extra) => attn.context + extra,
            None => attn.context,
        };
        let x = x + self.dropout.forward(mixed);
        let ff = linear(
            &self.ff_out,
            gelu(linear(&self.ff_in, self.norm_ff.forward(x.clone()))),
        );
        BlockOutput {
            hidden: x + self.dropout.forward(ff),
            weights: attn.weights,
        }
    }
}
