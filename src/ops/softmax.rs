//! The attention softmax, `softmax(scale · scores + bias)`, as one autodiff operation with CPU
//! kernels.
//!
//! Under autodiff Burn builds this from seven tracked operations (scale, add the mask, then
//! max, subtract, exp, sum, divide), each with its own pass over the `[batch, heads, q, k]`
//! scores forward and backward, and flex's fused softmax takes `exp` one element at a time.
//! This backend extension records one operation. On the CPU the forward overwrites the scores
//! row by row (scale, mask, max, a vectorisable `exp`, normalise) and the backward is
//! `dx = scale · y (g - Σ g y)` in one pass per row, both on the thread pool. GPU backends run
//! the same formulas from Burn's ops. [`masked_softmax`] is the entry point.

#[cfg(feature = "train")]
use burn::backend::Autodiff;
#[cfg(feature = "train")]
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::{
    Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;

use super::cpu;

/// The attention softmax as a backend operation, so that autodiff records one node.
#[backend_extension(Flex, Cube, Autodiff: cfg(feature = "train"))]
pub trait SoftmaxBackend: Backend {
    /// `y = softmax(scale · x + bias)` along the last axis, the `[q, k]` bias added to every
    /// `[q, k]` matrix of `x`.
    fn masked_softmax(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        forward_from_ops::<Self>(x, bias, scale)
    }

    /// The gradient of `x`, `scale · y (g - Σ g y)`, from the output `y` and its gradient `g`.
    fn masked_softmax_backward(
        y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        backward_from_ops::<Self>(y, grad, scale)
    }
}

/// `softmax(scale · x + bias)` along the last axis: attention weights from raw scores and a
/// mask bias ([`crate::nn::Mask::bias`]).
///
/// # Shapes
/// - x: `[..., q, k]` (rank >= 2)
/// - bias: `[q, k]`
/// - output: as `x`
pub fn masked_softmax<const D: usize>(x: Tensor<D>, bias: Tensor<2>, scale: f64) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as SoftmaxBackend>::masked_softmax(
        x.into_dispatch(),
        bias.into_dispatch(),
        scale,
    ))
}

/// `bias` `[q, k]` reshaped to broadcast against `x` `[..., q, k]`.
fn broadcast<B: Backend>(bias: FloatTensor<B>, x: &FloatTensor<B>) -> FloatTensor<B> {
    let rank = x.shape().num_dims();
    let mut dims = vec![1; rank];
    dims[rank - 2..].copy_from_slice(&bias.shape().dims::<2>());
    B::float_reshape(bias, Shape::from(dims))
}

fn forward_from_ops<B: Backend>(
    x: FloatTensor<B>,
    bias: FloatTensor<B>,
    scale: f64,
) -> FloatTensor<B> {
    let last = x.shape().num_dims() - 1;
    let bias = broadcast::<B>(bias, &x);
    B::softmax(
        B::float_add(B::float_mul_scalar(x, scale.into()), bias),
        last,
    )
}

fn backward_from_ops<B: Backend>(
    y: FloatTensor<B>,
    grad: FloatTensor<B>,
    scale: f64,
) -> FloatTensor<B> {
    let last = y.shape().num_dims() - 1;
    let dot = B::float_sum_dim(B::float_mul(grad.clone(), y.clone()), last);
    let dz = B::float_mul(y, B::float_sub(grad, dot));
    B::float_mul_scalar(dz, scale.into())
}

impl SoftmaxBackend for Cube {}

impl SoftmaxBackend for Flex {
    fn masked_softmax(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let shape = x.layout().shape().clone();
        let rank = shape.num_dims();
        if rank < 2
            || !cpu::is_f32(&x)
            || !cpu::is_f32(&bias)
            || bias.layout().shape().dims::<2>() != [shape[rank - 2], shape[rank - 1]]
            || shape[rank - 1] == 0
        {
            return forward_from_ops::<Flex>(x, bias, scale);
        }
        let bias = bias.to_contiguous();
        let forward = ForwardKernel {
            bias: cpu::f32s(&bias),
            q: shape[rank - 2],
            k: shape[rank - 1],
            scale: scale as f32,
        };
        // The scores become the weights in place (they are fresh from a matmul, nothing else
        // holds them).
        let mut x = cpu::owned(x);
        cpu::for_chunks(cpu::f32s_mut(&mut x), cpu::rows_chunk(forward.k), &forward);
        x
    }

    fn masked_softmax_backward(
        y: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        let shape = y.layout().shape().clone();
        let n = shape.last().copied().unwrap_or(0);
        if n == 0 || !cpu::is_f32(&y) || !cpu::is_f32(&grad) || &shape != grad.layout().shape() {
            return backward_from_ops::<Flex>(y, grad, scale);
        }
        let y = y.to_contiguous();
        let backward = BackwardKernel {
            y: cpu::f32s(&y),
            n,
            scale: scale as f32,
        };
        // The output gradient becomes the input gradient in place, row by row.
        let mut grad = cpu::owned(grad);
        cpu::for_chunks(cpu::f32s_mut(&mut grad), cpu::rows_chunk(n), &backward);
        grad
    }
}

