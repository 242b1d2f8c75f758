//! Each row's weighted cross-entropy as one autodiff operation, one WGSL kernel forward and one
//! backward on wgpu.
//!
//! Training's loss scores every position: `w_n (logsumexp(l_n) - l_n[t_n])` for logits `l_n`,
//! target `t_n` and weight `w_n`. From Burn's operations the log-softmax, the gather and their
//! gradients (a zero-filled tensor and a scatter among them) took about twenty kernels of a
//! training step on wgpu. [`cross_entropy_rows`] records one operation: on wgpu one workgroup
//! per row computes the row's maximum, the log of its sum of exponentials and the weighted
//! negative log-likelihood (`shaders/cross_entropy.wgsl`), and the backward recomputes them and
//! writes `g_n w_n (softmax(l_n) - onehot(t_n))` (`shaders/cross_entropy_backward.wgsl`), one
//! dispatch each ([`wgpu`]). The CPU and other GPU runtimes take the reference written with
//! Burn's operations (the one-hot rows built from an index row by arithmetic, so it needs no
//! integer operations). The targets travel as `f32` (exact for ids below 2^24).

mod wgpu;

#[cfg(feature = "train")]
use burn::backend::Autodiff;
#[cfg(feature = "train")]
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::wgpu::CubeBackend;
use burn::backend::{
    Backend, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;

use crate::ops::wgsl::{agrees, check_on, read};

/// Each row's weighted cross-entropy as a backend operation, so autodiff records one node.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait CrossEntropyBackend: Backend {
    /// `w_n (logsumexp(l_n) - l_n[t_n])` for each row `n` of `logits` (`[rows, vocab]`), with
    /// `targets` (`[rows]`, ids as `f32`) and `weights` (`[rows]`): `[rows]`.
    #[fusion(dtype = logits, shape = rows_shape(logits))]
    fn cross_entropy_rows(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference::<Self>(logits, targets, weights)
    }

    /// The logits' gradient `g_n w_n (softmax(l_n) - onehot(t_n))` from each row's output
    /// gradient `grad` (`[rows]`).
    #[fusion(dtype = logits, shape = logits)]
    fn cross_entropy_rows_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        backward_from_ops::<Self>(logits, targets, weights, grad)
    }
}

/// `[rows, vocab]` -> `[rows]`, for the fusion stream.
fn rows_shape(logits: &Shape) -> Shape {
    Shape::new([logits[0]])
}

/// Each row's weighted cross-entropy: `weights[n] (logsumexp(logits[n]) - logits[n, targets[n]])`.
///
/// # Shapes
/// - logits: `[rows, vocab]`
/// - targets, weights: `[rows]`
/// - output: `[rows]`
pub fn cross_entropy_rows(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    weights: Tensor<1>,
) -> Tensor<1> {
    let [rows, _] = logits.dims();
    assert_eq!(
        targets.dims(),
        [rows],
        "cross_entropy_rows: one target per row"
    );
    assert_eq!(
        weights.dims(),
        [rows],
        "cross_entropy_rows: one weight per row"
    );
    check_kernel(&logits.device());
    if logits.is_autodiff() {
        check_backward_kernel(&logits.device());
    }
    Tensor::from_dispatch(<Dispatch as CrossEntropyBackend>::cross_entropy_rows(
        logits.into_dispatch(),
        targets.float().into_dispatch(),
        weights.into_dispatch(),
    ))
}

/// The one-hot rows of `targets` (`[rows]`, ids as `f32`) over `vocab` columns, as
/// `max(0, 1 - |column - target|)`: exact for whole-number ids, no integer operations.
fn one_hot<B: Backend>(targets: FloatTensor<B>, vocab: usize) -> FloatTensor<B> {
    let rows = targets.shape()[0];
    let columns = (0..vocab).map(|i| i as f32).collect();
    let columns = B::float_from_data(TensorData::new(columns, [1, vocab]), &targets.device());
    let targets = B::float_reshape(targets, Shape::new([rows, 1]));
    let distance = B::float_abs(B::float_sub(columns, targets));
    B::float_clamp_min(
        B::float_add_scalar(B::float_neg(distance), 1.0.into()),
        0.0.into(),
    )
}

