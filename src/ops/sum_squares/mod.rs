//! `acc + Σ x²` as one operation: the global gradient norm that clipping needs, one kernel per
//! parameter on wgpu.
//!
//! Clipping by the global norm ([`crate::train::clip`]) sums the squares of every gradient.
//! From Burn's operations each parameter cost a square, a reduction (two for larger tensors)
//! and an addition to the running total: about 105 kernels of a default RMT training step's
//! 561 on wgpu. [`sum_squares_add`] takes the running total with the gradient, so each
//! parameter is one dispatch of `shaders/sum_squares.wgsl` ([`wgpu`]). The CPU and other GPU
//! runtimes take the reference (the same sum from Burn's operations). No gradient flows
//! through it (it reads gradients).

mod wgpu;

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::prelude::*;

use crate::ops::wgsl::{agrees, check_on, read};

/// `acc + Σ x²` as a backend operation.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait SumSquaresBackend: Backend {
    /// The running total `acc` (`[1]`) plus the sum of the squares of every element of `x`.
    #[fusion(meta = total_spec)]
    fn sum_squares_add(acc: FloatTensor<Self>, x: FloatTensor<Self>) -> FloatTensor<Self> {
        reference::<Self>(acc, x)
    }
}

/// The result's shape and type, for the fusion stream: the running total's.
fn total_spec(acc: &TensorSpec, _x: &TensorSpec) -> TensorSpec {
    acc.clone()
}

/// `acc + Σ x²` from the backend's tensor operations.
fn reference<B: Backend>(acc: FloatTensor<B>, x: FloatTensor<B>) -> FloatTensor<B> {
    let squares = B::float_mul(x.clone(), x);
    B::float_add(acc, B::float_sum(squares))
}

/// `acc + Σ x²` over every element of `x`.
///
/// # Shapes
/// - acc: `[1]`
/// - x: any
/// - output: `[1]`
pub fn sum_squares_add<const D: usize>(acc: Tensor<1>, x: Tensor<D>) -> Tensor<1> {
    assert_eq!(
        acc.dims(),
        [1],
        "sum_squares_add: the running total must be [1]"
    );
    check_kernel(&x.device());
    Tensor::from_dispatch(<Dispatch as SumSquaresBackend>::sum_squares_add(
        acc.into_dispatch(),
        x.into_dispatch(),
    ))
}

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]); elsewhere, and in a browser, nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        // More elements than the workgroup, not a multiple of it, of both signs.
        let n = 1000;
        let xs: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1013) as f32 / 500.0 - 1.0)
            .collect();
        let run = |device: &Device| {
            let acc = Tensor::<1>::from_data(TensorData::new(vec![0.75f32], [1]), device);
            let x = Tensor::<2>::from_data(TensorData::new(xs.clone(), [40, 25]), device);
            Tensor::<1>::from_dispatch(<Dispatch as SumSquaresBackend>::sum_squares_add(
                acc.into_dispatch(),
                x.into_dispatch(),
            ))
        };
        let (got, want) = (read(run(device))?, read(run(&Device::flex()))?);
        // A sum of 1000 squares near 1: compare relative to its size.
        let scale = want.first().copied().unwrap_or(1.0).abs().max(1.0);
        agrees(
            "sum",
            &got.iter().map(|v| v / scale).collect::<Vec<_>>(),
            &want.iter().map(|v| v / scale).collect::<Vec<_>>(),
        )
    });
}

impl SumSquaresBackend for Flex {}

/// The GPU runtimes: on wgpu the WGSL kernel where it serves, Burn's operations elsewhere.
impl SumSquaresBackend for CubeBackend {
    fn sum_squares_add(acc: FloatTensor<Self>, x: FloatTensor<Self>) -> FloatTensor<Self> {
        if wgpu::serves(&x, &acc) {
            wgpu::sum_squares_add(acc, x)
        } else {
            reference::<Self>(acc, x)
        }
    }
}

#[cfg(feature = "train")]
impl<
    B: Backend + SumSquaresBackend,
    C: burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy,
> SumSquaresBackend for burn::backend::Autodiff<B, C>
{
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The running total plus the squares, on cases worked by hand.
    #[test]
    fn adds_the_squares_to_the_running_total() {
        let device = Device::flex();
        let acc = Tensor::<1>::from_data(TensorData::new(vec![1.5f32], [1]), &device);
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![1.0f32, -2.0, 3.0, 0.5], [2, 2]),
            &device,
        );
        let total = sum_squares_add(acc, x).into_scalar::<f32>();
        assert_eq!(total, 1.5 + 1.0 + 4.0 + 9.0 + 0.25);
    }
}