/// The forward kernel: rows of `[..., q, k]` scores become their weights.
struct ForwardKernel<'a> {
    /// The `[q, k]` mask bias.
    bias: &'a [f32],
    q: usize,
    k: usize,
    scale: f32,
}

impl cpu::Kernel for ForwardKernel<'_> {
    type Out = ();

    #[inline(always)]
    fn run(&self, start: usize, rows: &mut [f32]) {
        let k = self.k;
        for (r, row) in rows.chunks_mut(k).enumerate() {
            let i = (start / k + r) % self.q;
            softmax_row(row, &self.bias[i * k..(i + 1) * k], self.scale);
        }
    }
}

/// The backward kernel: rows of the output gradient become the input gradient.
struct BackwardKernel<'a> {
    /// The forward's output, the weights.
    y: &'a [f32],
    /// Row length.
    n: usize,
    scale: f32,
}

impl cpu::Kernel for BackwardKernel<'_> {
    type Out = ();

    #[inline(always)]
    fn run(&self, start: usize, g: &mut [f32]) {
        for (g, y) in g.chunks_mut(self.n).zip(self.y[start..].chunks(self.n)) {
            softmax_backward_row(g, y, self.scale);
        }
    }
}

/// One row of the backward: `g = scale · y (g - Σ g y)`.
#[inline(always)]
pub(crate) fn softmax_backward_row(g: &mut [f32], y: &[f32], scale: f32) {
    let dot = cpu::sum8_zip(g, y, |g, y| g * y);
    for (g, y) in g.iter_mut().zip(y) {
        *g = scale * y * (*g - dot);
    }
}

/// One row: `row = softmax(scale · row + bias)`.
#[inline(always)]
pub(crate) fn softmax_row(row: &mut [f32], bias: &[f32], scale: f32) {
    for (v, b) in row.iter_mut().zip(bias) {
        *v = *v * scale + b;
    }
    let max = cpu::max8(row);
    row.iter_mut().for_each(|v| *v = cpu::exp(*v - max));
    let inv = 1.0 / cpu::sum8(row, |v| v);
    row.iter_mut().for_each(|v| *v *= inv);
}

