//! Rows scaled to unit root-mean-square over the last axis, `x / sqrt(mean(x²) + ε)`, as one
//! autodiff operation: one WGSL kernel forward and one backward on wgpu.
//!
//! ARMT scales each layer's memory rows so before they write the store
//! ([`crate::nn::associative`]). From Burn's operations that is a square, a mean, a square
//! root and a division forward and some six kernels backward per write on wgpu;
//! [`unit_rms_rows`] records one operation: one dispatch of `shaders/unit_rms.wgsl` forward
//! (one workgroup per row) and one of `shaders/unit_rms_backward.wgsl` backward,
//! `dx = (g - y mean(g y)) / r` ([`wgpu`]). The memory rows are a range of the layer's rows,
//! which the kernels read in place: no copy of the slice forward, and the gradient written
//! over all the layer's rows (zeros outside the range) in the same dispatch, where a slice's
//! gradient is a tensor of zeros and a second kernel that writes the slice into it.
//! Elsewhere it runs as Burn's operations ([`forward_from_ops`], [`backward_from_ops`]),
//! which are also the kernels' reference; the CPU's ARMT keeps its own operations.

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
use burn::tensor::Slice;

use crate::ops::wgsl::{agrees, check_on, on_wgpu, read};

/// Unit root-mean-square rows as a backend operation, so autodiff records one node.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait UnitRmsBackend: Backend {
    /// Rows `start..start + count` of each sequence of `x` `[batch, n, d]`, each divided by
    /// `sqrt(mean(x²) + epsilon)` over the last axis: `[batch, count, d]`.
    #[fusion(dtype = x, shape = range_shape(x, count))]
    fn unit_rms(
        x: FloatTensor<Self>,
        start: usize,
        count: usize,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        forward_from_ops::<Self>(x, start, count, epsilon)
    }

    /// The gradient of `x` `[batch, n, d]` from the output gradient `grad` `[batch, count, d]`
    /// of its rows `start..start + count`: zeros on the other rows.
    #[fusion(dtype = x, shape = x)]
    fn unit_rms_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        start: usize,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        backward_from_ops::<Self>(x, grad, start, epsilon)
    }
}

/// `[batch, count, d]` from `x` `[batch, n, d]`, for the fusion stream.
fn range_shape(x: &Shape, count: &usize) -> Shape {
    Shape::new([x[0], *count, x[2]])
}

/// Whether [`unit_rms_rows`] serves `x`: on wgpu (where its kernels are; the CPU keeps Burn's
/// operations, whose numbers its models were trained with).
pub(crate) fn serves<const D: usize>(x: &Tensor<D>) -> bool {
    on_wgpu(&x.device())
}

/// Rows `start..start + count` of each sequence of `x`, scaled to unit root-mean-square along
/// the last axis.
///
/// # Shapes
/// - x: `[batch, n, d]`
/// - output: `[batch, count, d]`
///
/// # Panics
/// When the rows are not all within `x`.
pub fn unit_rms_rows(x: Tensor<3>, start: usize, count: usize, epsilon: f64) -> Tensor<3> {
    let n = x.dims()[1];
    assert!(start + count <= n, "rows {start}..{} of {n}", start + count);
    check_kernel(&x.device());
    if x.is_autodiff() {
        check_backward_kernel(&x.device());
    }
    Tensor::from_dispatch(<Dispatch as UnitRmsBackend>::unit_rms(
        x.into_dispatch(),
        start,
        count,
        epsilon,
    ))
}

/// `x` scaled to unit root-mean-square along its last axis ([`unit_rms_rows`] over all rows).
///
/// # Shapes
/// - x and output: `[..., d]`
pub fn unit_rms<const D: usize>(x: Tensor<D>, epsilon: f64) -> Tensor<D> {
    let dims = x.dims();
    let d = dims[D - 1];
    let rows = dims.iter().product::<usize>() / d.max(1);
    unit_rms_rows(x.reshape([1, rows, d]), 0, rows, epsilon).reshape(dims)
}

/// Rows `start..start + count` of each sequence of `x` `[batch, n, d]`.
fn range<B: Backend>(x: FloatTensor<B>, start: usize, count: usize) -> FloatTensor<B> {
    let rows = Slice::new(start as isize, Some((start + count) as isize), 1);
    B::float_slice(x, &[Slice::full(), rows, Slice::full()])
}

/// The root-mean-square of each row of `x`, `[..., 1]`.
fn rms<B: Backend>(x: FloatTensor<B>, epsilon: f64) -> FloatTensor<B> {
    let last = x.shape().num_dims() - 1;
    let mean = B::float_mean_dim(B::float_mul(x.clone(), x), last);
    B::float_sqrt(B::float_add_scalar(mean, epsilon.into()))
}

/// [`UnitRmsBackend::unit_rms`] from the backend's tensor operations.
fn forward_from_ops<B: Backend>(
    x: FloatTensor<B>,
    start: usize,
    count: usize,
    epsilon: f64,
) -> FloatTensor<B> {
    let x = range::<B>(x, start, count);
    let r = rms::<B>(x.clone(), epsilon);
    B::float_div(x, r)
}

