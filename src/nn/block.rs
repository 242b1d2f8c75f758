//! The transformer block: pre-norm, `x + attn(norm(x))` then `x + ff(norm(x))` (remem's own
//! models), or post-norm, `norm(x + attn(x))` then `norm(x + ff(x))` (BERT's layout, for
//! pretrained encoders). Both have the same parameters.

use burn::nn::{Linear, RotaryEncoding};
use burn::prelude::*;

use super::attention::{Attention, AttentionConfig};
use super::dropout::Dropout;
use super::init::Init;
use super::linear::{linear, linear_gelu, norm_feed_forward, norm_linear_gelu};
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
    /// Normalise after each residual sum (BERT) instead of before each branch.
    #[config(default = false)]
    pub post_norm: bool,
    /// The layer norms' epsilon (BERT's is 1e-12).
    #[config(default = 1e-5)]
    pub norm_epsilon: f64,
}

/// One transformer layer, pre-norm or post-norm.
#[derive(Module, Debug)]
pub struct Block {
    norm_attn: LayerNorm,
    attn: Attention,
    norm_ff: LayerNorm,
    ff_in: Linear,
    ff_out: Linear,
    dropout: Dropout,
    post_norm: bool,
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
    /// Build the block with weights from `init`.
    pub fn init(&self, init: &mut Init) -> Block {
        let device = init.device().clone();
        Block {
            norm_attn: LayerNormConfig::new(self.d_model)
                .with_epsilon(self.norm_epsilon)
                .init(&device),
            attn: AttentionConfig::new(self.d_model, self.n_heads)
                .with_dropout(self.dropout)
                .init(init),
            norm_ff: LayerNormConfig::new(self.d_model)
                .with_epsilon(self.norm_epsilon)
                .init(&device),
            ff_in: init.linear(self.d_model, self.d_ff, true),
            ff_out: init.linear(self.d_ff, self.d_model, true),
            dropout: Dropout::new(self.dropout, init.noise()),
            post_norm: self.post_norm,
        }
    }
}

impl Block {
    /// This layer for a streaming session (see [`Attention::for_inference`]).
    pub(crate) fn for_inference(self) -> Self {
        Self {
            attn: self.attn.for_inference(),
            ..self
        }
    }

