//! The weighted cross-entropy of many rows, and how many of them the arg-max gets right, as one
//! autodiff operation: one WGSL kernel forward (and Burn's sum over the rows) and one backward
//! on wgpu.
//!
//! Training's loss scores every position: `w_n (logsumexp(l_n) - l_n[t_n])` for logits `l_n`,
//! target `t_n` and weight `w_n`, and its progress counts `w_n [argmax(l_n) == t_n]`. From
//! Burn's operations the log-softmax, the gather, the arg-max, the comparison and their
//! gradients (a zero-filled tensor and a scatter among them) took about thirty kernels of a
//! training step on wgpu. [`cross_entropy_totals`] records one operation with both totals: on
//! wgpu one workgroup per row computes the row's maximum, the log of its sum of exponentials,
//! its arg-max, the weighted negative log-likelihood and the weighted hit
//! (`shaders/cross_entropy.wgsl`), Burn sums the rows, and the backward recomputes each row and
//! writes `g w_n (softmax(l_n) - onehot(t_n))` (`shaders/cross_entropy_backward.wgsl`), one
//! dispatch each ([`wgpu`]). The CPU and other GPU runtimes take the reference written with
//! Burn's operations (one-hot rows and the arg-max built by arithmetic, so it needs no integer
//! or boolean operations; the targets become `f32` there, exact for ids below 2^24).

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
    Backend, Dispatch, Flex, TensorMetadata, backend_extension,
    tensor::{FloatTensor, IntTensor},
};
use burn::prelude::*;
use burn::tensor::Slice;

use crate::ops::wgsl::{agrees, check_on, read};

/// The rows' weighted cross-entropy and hits as a backend operation, so autodiff records one
/// node.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait CrossEntropyBackend: Backend {
    /// `[Σ_n w_n (logsumexp(l_n) - l_n[t_n]), Σ_n w_n [argmax(l_n) == t_n]]` over the rows `n`
    /// of `logits` (`[rows, vocab]`), with `targets` (`[rows]`) and `weights`
    /// (`[rows]`): `[2]`. The arg-max is the first column holding the row's maximum.
    #[fusion(dtype = logits, shape = totals_shape(logits))]
    fn cross_entropy_totals(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference::<Self>(logits, targets, weights)
    }

    /// The logits' gradient `g w_n (softmax(l_n) - onehot(t_n))` from the totals' gradient
    /// `grad` (`[2]`, `g` its first entry: the count of hits has no gradient).
    #[fusion(dtype = logits, shape = logits)]
    fn cross_entropy_totals_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        backward_from_ops::<Self>(logits, targets, weights, grad)
    }
}

/// The totals' shape `[2]`, for the fusion stream.
fn totals_shape(_logits: &Shape) -> Shape {
    Shape::new([2])
}