/// [`UnitRmsBackend::unit_rms_backward`] from the backend's tensor operations: with `y = x / r`
/// and `g` the output gradient, `dx = (g - y mean(g y)) / r` on the rows read, zeros on the
/// others.
fn backward_from_ops<B: Backend>(
    x: FloatTensor<B>,
    grad: FloatTensor<B>,
    start: usize,
    epsilon: f64,
) -> FloatTensor<B> {
    let shape = x.shape();
    let (n, count) = (shape[1], grad.shape()[1]);
    let (device, dtype) = (x.device(), x.dtype());
    let x = range::<B>(x, start, count);
    let last = x.shape().num_dims() - 1;
    let r = rms::<B>(x.clone(), epsilon);
    let y = B::float_div(x, r.clone());
    let mean_gy = B::float_mean_dim(B::float_mul(grad.clone(), y.clone()), last);
    let dx = B::float_div(B::float_sub(grad, B::float_mul(y, mean_gy)), r);
    let zeros = |rows: usize| {
        B::float_zeros(
            Shape::new([shape[0], rows, shape[2]]),
            &device,
            dtype.into(),
        )
    };
    let mut parts = Vec::with_capacity(3);
    if start > 0 {
        parts.push(zeros(start));
    }
    parts.push(dx);
    if start + count < n {
        parts.push(zeros(n - start - count));
    }
    match parts.len() {
        1 => parts.pop().expect("one part"),
        _ => B::float_cat(parts, 1),
    }
}

/// The checks' input: rows 4..34 of 2 sequences of 40 rows of 100 (not multiples of the
/// workgroup), of different spreads, one of them all zeros; and the output gradient.
fn check_input() -> [TensorData; 2] {
    let (batch, n, count, d) = (2, 40, CHECK_ROWS.1, 100);
    let x: Vec<f32> = (0..batch * n * d)
        .map(|i| match i / d {
            7 => 0.0,
            row => ((i * 7919) % 1013) as f32 / 300.0 * (1.0 + row as f32 % 4.0) - 1.5,
        })
        .collect();
    let grad = (0..batch * count * d)
        .map(|i| ((i * 104_729) % 997) as f32 / 500.0 - 1.0)
        .collect();
    [
        TensorData::new(x, [batch, n, d]),
        TensorData::new(grad, [batch, count, d]),
    ]
}

/// The rows the checks read: start and count.
const CHECK_ROWS: (usize, usize) = (4, 30);

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]); elsewhere, and in a browser, nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let [x, _] = check_input();
        let (start, count) = CHECK_ROWS;
        let run = |device: &Device| {
            Tensor::<3>::from_dispatch(<Dispatch as UnitRmsBackend>::unit_rms(
                Tensor::<3>::from_data(x.clone(), device).into_dispatch(),
                start,
                count,
                1e-6,
            ))
        };
        agrees("rows", &read(run(device))?, &read(run(&Device::flex()))?)
    });
}

/// On wgpu, check the WGSL backward kernel against [`backward_from_ops`] on the CPU once per
/// device, as [`check_kernel`] does for the forward.
fn check_backward_kernel(device: &Device) {
    check_on(wgpu::BACKWARD, device, |device| {
        let [x, grad] = check_input();
        let run = |device: &Device| {
            Tensor::<3>::from_dispatch(<Dispatch as UnitRmsBackend>::unit_rms_backward(
                Tensor::<3>::from_data(x.clone(), device).into_dispatch(),
                Tensor::<3>::from_data(grad.clone(), device).into_dispatch(),
                CHECK_ROWS.0,
                1e-6,
            ))
        };
        agrees(
            "input gradient",
            &read(run(device))?,
            &read(run(&Device::flex()))?,
        )
    });
}

impl UnitRmsBackend for Flex {}

/// The GPU runtimes: on wgpu the WGSL kernels where they serve, Burn's operations elsewhere.
impl UnitRmsBackend for CubeBackend {
    fn unit_rms(
        x: FloatTensor<Self>,
        start: usize,
        count: usize,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        if wgpu::serves(wgpu::NAME, &x) {
            wgpu::unit_rms(x, start, count, epsilon)
        } else {
            forward_from_ops::<Self>(x, start, count, epsilon)
        }
    }

    fn unit_rms_backward(
        x: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        start: usize,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        if wgpu::serves(wgpu::BACKWARD, &x) {
            wgpu::unit_rms_backward(x, grad, start, epsilon)
        } else {
            backward_from_ops::<Self>(x, grad, start, epsilon)
        }
    }
}

