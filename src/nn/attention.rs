//! Multi-head attention with an arbitrary mask that can also hand back its attention weights.
//!
//! Burn's `MultiHeadAttention` wants a mask per batch element and always returns weights after
//! dropout; remem shares one mask across the batch (every sequence in a batch has the same
//! segment layout), returns the weights only when asked (the visualisation), and needs the
//! projections exposed for models that add their own positional terms.
//!
//! Which path a call takes:
//! - Self-attention without rotary positions or dropout (RMT's, the segment baseline's) runs as
//!   one packed operation ([`fused_attention`]): query, key and value from one product
//!   ([`linear_concat`]), forward and backward; remem's CPU kernels read the heads in place
//!   (about 1.1x on an attention layer's training step at `copy-small` and `medium` sizes) and
//!   on wgpu one WGSL kernel each way.
//! - Training on wgpu with a cache or rotary positions (the Transformer-XL family, rotary RMT):
//!   one product over the rows `[cache | segment]` and the same operation with the queries from
//!   the segment's first row and the rotary turn inside its kernels
//!   ([`fused_attention_over`]).
//! - Inference on wgpu with a cache or rotary positions: query and key-value products (which
//!   normalise their rows themselves) and one kernel that attends from the queries over the
//!   keys and values ([`kv_attention`]).
//! - Elsewhere (the CPU with a cache or rotary positions, dropout on the weights, weights asked
//!   for in training, a kernel that failed its check) the materialised path: one product for
//!   the scores, remem's softmax kernel over them in place ([`masked_softmax`], one autodiff
//!   operation), one product with the values; at inference on GPUs without weights the
//!   backend's fused attention instead. On the CPU that is faster than flex's fused kernel at
//!   remem's sizes (`copy-small` streaming about 1.3x): flex's takes `exp` one element at a
//!   time and through libm's slow path for every masked score.
//!
//! `tests/parity.rs` checks the paths agree on flex and wgpu.

use burn::nn::{Linear, RotaryEncoding};
use burn::prelude::*;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;

use super::dropout::Dropout;
use super::init::Init;
use super::linear::{
    concat as linear_concat_weights, linear, linear_residual, linear_with, norm_linear_with,
};
use super::norm::LayerNorm;
use crate::device::is_cpu;
use crate::ops::affine;
use crate::ops::attention::{fused_attention, fused_attention_over, fused_attention_with_weights};
use crate::ops::kv_attention::{self, kv_attention};
use crate::ops::matmul::matmul;
use crate::ops::rotary::{self, rotary_heads};
use crate::ops::softmax::masked_softmax;
use crate::ops::wgsl::on_wgpu;

/// Configuration of [`Attention`].
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Model width; must be a multiple of `n_heads`.
    pub d_model: usize,
    /// Number of heads.
    pub n_heads: usize,
    /// Dropout on the attention weights.
    #[config(default = 0.0)]
    pub dropout: f64,
}

/// Multi-head scaled dot-product attention.
#[derive(Module, Debug)]
pub struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    dropout: Dropout,
    n_heads: usize,
    d_head: usize,
    /// Query, key and value weights side by side, made once for a streaming session
    /// ([`Attention::for_inference`]); never saved, never trained.
    #[module(skip)]
    packed: Option<Packed>,
}

/// Projections applied as one product, for inference.
#[derive(Debug, Clone)]
struct Packed {
    /// Query, key and value: weights `[d_model, 3 d_model]`, biases `[3 d_model]`.
    qkv: (Tensor<2>, Option<Tensor<1>>),
    /// Key and value, for keys from a longer context: `[d_model, 2 d_model]`, `[2 d_model]`
    /// (inference only).
    kv: Option<(Tensor<2>, Option<Tensor<1>>)>,
}

/// What [`Attention::forward`] returns.
#[derive(Debug, Clone)]
pub struct AttentionOutput {
    /// `[batch, seq_q, d_model]`.
    pub context: Tensor<3>,
    /// Softmax weights `[batch, n_heads, seq_q, seq_k]`, before dropout, when asked for.
    pub weights: Option<Tensor<4>>,
}

