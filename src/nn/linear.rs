//! Linear layers applied as one matrix product over all rows.
//!
//! Burn's `Linear` on a `[batch, seq, d]` input may run a batched matmul, one small product per
//! sequence, each packing the same weight again (its policy folds the batch into the rows only
//! when that makes the output squarer). remem's activations are contiguous rows, so folding is
//! a free reshape, and one `[batch · seq, d_in] × [d_in, d_out]` product is faster on the CPU.
//! The product goes through [`matmul`] (the CPU's GEMM without Burn's extra output passes), the
//! bias is added after.
//!
//! [`linear_concat`] goes one step further for layers that read the same input (attention's
//! query, key and value): their weights side by side make one wider product, which a GEMM runs
//! closer to its peak than three narrow ones (on the CPU, `[288, 256] × [256, 768]` at about 1.5x
//! the FLOP/s of `[288, 256] × [256, 256]`), and the input is packed once instead of three times.

use burn::nn::Linear;
use burn::prelude::*;

use super::norm::LayerNorm;
use crate::ops::affine::{self, Epilogue, affine};
use crate::ops::gelu::gelu;
use crate::ops::matmul::matmul;

/// `layer(x)` as one product over the rows of `x`.
///
/// # Shapes
/// - x: `[..., d_in]`
/// - output: `[..., d_out]`
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let bias = bias_of(layer);
    linear_with(x, layer.weight.val(), bias)
}

/// `x · weight + bias` as [`linear`] runs it, for weights that are not one layer's (the packed
/// projections an attention layer keeps for inference).
///
/// # Shapes
/// - x: `[..., d_in]`
/// - weight: `[d_in, d_out]`
/// - bias: `[d_out]`
/// - output: `[..., d_out]`
pub(crate) fn linear_with<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    match bias {
        Some(bias) if affine::serves(&x, &weight) => {
            affine(x, weight, bias, None, Epilogue::None, None)
        }
        bias if broadcast(&x) => broadcast_affine(x, weight, bias),
        bias => on_rows(x, |rows| rows_affine(rows, weight, bias)),
    }
}

/// `layer(norm(x))`, a pre-norm block's norm and the product after it; on wgpu at inference
/// one kernel that normalises each row as it reads it. The same numbers as
/// `linear(layer, norm.forward(x))` up to rounding.
///
/// # Shapes
/// - x: `[..., d_in]`
/// - output: `[..., d_out]`
pub fn norm_linear<const D: usize>(norm: &LayerNorm, layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let bias = bias_of(layer);
    norm_linear_with(norm, x, layer.weight.val(), bias)
}

/// [`norm_linear`] with weights that are not one layer's (as [`linear_with`]).
///
/// # Shapes
/// - x: `[..., d_in]`
/// - weight: `[d_in, d_out]`
/// - bias: `[d_out]`
/// - output: `[..., d_out]`
pub(crate) fn norm_linear_with<const D: usize>(
    norm: &LayerNorm,
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    match bias {
        Some(bias) if affine::serves(&x, &weight) => {
            affine(x, weight, bias, None, Epilogue::None, Some(norm.row_norm()))
        }
        bias => linear_with(norm.forward(x), weight, bias),
    }
}

/// `gelu(layer(x))`; on wgpu at inference one kernel with the GELU in its epilogue. Elsewhere
/// the GELU is taken before the rows are unfolded (as [`linear_residual`] takes its sum): on
/// GPUs it then joins the product's kernel with the bias, and backward its product with the
/// slope joins the bias gradient's reduction (after the unfolding reshape each was a kernel of
/// its own, per layer and segment in training).
///
/// # Shapes
/// - x: `[..., d_in]`
/// - output: `[..., d_out]`
pub fn linear_gelu<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let weight = layer.weight.val();
    let bias = bias_of(layer);
    match bias {
        Some(bias) if affine::serves(&x, &weight) => {
            affine(x, weight, bias, None, Epilogue::Gelu, None)
        }
        bias if broadcast(&x) => gelu(broadcast_affine(x, weight, bias)),
        bias => on_rows(x, |rows| gelu(rows_affine(rows, weight, bias))),
    }
}

