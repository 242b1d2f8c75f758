//! `acc + Σ x²` over several tensors as one operation: the global gradient norm that clipping
//! needs, one kernel per five parameters on wgpu.
//!
//! Clipping by the global norm ([`crate::train::clip`]) sums the squares of every gradient.
//! From Burn's operations each parameter cost a square, a reduction (two for larger tensors)
//! and an addition to the running total: about 105 kernels of a default RMT training step's
//! 561 on wgpu. [`SumSquares`] gathers the gradients and hands them to the backend [`GROUP`] at
//! a time with the running total, so every five parameters are one dispatch of
//! `shaders/sum_squares.wgsl` ([`wgpu`]): five inputs, the total, the result and the sizes are
//! the eight storage buffers a WebGPU adapter must allow a shader. The CPU and other GPU
//! runtimes take the reference (the same sums from Burn's operations, tensor after tensor). No
//! gradient flows through it (it reads gradients).

mod wgpu;

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::prelude::*;

use crate::ops::wgsl::{agrees, check_on, read};

/// Tensors summed per operation.
pub const GROUP: usize = 5;

/// `acc + Σ x²` over five tensors as a backend operation.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait SumSquaresBackend: Backend {
    /// The running total `acc` (`[1]`) plus the sum of the squares of every element of
    /// `x0`..`x4` (any shapes).
    #[fusion(meta = total_spec)]
    fn sum_squares_add(
        acc: FloatTensor<Self>,
        x0: FloatTensor<Self>,
        x1: FloatTensor<Self>,
        x2: FloatTensor<Self>,
        x3: FloatTensor<Self>,
        x4: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        reference::<Self>(acc, [x0, x1, x2, x3, x4])
    }
}

/// The result's shape and type, for the fusion stream: the running total's.
fn total_spec(
    acc: &TensorSpec,
    _x0: &TensorSpec,
    _x1: &TensorSpec,
    _x2: &TensorSpec,
    _x3: &TensorSpec,
    _x4: &TensorSpec,
) -> TensorSpec {
    acc.clone()
}

/// `acc + Σ x²` from the backend's tensor operations, one tensor after another.
fn reference<B: Backend>(mut acc: FloatTensor<B>, xs: [FloatTensor<B>; GROUP]) -> FloatTensor<B> {
    for x in xs {
        let squares = B::float_mul(x.clone(), x);
        acc = B::float_add(acc, B::float_sum(squares));
    }
    acc
}

/// A running sum of the squares of every element of the tensors added to it, computed
/// [`GROUP`] tensors at a time.
#[derive(Default)]
pub struct SumSquares {
    total: Option<Tensor<1>>,
    pending: Vec<FloatTensor<Dispatch>>,
    device: Option<Device>,
}

impl SumSquares {
    /// An empty sum.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add the squares of `x`'s elements (any shape) to the sum.
    pub fn add<const D: usize>(&mut self, x: Tensor<D>) {
        let device = self.device.get_or_insert_with(|| x.device()).clone();
        self.pending.push(x.into_dispatch());
        if self.pending.len() == GROUP {
            self.flush(&device);
        }
    }

    /// The sum (`[1]`), or `None` when nothing was added.
    pub fn total(mut self) -> Option<Tensor<1>> {
        if let Some(device) = self.device.clone()
            && !self.pending.is_empty()
        {
            self.flush(&device);
        }
        self.total
    }

    /// One operation for the pending tensors, the missing ones `[0.0]` (an upload, no kernel).
    fn flush(&mut self, device: &Device) {
        check_kernel(device);
        let zero = || Tensor::<1>::from_data(TensorData::new(vec![0.0f32], [1]), device);
        let acc = self.total.take().unwrap_or_else(zero);
        let mut xs = std::mem::take(&mut self.pending).into_iter();
        let mut next = || xs.next().unwrap_or_else(|| zero().into_dispatch());
        let [x0, x1, x2, x3, x4] = std::array::from_fn(|_| next());
        self.total = Some(Tensor::from_dispatch(
            <Dispatch as SumSquaresBackend>::sum_squares_add(
                acc.into_dispatch(),
                x0,
                x1,
                x2,
                x3,
                x4,
            ),
        ));
    }
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
            // Five inputs of different sizes, one of them the whole 1000.
            let x = |from: usize, n: usize| {
                Tensor::<1>::from_data(TensorData::new(xs[from..from + n].to_vec(), [n]), device)
                    .into_dispatch()
            };
            let whole = Tensor::<2>::from_data(TensorData::new(xs.clone(), [40, 25]), device);
            Tensor::<1>::from_dispatch(<Dispatch as SumSquaresBackend>::sum_squares_add(
                acc.into_dispatch(),
                x(0, 1),
                whole.into_dispatch(),
                x(3, 64),
                x(100, 700),
                x(999, 1),
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
    fn sum_squares_add(
        acc: FloatTensor<Self>,
        x0: FloatTensor<Self>,
        x1: FloatTensor<Self>,
        x2: FloatTensor<Self>,
        x3: FloatTensor<Self>,
        x4: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let xs = [x0, x1, x2, x3, x4];
        if wgpu::serves(&xs, &acc) {
            wgpu::sum_squares_add(acc, xs)
        } else {
            reference::<Self>(acc, xs)
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
        let mut sum = SumSquares::new();
        sum.total = Some(acc);
        sum.add(x);
        let total = sum.total().unwrap().into_scalar::<f32>();
        assert_eq!(total, 1.5 + 1.0 + 4.0 + 9.0 + 0.25);
    }

    /// Tensors added one by one, more than a group and not a multiple of it, sum to what a
    /// chain of single additions gives, bit for bit on the CPU.
    #[test]
    fn a_sum_over_many_tensors_is_the_chain_of_their_sums() {
        let device = Device::flex();
        let tensors: Vec<Tensor<1>> = (1..=12)
            .map(|n| {
                let v: Vec<f32> = (0..n).map(|i| (i as f32 - 3.5) / n as f32).collect();
                Tensor::from_data(TensorData::new(v, [n]), &device)
            })
            .collect();
        let mut sum = SumSquares::new();
        let mut chain = Tensor::<1>::zeros([1], &device);
        for t in &tensors {
            sum.add(t.clone());
            chain = chain + t.clone().powi_scalar(2).sum();
        }
        assert_eq!(
            sum.total().unwrap().into_scalar::<f32>(),
            chain.into_scalar::<f32>()
        );
        assert!(SumSquares::new().total().is_none());
    }
}