impl AttentionConfig {
    /// Build the module with weights from `init`.
    pub fn init(&self, init: &mut Init) -> Attention {
        assert!(
            self.n_heads > 0 && self.d_model.is_multiple_of(self.n_heads),
            "d_model must be a multiple of n_heads (validated in the model config)"
        );
        let d = self.d_model;
        Attention {
            query: init.linear(d, d, true),
            key: init.linear(d, d, true),
            value: init.linear(d, d, true),
            output: init.linear(d, d, true),
            dropout: Dropout::new(self.dropout, init.noise()),
            n_heads: self.n_heads,
            d_head: self.d_model / self.n_heads,
            packed: None,
        }
    }
}

impl Attention {
    /// This layer for a streaming session: the weights of the projections that read the same
    /// rows (query, key and value; key and value) concatenated once here instead of on every
    /// call (on a GPU those are two kernels per layer and segment). Crate-private because the
    /// packed copy does not follow later changes to the weights: a session owns the only copy
    /// of its model, and nothing trains it or loads weights into it. Calls on autodiff tensors
    /// never read the packed copy.
    pub(crate) fn for_inference(self) -> Self {
        let packed = Packed {
            qkv: linear_concat_weights(&[&self.query, &self.key, &self.value]),
            kv: Some(linear_concat_weights(&[&self.key, &self.value])),
        };
        Self {
            packed: Some(packed),
            ..self
        }
    }

    /// This layer for one training step of several segments: the query, key and value weights
    /// concatenated once, as tracked operations on the current parameters, instead of once per
    /// segment. The gradients of the segments then add up on the packed weights and are split
    /// back to the three layers once, not per segment (on wgpu 2 kernels fewer per layer and
    /// segment forward, and fewer lone additions backward); the numbers are the same. The copy
    /// is for that step only: it does not follow the optimiser's update.
    #[cfg(feature = "train")]
    pub(crate) fn for_training_step(&self) -> Self {
        let packed = Packed {
            qkv: linear_concat_weights(&[&self.query, &self.key, &self.value]),
            kv: None,
        };
        Self {
            packed: Some(packed),
            ..self.clone()
        }
    }

    /// Self-attention of `x` under the additive `bias` (0 = allowed, very negative = blocked,
    /// see [`crate::nn::Mask::bias`]).
    ///
    /// # Shapes
    /// - x: `[batch, seq, d_model]`
    /// - bias: `[seq, seq]`
    /// - output context: `[batch, seq, d_model]`, weights `[batch, n_heads, seq, seq]`
    pub fn forward(&self, x: Tensor<3>, bias: Tensor<2>, return_weights: bool) -> AttentionOutput {
        self.forward_rotary(x, None, bias, None, return_weights, 0)
    }

    /// Attend from the rows of `query` over `[cache | query]` (Transformer-XL's cached states
    /// before the segment; `None`: over `query` itself), with rotary positions when `rotary` is
    /// given: keys sit at positions `0..seq_k` and queries at `cache..seq_k`. The context is
    /// returned for query rows `rows_from..` only: every row still attends (the weights, when
    /// asked for, cover all rows), but the output projection runs on the rows kept (for a
    /// model's last layer, whose other rows nothing reads; 0 keeps all).
    ///
    /// # Shapes
    /// - query: `[batch, seq_q, d_model]`
    /// - cache: `[batch, cache, d_model]`; `seq_k = cache + seq_q`
    /// - bias: `[seq_q, seq_k]`
    /// - output context: `[batch, seq_q - rows_from, d_model]`, weights
    ///   `[batch, n_heads, seq_q, seq_k]`
    pub fn forward_rotary(
        &self,
        query: Tensor<3>,
        cache: Option<Tensor<3>>,
        bias: Tensor<2>,
        rotary: Option<&RotaryEncoding>,
        return_weights: bool,
        rows_from: usize,
    ) -> AttentionOutput {
        let (mixed, weights) =
            self.attend(query, cache, bias, rotary, return_weights, rows_from, None);
        AttentionOutput {
            context: self.project(mixed),
            weights,
        }
    }

    /// The output projection of `mixed` ([`Attention::attend`]'s context).
    ///
    /// # Shapes
    /// - mixed, output: `[batch, seq, d_model]`
    pub(crate) fn project(&self, mixed: Tensor<3>) -> Tensor<3> {
        linear(&self.output, mixed)
    }

    /// `residual + ` the output projection of `mixed` ([`Attention::attend`]'s context), the sum
    /// taken inside the projection (see [`linear_residual`]).
    ///
    /// # Shapes
    /// - mixed, residual, output: `[batch, seq, d_model]`
    pub(crate) fn project_onto(&self, mixed: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        linear_residual(&self.output, mixed, residual)
    }