    /// This block for one training step of several segments (see
    /// [`Attention::for_training_step`]).
    #[cfg(feature = "train")]
    pub(crate) fn for_training_step(&self) -> Self {
        Self {
            attn: self.attn.for_training_step(),
            ..self.clone()
        }
    }

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
        self.forward_with(x, cache, bias, rotary, return_weights, None, 0)
    }

    /// Rows `rows_from..` of [`Block::forward`]'s output: every row is read as a key and value,
    /// but the residual branches run on the rows kept only. For a model's last layer, whose other
    /// rows nothing reads (RMT's read memory). Rotary positions, when given, number the rows
    /// from 0.
    ///
    /// # Shapes
    /// - x: `[batch, seq, d_model]`
    /// - bias: `[seq, seq]`
    /// - output hidden: `[batch, seq - rows_from, d_model]`; weights as [`Block::forward`]
    pub fn forward_rows(
        &self,
        x: Tensor<3>,
        bias: Tensor<2>,
        rotary: Option<&RotaryEncoding>,
        return_weights: bool,
        rows_from: usize,
    ) -> BlockOutput {
        self.forward_with(x, None, bias, rotary, return_weights, None, rows_from)
    }

    /// [`Block::forward_cached`] with a second attention branch: `side` gets the layer-normed
    /// `x` and its output is added to the attention output before the residual (the
    /// infinity-former's long-term memory read); and the output kept from row `rows_from` (see
    /// [`Block::forward_rows`]; 0 keeps all).
    ///
    /// # Shapes
    /// as [`Block::forward_cached`], with output hidden `[batch, seq - rows_from, d_model]`;
    /// `side` maps `[batch, seq, d_model]` to the same shape
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with(
        &self,
        x: Tensor<3>,
        cache: Option<Tensor<3>>,
        bias: Tensor<2>,
        rotary: Option<&RotaryEncoding>,
        return_weights: bool,
        side: Option<&mut dyn FnMut(Tensor<3>) -> Tensor<3>>,
        rows_from: usize,
    ) -> BlockOutput {
        if self.post_norm {
            assert!(
                cache.is_none() && rotary.is_none() && side.is_none(),
                "post-norm blocks (BERT) attend within their input only"
            );
            return self.forward_post_norm(x, bias, return_weights, rows_from);
        }
        let kept = |t: Tensor<3>| rows_from_on(t, rows_from);
        // The attention's products normalise their inputs themselves where they can
        // (`Attention::attend`); the long-term memory's read needs the normed rows anyway.
        let (query, cache, norm, extra) = match side {
            Some(f) => {
                let normed = self.norm_attn.forward(x.clone());
                let extra = kept(f(normed.clone()));
                let cache = cache.map(|c| self.norm_attn.forward(c));
                (normed, cache, None, Some(extra))
            }
            None => (x.clone(), cache, Some(&self.norm_attn), None),
        };
        let (mixed, weights) =
            self.attn
                .attend(query, cache, bias, rotary, return_weights, rows_from, norm);
        // Without dropout the residual sums are taken inside the output products (one kernel
        // fewer each on GPUs, the same numbers).
        let fold = self.dropout.passes(&x);
        let x = match extra {
            None if fold => self.attn.project_onto(mixed, kept(x)),
            extra => {
                let context = self.attn.project(mixed);
                let context = match extra {
                    Some(extra) => context + extra,
                    None => context,
                };
                kept(x) + self.dropout.forward(context)
            }
        };
        let hidden = match fold {
            true => norm_feed_forward(&self.norm_ff, &self.ff_in, &self.ff_out, x),
            false => {
                let inner = norm_linear_gelu(&self.norm_ff, &self.ff_in, x.clone());
                x + self.dropout.forward(linear(&self.ff_out, inner))
            }
        };
        BlockOutput { hidden, weights }
    }

    /// BERT's layer: `norm(x + attn(x))`, then `norm(x + ff(x))`, on rows `rows_from..`.
    fn forward_post_norm(
        &self,
        x: Tensor<3>,
        bias: Tensor<2>,
        return_weights: bool,
        rows_from: usize,
    ) -> BlockOutput {
        let attn = self
            .attn
            .forward_rotary(x.clone(), None, bias, None, return_weights, rows_from);
        let x = rows_from_on(x, rows_from);
        let x = self
            .norm_attn
            .forward(x + self.dropout.forward(attn.context));
        let ff = linear(&self.ff_out, linear_gelu(&self.ff_in, x.clone()));
        BlockOutput {
            hidden: self.norm_ff.forward(x + self.dropout.forward(ff)),
            weights: attn.weights,
        }
    }
}

/// Rows `from..` of `t` along the sequence axis (all of them for 0).
fn rows_from_on(t: Tensor<3>, from: usize) -> Tensor<3> {
    match from {
        0 => t,
        from => t.slice(s![.., from.., ..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Layout, attention_mask};
    use crate::ops::cpu::tests::{max_diff, values};
    use burn::tensor::Distribution;

    /// `forward_rows` keeps rows of `forward`'s output, values and input gradients alike, on the
    /// CPU's packed attention (inference) and its autodiff operation (training).
    #[test]
    fn forward_rows_equals_the_rows_of_forward() {
        for (device, training) in [(Device::flex(), false), (Device::flex().autodiff(), true)] {
            device.seed(3);
            let block = BlockConfig::new(16, 2, 32).init(&mut Init::new(3, &device));
            // RMT's decoder layout: 2 read rows, 3 segment rows, 2 write rows.
            let bias = attention_mask(Layout::Decoder, 2, 3).bias(&device);
            let mut x = Tensor::<3>::random([2, 7, 16], Distribution::Default, &device);
            if training {
                x = x.require_grad();
            }
            let all = block.forward(x.clone(), bias.clone(), false).hidden;
            let kept = block.forward_rows(x.clone(), bias, None, false, 2).hidden;
            assert_eq!(kept.dims(), [2, 5, 16]);
            let expected = all.clone().slice(s![.., 2.., ..]);
            let diff = max_diff(&values(kept.clone()), &values(expected.clone()));
            assert!(diff < 1e-6, "outputs differ by {diff}");
            if training {
                // The same loss on the kept rows, through either path.
                let w = Tensor::<3>::random([2, 5, 16], Distribution::Default, &device);
                let grad = |y: Tensor<3>| {
                    let grads = (y * w.clone()).sum().backward();
                    values(x.grad(&grads).expect("gradient reaches the input"))
                };
                let (ours, theirs) = (grad(kept), grad(expected));
                let diff = max_diff(&ours, &theirs);
                assert!(diff < 1e-5, "input gradients differ by {diff}");
                assert!(
                    ours.iter().any(|g| g.abs() > 1e-3),
                    "the gradient is not zero"
                );
            }
        }
    }
}
