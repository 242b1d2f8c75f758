//! Linear layers applied as one matrix product over all rows.
//!
//! Burn's `Linear` on a `[batch, seq, d]` input may run a batched matmul, one small product per
//! sequence, each packing the same weight again (its policy folds the batch into the rows only
//! when that makes the output squarer). remem's activations are contiguous rows, so folding is
//! a free reshape, and one `[batch · seq, d_in] × [d_in, d_out]` product is faster on the CPU.

use burn::nn::Linear;
use burn::prelude::*;

/// `layer(x)` as one product over the rows of `x`.
///
/// # Shapes
/// - x: `[..., d_in]`
/// - output: `[..., d_out]`
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = layer.forward(x.reshape([rows, d_in]));
    let mut out = dims;
    out[D - 1] = y.dims()[1];
    y.reshape(out)
}