/// `gelu(layer(norm(x)))`; on wgpu at inference one kernel (see [`norm_linear`]).
///
/// # Shapes
/// - x: `[..., d_in]`
/// - output: `[..., d_out]`
pub fn norm_linear_gelu<const D: usize>(
    norm: &LayerNorm,
    layer: &Linear,
    x: Tensor<D>,
) -> Tensor<D> {
    let weight = layer.weight.val();
    match &layer.bias {
        Some(bias) if affine::serves(&x, &weight) => affine(
            x,
            weight,
            bias.val(),
            None,
            Epilogue::Gelu,
            Some(norm.row_norm()),
        ),
        _ => linear_gelu(layer, norm.forward(x)),
    }
}

/// `residual + layer(x)`, the sum taken before the rows are unfolded: on GPUs it then joins the
/// product's kernel with the bias (after the unfolding reshape it ran as a kernel of its own,
/// two per layer and segment in training). The same numbers as `residual + linear(layer, x)`.
///
/// # Shapes
/// - x: `[..., d_in]`
/// - residual, output: `[..., d_out]`
pub fn linear_residual<const D: usize>(
    layer: &Linear,
    x: Tensor<D>,
    residual: Tensor<D>,
) -> Tensor<D> {
    let bias = bias_of(layer);
    let weight = layer.weight.val();
    match bias {
        Some(bias) if affine::serves(&x, &weight) => {
            affine(x, weight, bias, Some(residual), Epilogue::Residual, None)
        }
        bias if broadcast(&x) => broadcast_affine(x, weight, bias) + residual,
        bias => on_rows(x, |rows| {
            let d_out = weight.dims()[1];
            let residual = residual.reshape([rows.dims()[0], d_out]);
            rows_affine(rows, weight, bias) + residual
        }),
    }
}

/// `layers[0](x)`, `layers[1](x)`, ... side by side along the last axis, as one product with the
/// layers' weights (and biases) concatenated. The layers share `d_in`.
///
/// # Shapes
/// - x: `[..., d_in]`
/// - output: `[..., d_out_0 + d_out_1 + ...]`
pub fn linear_concat<const D: usize>(layers: &[&Linear], x: Tensor<D>) -> Tensor<D> {
    let (weight, bias) = concat(layers);
    linear_with(x, weight, bias)
}

/// The layers' weights side by side `[d_in, d_out_0 + d_out_1 + ...]` and their biases (zeros
/// for a layer without one), as [`linear_concat`] applies them.
pub(crate) fn concat(layers: &[&Linear]) -> (Tensor<2>, Option<Tensor<1>>) {
    let weight = Tensor::cat(layers.iter().map(|l| l.weight.val()).collect(), 1);
    let bias = layers.iter().any(|l| l.bias.is_some()).then(|| {
        let biases = layers.iter().map(|l| match &l.bias {
            Some(b) => b.val(),
            None => Tensor::zeros([l.weight.dims()[1]], &weight.device()),
        });
        Tensor::cat(biases.collect(), 0)
    });
    (weight, bias)
}

/// Whether [`broadcast_affine`] serves `x`: inference on a GPU other than wgpu's (which takes
/// [`affine`]). Training keeps the fold into rows: the weight's gradient is then one product
/// instead of a batch of them and a sum.
fn broadcast<const D: usize>(x: &Tensor<D>) -> bool {
    !x.is_autodiff() && !crate::device::is_cpu(&x.device())
}

/// `x + out(gelu(inner(norm(x))))`: a pre-norm block's feed-forward layer with its residual.
/// At inference on GPUs as [`norm_linear_gelu`] then [`linear_residual`]; elsewhere with the
/// rows folded once for the whole layer, not unfolded and folded again between its two
/// products: on GPUs the reshapes between them ended Burn's fused blocks, and backward the
/// GELU's product with its slope then joins the second product's kernel.
///
/// # Shapes
/// - x and output: `[..., d]`
pub fn norm_feed_forward<const D: usize>(
    norm: &LayerNorm,
    inner: &Linear,
    out: &Linear,
    x: Tensor<D>,
) -> Tensor<D> {
    if affine::serves(&x, &inner.weight.val()) || broadcast(&x) {
        let hidden = norm_linear_gelu(norm, inner, x.clone());
        return linear_residual(out, hidden, x);
    }
    on_rows(x, |rows| feed_forward_rows(norm, inner, out, rows))
}