/// Each row's `logsumexp`, `[rows, 1]`.
fn logsumexp<B: Backend>(logits: FloatTensor<B>) -> FloatTensor<B> {
    let max = B::float_max_dim(logits.clone(), 1);
    let shifted = B::float_exp(B::float_sub(logits, max.clone()));
    B::float_add(B::float_log(B::float_sum_dim(shifted, 1)), max)
}

/// [`CrossEntropyBackend::cross_entropy_rows`] from the backend's tensor operations.
fn reference<B: Backend>(
    logits: FloatTensor<B>,
    targets: FloatTensor<B>,
    weights: FloatTensor<B>,
) -> FloatTensor<B> {
    let shape = logits.shape();
    let (rows, vocab) = (shape[0], shape[1]);
    let picked = B::float_sum_dim(
        B::float_mul(logits.clone(), one_hot::<B>(targets, vocab)),
        1,
    );
    let nll = B::float_sub(logsumexp::<B>(logits), picked);
    B::float_mul(B::float_reshape(nll, Shape::new([rows])), weights)
}

/// [`CrossEntropyBackend::cross_entropy_rows_backward`] from the backend's tensor operations.
fn backward_from_ops<B: Backend>(
    logits: FloatTensor<B>,
    targets: FloatTensor<B>,
    weights: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let shape = logits.shape();
    let (rows, vocab) = (shape[0], shape[1]);
    let lse = logsumexp::<B>(logits.clone());
    let softmax = B::float_exp(B::float_sub(logits, lse));
    let scale = B::float_reshape(B::float_mul(grad, weights), Shape::new([rows, 1]));
    B::float_mul(B::float_sub(softmax, one_hot::<B>(targets, vocab)), scale)
}

/// The checks' input: 37 rows of 300 logits (neither a multiple of the workgroup), targets
/// spread over the columns, weights with zeros among them.
fn check_input() -> (TensorData, TensorData, TensorData) {
    let (rows, vocab) = (37, 300);
    let logits: Vec<f32> = (0..rows * vocab)
        .map(|i| ((i * 7919) % 1013) as f32 / 100.0 - 5.0)
        .collect();
    let targets = (0..rows).map(|r| ((r * 97) % vocab) as f32).collect();
    let weights = (0..rows).map(|r| (r % 3) as f32 / 2.0).collect();
    (
        TensorData::new(logits, [rows, vocab]),
        TensorData::new(targets, [rows]),
        TensorData::new(weights, [rows]),
    )
}

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]); elsewhere, and in a browser, nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let (logits, targets, weights) = check_input();
        let run = |device: &Device| {
            Tensor::<1>::from_dispatch(<Dispatch as CrossEntropyBackend>::cross_entropy_rows(
                Tensor::<2>::from_data(logits.clone(), device).into_dispatch(),
                Tensor::<1>::from_data(targets.clone(), device).into_dispatch(),
                Tensor::<1>::from_data(weights.clone(), device).into_dispatch(),
            ))
        };
        agrees("output", &read(run(device))?, &read(run(&Device::flex()))?)
    });
}

/// On wgpu, check the WGSL backward kernel against [`backward_from_ops`] on the CPU once per
/// device, as [`check_kernel`] does for the forward.
fn check_backward_kernel(device: &Device) {
    check_on(wgpu::BACKWARD, device, |device| {
        let (logits, targets, weights) = check_input();
        let rows = weights.num_elements();
        let grad: Vec<f32> = (0..rows).map(|r| 1.0 - r as f32 / 20.0).collect();
        let grad = TensorData::new(grad, [rows]);
        let run = |device: &Device| {
            Tensor::<2>::from_dispatch(
                <Dispatch as CrossEntropyBackend>::cross_entropy_rows_backward(
                    Tensor::<2>::from_data(logits.clone(), device).into_dispatch(),
                    Tensor::<1>::from_data(targets.clone(), device).into_dispatch(),
                    Tensor::<1>::from_data(weights.clone(), device).into_dispatch(),
                    Tensor::<1>::from_data(grad.clone(), device).into_dispatch(),
                ),
            )
        };
        agrees(
            "gradient",
            &read(run(device))?,
            &read(run(&Device::flex()))?,
        )
    });
}