/// The rows' total weighted cross-entropy and their weighted count of arg-max hits:
/// `[Σ_n weights[n] (logsumexp(logits[n]) - logits[n, targets[n]]),
///   Σ_n weights[n] [argmax(logits[n]) == targets[n]]]`.
///
/// Differentiable in the first entry; the count has no gradient. The arg-max is the first
/// column holding the row's maximum.
///
/// # Shapes
/// - logits: `[rows, vocab]`
/// - targets, weights: `[rows]`
/// - output: `[2]`
pub fn cross_entropy_totals(
    logits: Tensor<2>,
    targets: Tensor<1, Int>,
    weights: Tensor<1>,
) -> Tensor<1> {
    let [rows, _] = logits.dims();
    assert_eq!(
        targets.dims(),
        [rows],
        "cross_entropy_totals: one target per row"
    );
    assert_eq!(
        weights.dims(),
        [rows],
        "cross_entropy_totals: one weight per row"
    );
    check_kernel(&logits.device());
    if logits.is_autodiff() {
        check_backward_kernel(&logits.device());
    }
    Tensor::from_dispatch(<Dispatch as CrossEntropyBackend>::cross_entropy_totals(
        logits.into_dispatch(),
        targets.into_dispatch(),
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

/// Each row's `[w_n nll_n, w_n hit_n]`, `[rows, 2]`, from the backend's tensor operations.
fn reference_rows<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    weights: FloatTensor<B>,
) -> FloatTensor<B> {
    let targets = B::int_into_float(targets, logits.dtype().into());
    let shape = logits.shape();
    let (rows, vocab) = (shape[0], shape[1]);
    let picked = B::float_sum_dim(
        B::float_mul(logits.clone(), one_hot::<B>(targets.clone(), vocab)),
        1,
    );
    let nll = B::float_sub(logsumexp::<B>(logits.clone()), picked);
    // The first column holding the maximum: at the maxima `1 - sign(max - l)` is 1, else 0;
    // the smallest of `column + vocab (1 - that)` is the first of them.
    let max = B::float_max_dim(logits.clone(), 1);
    let below = B::float_sign(B::float_sub(max, logits));
    let columns = (0..vocab).map(|i| i as f32).collect();
    let columns = B::float_from_data(TensorData::new(columns, [1, vocab]), &targets.device());
    let first = B::float_min_dim(
        B::float_add(columns, B::float_mul_scalar(below, (vocab as f32).into())),
        1,
    );
    // 1 where the arg-max is the target (whole numbers), else 0.
    let targets = B::float_reshape(targets, Shape::new([rows, 1]));
    let miss = B::float_clamp_max(B::float_abs(B::float_sub(first, targets)), 1.0.into());
    let hit = B::float_add_scalar(B::float_neg(miss), 1.0.into());
    let weights = B::float_reshape(weights, Shape::new([rows, 1]));
    B::float_mul(B::float_cat(vec![nll, hit], 1), weights)
}

/// [`CrossEntropyBackend::cross_entropy_totals`] from the backend's tensor operations.
fn reference<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    weights: FloatTensor<B>,
) -> FloatTensor<B> {
    totals::<B>(reference_rows::<B>(logits, targets, weights))
}

/// The sum over rows of `[rows, 2]`: `[2]`.
fn totals<B: Backend>(rows: FloatTensor<B>) -> FloatTensor<B> {
    B::float_reshape(B::float_sum_dim(rows, 0), Shape::new([2]))
}

/// [`CrossEntropyBackend::cross_entropy_totals_backward`] from the backend's tensor operations.
fn backward_from_ops<B: Backend>(
    logits: FloatTensor<B>,
    targets: IntTensor<B>,
    weights: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let targets = B::int_into_float(targets, logits.dtype().into());
    let shape = logits.shape();
    let (rows, vocab) = (shape[0], shape[1]);
    let lse = logsumexp::<B>(logits.clone());
    let softmax = B::float_exp(B::float_sub(logits, lse));
    let g = B::float_slice(grad, &[Slice::new(0, Some(1), 1)]);
    let g = B::float_reshape(g, Shape::new([1, 1]));
    let scale = B::float_mul(B::float_reshape(weights, Shape::new([rows, 1])), g);
    B::float_mul(B::float_sub(softmax, one_hot::<B>(targets, vocab)), scale)
}

/// The checks' input: 37 rows of 300 logits (neither a multiple of the workgroup), targets
/// spread over the columns, weights with zeros among them; in every fourth row the maximum
/// is tied between the target and the column before (a miss), in the next one between the
/// target and the column after (a hit), and in every ninth row the target is the only
/// maximum.
fn check_input() -> (TensorData, TensorData, TensorData) {
    let (rows, vocab) = (37, 300);
    let mut logits: Vec<f32> = (0..rows * vocab)
        .map(|i| ((i * 7919) % 1013) as f32 / 100.0 - 5.0)
        .collect();
    let targets: Vec<f32> = (0..rows)
        .map(|r| (1 + (r * 97) % (vocab - 1)) as f32)
        .collect();
    for (r, &target) in targets.iter().enumerate() {
        let row = &mut logits[r * vocab..(r + 1) * vocab];
        if r % 4 == 0 {
            row[target as usize] = 6.0;
            row[target as usize - 1] = 6.0;
        }
        if r % 4 == 1 && (target as usize) + 1 < vocab {
            row[target as usize] = 6.0;
            row[target as usize + 1] = 6.0;
        }
        if r % 9 == 1 {
            row[target as usize] = 7.0;
        }
    }
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
            Tensor::<1>::from_dispatch(<Dispatch as CrossEntropyBackend>::cross_entropy_totals(
                Tensor::<2>::from_data(logits.clone(), device).into_dispatch(),
                Tensor::<1, Int>::from_data(targets.clone(), device).into_dispatch(),
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
        // The hits' gradient must not count.
        let grad = TensorData::new(vec![0.7f32, 3.0], [2]);
        let run = |device: &Device| {
            Tensor::<2>::from_dispatch(
                <Dispatch as CrossEntropyBackend>::cross_entropy_totals_backward(
                    Tensor::<2>::from_data(logits.clone(), device).into_dispatch(),
                    Tensor::<1, Int>::from_data(targets.clone(), device).into_dispatch(),
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
    fn cross_entropy_totals(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if wgpu::serves(wgpu::NAME, &logits, &targets) {
            totals::<Self>(wgpu::cross_entropy_rows(logits, targets, weights))
        } else {
            reference::<Self>(logits, targets, weights)
        }
    }

    fn cross_entropy_totals_backward(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if wgpu::serves(wgpu::BACKWARD, &logits, &targets) {
            wgpu::cross_entropy_totals_backward(logits, targets, weights, grad)
        } else {
            backward_from_ops::<Self>(logits, targets, weights, grad)
        }
    }
}

#[cfg(feature = "train")]
impl<B: Backend + CrossEntropyBackend, C: CheckpointStrategy> CrossEntropyBackend
    for Autodiff<B, C>
{
    fn cross_entropy_totals(
        logits: FloatTensor<Self>,
        targets: IntTensor<Self>,
        weights: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct CrossEntropyBackward;

        impl<B: Backend + CrossEntropyBackend> Backward<B, 1> for CrossEntropyBackward {
            /// The logits, the targets and the weights.
            type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>);

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
                    let dlogits = B::cross_entropy_totals_backward(logits, targets, weights, grad);
                    grads.register::<B>(node.id, dlogits);
                }
            }
        }

        // The targets and weights are data: no gradient reaches them.
        let weights = weights.into_primitive();
        match CrossEntropyBackward
            .prepare::<C>([logits.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let logits = logits.primitive().clone();
                let out = B::cross_entropy_totals(logits.clone(), targets.clone(), weights.clone());
                prep.finish((logits, targets, weights), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::cross_entropy_totals(
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

    /// The operation's totals equal the log-softmax and gather it replaces and the count of
    /// Burn's arg-max hits (ties included), and its gradient equals autodiff's through the
    /// log-softmax, on the CPU.
    #[test]
    fn matches_log_softmax_gather_and_argmax_and_their_gradient() {
        let device = Device::flex().autodiff();
        let (logits, targets, weights) = check_input();
        let ids: Vec<i64> = targets.iter::<i64>().collect();
        let rows = ids.len();
        let run = |ours: bool| {
            let l = Tensor::<2>::from_data(logits.clone(), &device).require_grad();
            let t = Tensor::<1, Int>::from_data(TensorData::new(ids.clone(), [rows]), &device);
            let w = Tensor::<1>::from_data(weights.clone(), &device);
            let (nll, hits) = match ours {
                true => {
                    let totals = cross_entropy_totals(l.clone(), t, w);
                    (totals.clone().slice(0..1), totals.slice(1..2))
                }
                false => {
                    let picked = log_softmax(l.clone(), 1)
                        .gather(1, t.clone().unsqueeze_dim::<2>(1))
                        .squeeze_dim::<1>(1);
                    let pred = l.clone().argmax(1).squeeze_dim::<1>(1);
                    let hits = (pred.equal(t).float() * w.clone()).sum();
                    (-(picked * w).sum(), hits)
                }
            };
            let grads = (nll.clone() * 3.0).backward();
            let g = l.grad(&grads).unwrap();
            (
                crate::ops::cpu::tests::values(nll.inner())[0],
                crate::ops::cpu::tests::values(hits.inner())[0],
                crate::ops::cpu::tests::values(g),
            )
        };
        let (ours, ours_hits, ours_grad) = run(true);
        let (want, want_hits, want_grad) = run(false);
        assert!((ours - want).abs() < 1e-4, "total {ours}, want {want}");
        assert_eq!(ours_hits, want_hits, "weighted hits");
        assert!(want_hits > 1.0, "the input has hits");
        let diff = crate::ops::cpu::tests::max_diff(&ours_grad, &want_grad);
        assert!(diff < 1e-5, "gradient differs by {diff}");
    }
}