#[cfg(feature = "train")]
impl<B: Backend + SoftmaxBackend, C: CheckpointStrategy> SoftmaxBackend for Autodiff<B, C> {
    fn masked_softmax(
        x: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct MaskedSoftmaxBackward;

        impl<B: Backend + SoftmaxBackend> Backward<B, 2> for MaskedSoftmaxBackward {
            /// The output and the scale.
            type State = (FloatTensor<B>, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [x_node, bias_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (y, scale) = ops.state;
                if let Some(node) = bias_node {
                    // A mask that learns (none in remem does): the unscaled gradient, summed
                    // over the leading axes.
                    let dz = B::masked_softmax_backward(y.clone(), grad.clone(), 1.0);
                    let shape = dz.shape();
                    let rank = shape.num_dims();
                    let (q, k) = (shape[rank - 2], shape[rank - 1]);
                    let matrices = shape.num_elements() / (q * k).max(1);
                    let dz = B::float_reshape(dz, Shape::new([matrices, q * k]));
                    let dbias = B::float_reshape(B::float_sum_dim(dz, 0), Shape::new([q, k]));
                    grads.register::<B>(node.id, dbias);
                }
                if let Some(node) = x_node {
                    grads.register::<B>(node.id, B::masked_softmax_backward(y, grad, scale));
                }
            }
        }

        match MaskedSoftmaxBackward
            .prepare::<C>([x.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::masked_softmax(x.into_primitive(), bias.into_primitive(), scale);
                prep.finish((y.clone(), scale), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::masked_softmax(
                x.into_primitive(),
                bias.into_primitive(),
                scale,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::tests::{max_diff, values};

    const SCALE: f64 = 0.125;

    /// Scores `[4, 4, 40, 37]` with a spread of magnitudes (two chunks for the thread pool, the
    /// boundary inside a `[q, k]` matrix), and a causal-style mask bias `[40, 37]` whose first
    /// row leaves one key open, as a causal mask leaves the first query.
    fn inputs(device: &Device) -> (Tensor<4>, Tensor<2>) {
        let xs: Vec<f32> = (0..4 * 4 * 40 * 37)
            .map(|i| ((i * 7919) % 1000) as f32 / 10.0 - 50.0)
            .collect();
        let bias: Vec<f32> = (0..40 * 37)
            .map(|i| {
                let (q, k) = (i / 37, i % 37);
                if k > q { -1e9 } else { (k as f32 / 9.0).sin() }
            })
            .collect();
        (
            Tensor::<4>::from_data(TensorData::new(xs, [4, 4, 40, 37]), device),
            Tensor::<2>::from_data(TensorData::new(bias, [40, 37]), device),
        )
    }

    fn burns<const D: usize>(x: Tensor<D>, bias: Tensor<2>) -> Tensor<D> {
        burn::tensor::activation::softmax(x.mul_scalar(SCALE) + bias.unsqueeze::<D>(), D - 1)
    }

    #[test]
    fn matches_burns_softmax_on_flex() {
        let device = Device::flex();
        let (x, bias) = inputs(&device);
        let ours = values(masked_softmax(x.clone(), bias.clone(), SCALE));
        let diff = max_diff(&ours, &values(burns(x, bias)));
        assert!(diff < 1e-6, "differs from Burn's softmax by {diff}");
        // Masked keys get exactly nothing.
        assert!(
            ours.chunks(37)
                .step_by(40)
                .all(|row| row[1..].iter().all(|&w| w == 0.0))
        );
    }

    #[cfg(feature = "train")]
    #[test]
    fn gradients_match_burns_softmax_on_flex() {
        let device = Device::flex().autodiff();
        let (x0, bias0) = inputs(&device);
        let weights = x0.clone().sin();
        let grads_of = |f: &dyn Fn(Tensor<4>, Tensor<2>) -> Tensor<4>| {
            // A strided input, as attention scores can be after a transpose.
            let x = x0.clone().swap_dims(0, 1).require_grad();
            let bias = bias0.clone().require_grad();
            let y = f(x.clone().swap_dims(0, 1), bias.clone());
            let grads = (y * weights.clone()).sum().backward();
            [
                values(x.grad(&grads).expect("x gradient")),
                values(bias.grad(&grads).expect("bias gradient")),
            ]
        };
        let ours = grads_of(&|x, b| masked_softmax(x, b, SCALE));
        let theirs = grads_of(&|x, b| burns(x, b));
        for (name, (ours, theirs)) in ["x", "bias"].iter().zip(ours.iter().zip(&theirs)) {
            let diff = max_diff(ours, theirs);
            assert!(diff < 1e-6, "{name} gradient differs from Burn's by {diff}");
            assert!(
                ours.iter().any(|g| g.abs() > 0.01),
                "{name} gradient trivially small"
            );
        }
    }

    /// The f32 kernel's gradient against central finite differences of the same loss in f64:
    /// the check that does not lean on Burn's own softmax gradient.
    #[cfg(feature = "train")]
    #[test]
    fn gradient_matches_finite_differences() {
        let device = Device::flex().autodiff();
        let xs = [0.3f64, -1.2, 2.0, 0.0, 0.7, -0.4, 1.5, -2.2];
        let bias = [0.0f64, 0.5, -1e9, 0.0, 0.2, 0.0, 0.0, -0.3];
        let w = [0.5f64, -1.0, 2.0, 0.25, -0.75, 1.5, -0.5, 1.0];
        let loss_of = |xs: &[f64]| {
            (0..2)
                .map(|r| {
                    let z: Vec<f64> = (0..4)
                        .map(|i| xs[r * 4 + i] * SCALE + bias[r * 4 + i])
                        .collect();
                    let m = z.iter().cloned().fold(f64::MIN, f64::max);
                    let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
                    let s: f64 = e.iter().sum();
                    (0..4).map(|i| e[i] / s * w[r * 4 + i]).sum::<f64>()
                })
                .sum::<f64>()
        };
        let f32s = |v: &[f64]| TensorData::new(v.iter().map(|&v| v as f32).collect(), [2, 4]);
        let x = Tensor::<2>::from_data(f32s(&xs), &device).require_grad();
        let b = Tensor::<2>::from_data(f32s(&bias), &device);
        let wt = Tensor::<2>::from_data(f32s(&w), &device);
        let loss = (masked_softmax(x.clone(), b, SCALE) * wt).sum();
        let grad = values(x.grad(&loss.backward()).unwrap());
        for (i, g) in grad.iter().enumerate() {
            let (mut hi, mut lo) = (xs, xs);
            hi[i] += 1e-3;
            lo[i] -= 1e-3;
            let numeric = (loss_of(&hi) - loss_of(&lo)) / 2e-3;
            assert!(
                (*g as f64 - numeric).abs() < 1e-5,
                "d loss / d x[{i}]: autodiff {g} vs finite difference {numeric}"
            );
        }
        // The blocked entry has no gradient; the others do.
        assert_eq!(grad[2], 0.0);
        assert!(grad.iter().filter(|g| g.abs() > 1e-3).count() >= 6);
    }
}