    /// [`Attention::forward_rotary`] before the output projection: the heads' mixed values
    /// joined `[batch, seq_q - rows_from, d_model]`, and the weights when asked for.
    ///
    /// With `norm`, `query` and `cache` are a pre-norm block's input before its norm: the
    /// products normalise their rows as they read them where they can (inference on wgpu, one
    /// kernel per product instead of a norm kernel before them), and elsewhere the rows are
    /// normalised first, as the block did.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attend(
        &self,
        query: Tensor<3>,
        cache: Option<Tensor<3>>,
        bias: Tensor<2>,
        rotary: Option<&RotaryEncoding>,
        return_weights: bool,
        rows_from: usize,
        norm: Option<&LayerNorm>,
    ) -> (Tensor<3>, Option<Tensor<4>>) {
        let [batch, seq_q, d_model] = query.dims();
        // Keys over `[cache | query]`; rotary queries sit after the cache.
        let cached = cache.as_ref().map_or(0, |c| c.dims()[1]);
        let context = cache.map(|c| Tensor::cat(vec![c, query.clone()], 1));
        let rotary = rotary.map(|r| (r, cached));
        assert!(rows_from < seq_q, "rows {rows_from}.. of {seq_q} keep none");
        let keep = |mixed: Tensor<3>| match rows_from {
            0 => mixed,
            from => mixed.slice(s![.., from.., ..]),
        };
        let scale = 1.0 / (self.d_head as f64).sqrt();
        if self.packed_over(
            &query,
            context.is_some() || rotary.is_some(),
            return_weights,
        ) {
            // Training on wgpu: one product over the rows `[cache | segment]` (the cached rows'
            // queries are computed and never read), the queries from the segment's first row
            // on, rotary positions turned inside the attention's kernels.
            let rows = context.unwrap_or(query);
            let rows = match norm {
                Some(n) => n.forward(rows),
                None => rows,
            };
            let qkv = self.qkv(rows, None);
            let rope = rotary.map(|(r, _)| r.freq_complex.clone());
            let mixed = fused_attention_over(qkv, bias, rope, cached, self.n_heads, scale);
            return (keep(mixed), None);
        }
        let (query, context, norm) = match norm {
            Some(n) if !affine::serves(&query, &self.query.weight.val()) => {
                (n.forward(query), context.map(|c| n.forward(c)), None)
            }
            n => (query, context, n),
        };
        if self.packed(
            &query,
            context.is_some() || rotary.is_some(),
            return_weights,
        ) {
            let qkv = self.qkv(query, norm);
            let (mixed, weights) = if return_weights {
                let (mixed, weights) = fused_attention_with_weights(qkv, bias, self.n_heads, scale);
                (mixed, Some(weights))
            } else {
                (fused_attention(qkv, bias, self.n_heads, scale), None)
            };
            return (keep(mixed), weights);
        }
        // On wgpu in training the rotary turn is one kernel each way, from the projections' rows
        // into the heads (`crate::ops::rotary`); elsewhere Burn's rotary encoding turns the heads
        // below.
        let mut rotary = rotary;
        let (mut q, mut k, v) = if query.is_autodiff() {
            // Training keeps three products: splitting one product's output back up costs
            // its backward a zero-filled gradient per piece, more than the wider product saves.
            let context = context.unwrap_or_else(|| query.clone());
            let turned = rotary.filter(|_| rotary::serves(&query));
            let turn = |x: Tensor<3>, start: usize| match turned {
                Some((rope, _)) => rotary_heads(x, rope.freq_complex.clone(), start),
                None => self.heads(x),
            };
            let query_start = turned.map_or(0, |(_, start)| start);
            if turned.is_some() {
                rotary = None;
            }
            (
                turn(linear(&self.query, query), query_start),
                turn(linear(&self.key, context.clone()), 0),
                self.heads(linear(&self.value, context)),
            )
        } else {
            // On wgpu one kernel attends from the query rows over the keys and values, rotary
            // positions turned inside it (`crate::ops::kv_attention`).
            let kernel = !return_weights && kv_attention::serves(&query);
            let attend = |q: Tensor<3>, kv: Tensor<3>| {
                let rope = rotary.map(|(r, start)| (r.freq_complex.clone(), start));
                keep(kv_attention(q, kv, bias.clone(), rope, self.n_heads, scale))
            };
            match context {
                Some(context) => {
                    let (w, b) = match &self.packed {
                        Some(Packed {
                            kv: Some((w, b)), ..
                        }) => (w.clone(), b.clone()),
                        _ => linear_concat_weights(&[&self.key, &self.value]),
                    };
                    let kv = project(norm, context, w, b);
                    let q = project(
                        norm,
                        query,
                        self.query.weight.val(),
                        self.query.bias.as_ref().map(|b| b.val()),
                    );
                    if kernel {
                        return (attend(q, kv), None);
                    }
                    let [k, v] = self.split_heads(kv);
                    (self.heads(q), k, v)
                }
                None => {
                    let qkv = self.qkv(query, norm);
                    if kernel {
                        let q = qkv.clone().slice(s![.., .., ..d_model]);
                        return (attend(q, qkv.slice(s![.., .., d_model..])), None);
                    }
                    let [q, k, v] = self.split_heads(qkv);
                    (q, k, v)
                }
            }
        };
        if let Some((rope, query_start)) = rotary {
            q = rope.apply(q, query_start);
            k = rope.apply(k, 0);
        }

        let fused = !(return_weights || q.is_autodiff() || is_cpu(&q.device()));
        let (mixed, returned) = if fused {
            // The backend's fused kernel (flash attention on GPUs). The `[1, 1, q, k]` bias is
            // read in place for every head.
            let options = AttentionModuleOptions {
                scale: Some(scale),
                ..Default::default()
            };
            let bias = Some(bias.unsqueeze::<4>());
            (attention(q, k, v, None, bias, options), None)
        } else {
            // Weights are materialised: the page draws them, autodiff needs them for the
            // backward pass (Burn's fused attention has no backward and decomposes anyway), and
            // on the CPU this is the faster path (module docs).
            let weights = masked_softmax(matmul(q, k.swap_dims(2, 3)), bias, scale);
            let returned = return_weights.then(|| weights.clone());
            (matmul(self.dropout.forward(weights), v), returned)
        };
        let mixed = mixed.swap_dims(1, 2).reshape([batch, seq_q, d_model]);
        (keep(mixed), returned)
    }

    /// Whether [`fused_attention`] runs this call: self-attention without rotary positions
    /// (`extended` false), on the CPU (not wasm: its kernels use the native GEMM and threads) or
    /// on wgpu (its WGSL kernel), no dropout on the weights, and weights asked for only outside
    /// training (the packed operation returns them for the visualisation, without a gradient
    /// path of their own).
    fn packed(&self, query: &Tensor<3>, extended: bool, return_weights: bool) -> bool {
        let served = !is_cpu(&query.device()) || cfg!(not(target_family = "wasm"));
        let training = query.is_autodiff();
        served && !extended && !(training && (self.dropout.prob() > 0.0 || return_weights))
    }

    /// Whether [`fused_attention_over`] runs this call: training on wgpu (its WGSL kernels),
    /// attention over a cache or with rotary positions (self-attention without either takes
    /// [`Attention::packed`]), no dropout on the weights and none asked for.
    fn packed_over(&self, query: &Tensor<3>, extended: bool, return_weights: bool) -> bool {
        query.is_autodiff()
            && on_wgpu(&query.device())
            && extended
            && self.dropout.prob() == 0.0
            && !return_weights
    }

    /// Query, key and value of `x` side by side, from the packed weights when the layer has
    /// them and `x` carries no gradient.
    ///
    /// # Shapes
    /// - x: `[batch, seq, d_model]`
    /// - output: `[batch, seq, 3 d_model]`
    fn qkv(&self, x: Tensor<3>, norm: Option<&LayerNorm>) -> Tensor<3> {
        let (w, b) = match &self.packed {
            // An inference copy's packed weights serve inference only; a training step's
            // (tracked) serve that step.
            Some(Packed { qkv: (w, b), .. }) if w.is_autodiff() == x.is_autodiff() => {
                (w.clone(), b.clone())
            }
            _ => linear_concat_weights(&[&self.query, &self.key, &self.value]),
        };
        project(norm, x, w, b)
    }

    /// `[batch, seq, d_model]` -> `[batch, n_heads, seq, d_head]`.
    fn heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [batch, seq, _] = x.dims();
        x.reshape([batch, seq, self.n_heads, self.d_head])
            .swap_dims(1, 2)
    }

    /// `N` projections side by side, `[batch, seq, N · d_model]`, as `N` tensors
    /// `[batch, n_heads, seq, d_head]` (views, nothing copied).
    fn split_heads<const N: usize>(&self, x: Tensor<3>) -> [Tensor<4>; N] {
        let [batch, seq, _] = x.dims();
        let h = self.n_heads;
        let x = x.reshape([batch, seq, N * h, self.d_head]).swap_dims(1, 2);
        std::array::from_fn(|i| x.clone().slice(s![.., i * h..(i + 1) * h, .., ..]))
    }
}