impl CrossEntropyBackend for Flex {}

/// The GPU runtimes: on wgpu the WGSL kernels where they serve, Burn's operations elsewhere.
impl CrossEntropyBackend for CubeBackend {
    fn cross_entropy_rows(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if wgpu::serves(wgpu::NAME, &logits) {
            wgpu::cross_entropy_rows(logits, targets, weights)
        } else {
            reference::<Self>(logits, targets, weights)
        }
    }

    fn cross_entropy_rows_backward(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if wgpu::serves(wgpu::BACKWARD, &logits) {
            wgpu::cross_entropy_rows_backward(logits, targets, weights, grad)
        } else {
            backward_from_ops::<Self>(logits, targets, weights, grad)
        }
    }
}

#[cfg(feature = "train")]
impl<B: Backend + CrossEntropyBackend, C: CheckpointStrategy> CrossEntropyBackend
    for Autodiff<B, C>
{
    fn cross_entropy_rows(
        logits: FloatTensor<Self>,
        targets: FloatTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct CrossEntropyBackward;

        impl<B: Backend + CrossEntropyBackend> Backward<B, 1> for CrossEntropyBackward {
            /// The logits, the targets and the weights.
            type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [logits_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (logits, targets, weights) = ops.state;
                if let Some(node) = logits_node {
                    let dlogits = B::cross_entropy_rows_backward(logits, targets, weights, grad);
                    grads.register::<B>(node.id, dlogits);
                }
            }
        }

        // The targets and weights are data: no gradient reaches them.
        let (targets, weights) = (targets.into_primitive(), weights.into_primitive());
        match CrossEntropyBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let logits = logits.primitive().clone();
                let out = B::cross_entropy_rows(logits.clone(), targets.clone(), weights.clone());
                prep.finish((logits, targets, weights), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::cross_entropy_rows(
                logits.into_primitive(),
                targets,
                weights,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::activation::log_softmax;

    /// The operation equals the log-softmax and gather it replaces, and its gradient equals
    /// autodiff's through them, on the CPU.
    #[test]
    fn matches_log_softmax_and_gather_and_their_gradient() {
        let device = Device::flex().autodiff();
        let (logits, targets, weights) = check_input();
        let ids: Vec<i64> = targets.iter::<f32>().map(|t| t as i64).collect();
        let rows = ids.len();
        let run = |ours: bool| {
            let l = Tensor::<2>::from_data(logits.clone(), &device).require_grad();
            let t = Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [rows]), &device);
            let w = Tensor::<1>::from_data(weights.clone(), &device);
            let nll = match ours {
                true => cross_entropy_rows(l.clone(), t, w),
                false => {
                    let picked = log_softmax(l.clone(), 1)
                        .gather(1, t.unsqueeze_dim::<2>(1))
                        .squeeze_dim::<1>(1);
                    -(picked * w)
                }
            };
            // A different weight per row, so each row's gradient is scaled differently.
            let scale = Tensor::<1>::from_data(
                TensorData::new((0..rows).map(|r| 1.0 + r as f32).collect(), [rows]),
                &device,
            );
            let loss = (nll.clone() * scale).sum();
            let grads = loss.backward();
            let g = l.grad(&grads).unwrap();
            (
                crate::ops::cpu::tests::values(nll.inner()),
                crate::ops::cpu::tests::values(g),
            )
        };
        let (ours, ours_grad) = run(true);
        let (want, want_grad) = run(false);
        let diff = crate::ops::cpu::tests::max_diff(&ours, &want);
        assert!(diff < 1e-5, "output differs by {diff}");
        let diff = crate::ops::cpu::tests::max_diff(&ours_grad, &want_grad);
        assert!(diff < 1e-5, "gradient differs by {diff}");
        // Zero-weight rows give nothing and get no gradient.
        assert_eq!(ours[0], 0.0);
    }
}