/// Autodiff: one node whose backward is [`UnitRmsBackend::unit_rms_backward`].
#[cfg(feature = "train")]
impl<B: Backend + UnitRmsBackend, C: CheckpointStrategy> UnitRmsBackend for Autodiff<B, C> {
    fn unit_rms(
        x: FloatTensor<Self>,
        start: usize,
        count: usize,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct UnitRmsBackward;

        impl<B: Backend + UnitRmsBackend> Backward<B, 1> for UnitRmsBackward {
            /// The input, the first row read and epsilon.
            type State = (FloatTensor<B>, usize, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [x_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x, start, epsilon) = ops.state;
                if let Some(node) = x_node {
                    let dx = B::unit_rms_backward(x, grad, start, epsilon);
                    grads.register::<B>(node.id, dx);
                }
            }
        }

        match UnitRmsBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.primitive().clone();
                let y = B::unit_rms(x.clone(), start, count, epsilon);
                prep.finish((x, start, epsilon), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::unit_rms(x.into_primitive(), start, count, epsilon))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operation's forward and its written-out backward (the kernels' reference) against
    /// Burn's autodiff of the module's formula on the CPU: rows of several widths and spreads,
    /// one of them zeros, read through a strided view.
    #[cfg(feature = "train")]
    #[test]
    fn the_written_out_backward_is_the_autodiff_gradient() {
        let device = Device::flex().autodiff();
        for (rows, d) in [(1, 3), (3, 5), (7, 64), (4, 130)] {
            let x: Vec<f32> = (0..rows * d)
                .map(|i| match i / d {
                    1 => 0.0,
                    row => ((i * 7919) % 1013) as f32 / 300.0 * (1.0 + row as f32) - 1.5,
                })
                .collect();
            let w: Vec<f32> = (0..rows * d)
                .map(|i| ((i * 104_729) % 997) as f32 / 500.0 - 1.0)
                .collect();
            let weights = Tensor::<2>::from_data(TensorData::new(w, [rows, d]), &device);
            let grads_of = |f: &dyn Fn(Tensor<2>) -> Tensor<2>| {
                let transposed = (0..rows * d)
                    .map(|i| x[(i % rows) * d + i / rows])
                    .collect();
                let leaf = Tensor::<2>::from_data(TensorData::new(transposed, [d, rows]), &device)
                    .require_grad();
                // The rows as a transposed view, as a slice of a layer's rows can be.
                let y = f(leaf.clone().swap_dims(0, 1));
                let out = read(y.clone().inner()).unwrap();
                let grads = (y * weights.clone()).sum().backward();
                let grad = leaf.grad(&grads).unwrap().swap_dims(0, 1);
                (out, read(grad).unwrap())
            };
            let ours = grads_of(&|x| unit_rms(x, 1e-6));
            let theirs = grads_of(&|x| x.clone() / (x.powi_scalar(2).mean_dim(1) + 1e-6).sqrt());
            let what = format!("[{rows}, {d}]");
            crate::ops::assert_close(&format!("{what}: rows"), &ours.0, &theirs.0);
            crate::ops::assert_close(&format!("{what}: gradient"), &ours.1, &theirs.1);
            assert!(ours.1.iter().any(|g| g.abs() > 1e-3), "{what}: no gradient");
        }
    }

    /// Rows of a range, read in place: the forward is the formula on the slice, and the
    /// gradient the slice's gradient on those rows and zeros on the others (ranges at the
    /// start, in the middle, at the end, and all rows), against Burn's autodiff on the CPU.
    #[cfg(feature = "train")]
    #[test]
    fn a_range_of_rows_has_the_slices_numbers_and_gradient() {
        let device = Device::flex().autodiff();
        for (batch, n, start, count, d) in [
            (2, 9, 0, 4, 64),
            (1, 6, 2, 3, 5),
            (3, 7, 5, 2, 130),
            (2, 4, 0, 4, 8),
        ] {
            let x: Vec<f32> = (0..batch * n * d)
                .map(|i| ((i * 7919) % 1013) as f32 / 300.0 - 1.5)
                .collect();
            let w: Vec<f32> = (0..batch * count * d)
                .map(|i| ((i * 104_729) % 997) as f32 / 500.0 - 1.0)
                .collect();
            let weights = Tensor::<3>::from_data(TensorData::new(w, [batch, count, d]), &device);
            let grads_of = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
                let leaf =
                    Tensor::<3>::from_data(TensorData::new(x.clone(), [batch, n, d]), &device)
                        .require_grad();
                let y = f(leaf.clone());
                let out = read(y.clone().inner()).unwrap();
                let grads = (y * weights.clone()).sum().backward();
                (out, read(leaf.grad(&grads).unwrap()).unwrap())
            };
            let ours = grads_of(&|x| unit_rms_rows(x, start, count, 1e-6));
            let theirs = grads_of(&|x| {
                let x = x.slice(s![.., start..start + count, ..]);
                x.clone() / (x.powi_scalar(2).mean_dim(2) + 1e-6).sqrt()
            });
            let what = format!("rows {start}..{} of [{batch}, {n}, {d}]", start + count);
            crate::ops::assert_close(&format!("{what}: rows"), &ours.0, &theirs.0);
            crate::ops::assert_close(&format!("{what}: gradient"), &ours.1, &theirs.1);
            assert!(ours.1.iter().any(|g| g.abs() > 1e-3), "{what}: no gradient");
        }
    }
}