/// `x · weight + bias`, with each row of `x` layer-normed first when `norm` is given
/// ([`norm_linear_with`]).
///
/// # Shapes
/// - x: `[batch, seq, d_in]`
/// - weight: `[d_in, d_out]`
/// - bias: `[d_out]`
/// - output: `[batch, seq, d_out]`
fn project(
    norm: Option<&LayerNorm>,
    x: Tensor<3>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<3> {
    match norm {
        Some(norm) => norm_linear_with(norm, x, weight, bias),
        None => linear_with(x, weight, bias),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::mask::{Mask, causal_mask};

    #[test]
    fn blocked_keys_get_zero_weight_and_rows_sum_to_one() {
        let device = Device::flex();
        let attn = AttentionConfig::new(8, 2).init(&mut Init::new(1, &device));
        let x = Tensor::<3>::random([2, 4, 8], burn::tensor::Distribution::Default, &device);
        let out = attn.forward(x, causal_mask(4).bias(&device), true);
        let w = out
            .weights
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        // [2, 2, 4, 4]: row i of every head has zeros right of the diagonal.
        for (n, row) in w.chunks(4).enumerate() {
            let i = n % 4;
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "row {n} sums to {sum}");
            for (j, &v) in row.iter().enumerate() {
                if j > i {
                    assert_eq!(v, 0.0, "row {n} attends to future key {j}");
                }
            }
        }
        assert_eq!(out.context.dims(), [2, 4, 8]);
    }

    #[test]
    fn the_packed_projections_give_what_the_layers_give() {
        let device = Device::flex();
        let attn = AttentionConfig::new(8, 2).init(&mut Init::new(3, &device));
        let packed = attn.clone().for_inference();
        assert!(attn.packed.is_none() && packed.packed.is_some());
        let x = Tensor::<3>::random([2, 5, 8], burn::tensor::Distribution::Default, &device);
        let bias = causal_mask(5).bias(&device);
        for weights in [false, true] {
            let want = attn.forward(x.clone(), bias.clone(), weights);
            let got = packed.forward(x.clone(), bias.clone(), weights);
            let diff: f32 = (got.context - want.context).abs().max().into_scalar();
            assert!(diff < 1e-6, "weights {weights}: contexts differ by {diff}");
        }
        // Keys and values over a cache and the rows (Transformer-XL's).
        let cache = Tensor::<3>::random([2, 2, 8], burn::tensor::Distribution::Default, &device);
        let bias = Mask::open(5, 7).bias(&device);
        let [want, got] = [&attn, &packed].map(|a| {
            a.forward_rotary(x.clone(), Some(cache.clone()), bias.clone(), None, false, 0)
                .context
        });
        let diff: f32 = (got - want).abs().max().into_scalar();
        assert!(diff < 1e-6, "with a cache: contexts differ by {diff}");
    }

    #[test]
    fn a_single_allowed_key_copies_its_value() {
        // Every query may only see key 2, so every output row equals row 2's projected value.
        let device = Device::flex();
        let attn = AttentionConfig::new(4, 1).init(&mut Init::new(1, &device));
        let x = Tensor::<3>::random([1, 3, 4], burn::tensor::Distribution::Default, &device);
        let mut mask = Mask::blocked(3, 3);
        for i in 0..3 {
            mask.allow(i, 2);
        }
        let out = attn.forward(x, mask.bias(&device), false).context;
        let rows = out.into_data().try_to_vec::<f32>().unwrap();
        for r in 0..3 {
            for c in 0..4 {
                assert!((rows[r * 4 + c] - rows[8 + c]).abs() < 1e-6);
            }
        }
    }
}