/// `rows + out(gelu(inner(norm(rows))))` on folded rows `[rows, d]`.
fn feed_forward_rows(norm: &LayerNorm, inner: &Linear, out: &Linear, rows: Tensor<2>) -> Tensor<2> {
    let hidden = gelu(rows_affine(
        norm.forward(rows.clone()),
        inner.weight.val(),
        bias_of(inner),
    ));
    rows_affine(hidden, out.weight.val(), bias_of(out)) + rows
}

/// A layer's bias, if it has one.
fn bias_of(layer: &Linear) -> Option<Tensor<1>> {
    layer.bias.as_ref().map(|b| b.val())
}

/// `x · weight + bias` with the weight broadcast over the leading axes, for GPUs: no fold into
/// rows, and the weight and bias reshaped before the product. Burn's fusion ends a fused block
/// at a reshape registered in its middle, so this way the bias addition joins the element-wise
/// work after it (GELU, or the residual and the next layer norm) in one kernel.
///
/// # Shapes
/// - x: `[..., d_in]`
/// - weight: `[d_in, d_out]`
/// - bias: `[d_out]`
/// - output: `[..., d_out]`
fn broadcast_affine<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let bias = bias.map(|b| b.unsqueeze::<D>());
    let y = matmul(x, weight.unsqueeze::<D>());
    match bias {
        Some(bias) => y + bias,
        None => y,
    }
}

/// `rows · weight + bias`, the product through [`matmul`].
///
/// # Shapes
/// - rows: `[rows, d_in]`
/// - weight: `[d_in, d_out]`
/// - bias: `[d_out]`
/// - output: `[rows, d_out]`
fn rows_affine(rows: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    // The bias reshaped before the product: on GPUs its addition then joins the product's
    // kernel (see [`broadcast_affine`]).
    let bias = bias.map(|b| b.unsqueeze::<2>());
    let y = matmul(rows, weight);
    match bias {
        Some(bias) => y + bias,
        None => y,
    }
}

/// `f` over `x` with its leading axes folded into rows (a free reshape of contiguous rows), and
/// unfolded again.
fn on_rows<const D: usize>(x: Tensor<D>, f: impl FnOnce(Tensor<2>) -> Tensor<2>) -> Tensor<D> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = f(x.reshape([rows, d_in]));
    let mut out = dims;
    out[D - 1] = y.dims()[1];
    y.reshape(out)
}

/// A `d x d` linear layer that starts as `gain` times the identity, with a zero bias: a new
/// layer between a pretrained model's spaces that changes nothing but the scale at first.
pub fn scaled_identity(d: usize, gain: f64, device: &Device) -> Linear {
    Linear {
        weight: burn::module::Param::from_tensor(Tensor::<2>::eye(d, device) * gain),
        bias: Some(burn::module::Param::from_tensor(Tensor::zeros([d], device))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::tests::{max_diff, values};
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    #[test]
    fn concatenated_layers_equal_each_layer_alone() {
        let device = Device::flex();
        let a = LinearConfig::new(6, 4).init(&device);
        let b = LinearConfig::new(6, 3).with_bias(false).init(&device);
        let x = Tensor::<3>::random([2, 5, 6], Distribution::Default, &device);
        let both = linear_concat(&[&a, &b], x.clone());
        assert_eq!(both.dims(), [2, 5, 7]);
        let alone = Tensor::cat(vec![a.forward(x.clone()), b.forward(x)], 2);
        let diff = max_diff(&values(both), &values(alone));
        assert!(diff < 1e-6, "max difference {diff}");
    }
}
