//! The sum of the squares of every element of several tensors as one operation: the global
//! gradient norm that clipping needs, one kernel per six parameters on wgpu.
//!
//! Clipping by the global norm ([`crate::train::clip`]) sums the squares of every gradient.
//! From Burn's operations each parameter cost a square, a reduction (two for larger tensors)
//! and an addition to the running total: about 105 kernels of a default RMT training step's
//! 561 on wgpu. [`SumSquares`] gathers the gradients and hands them to the backend
//! [`INPUTS`] at a time, the running total taking the last place after the first group, so
//! the first seven parameters and every six after them are one dispatch of
//! `shaders/sum_squares.wgsl` ([`wgpu`]): seven inputs and the result are the eight storage
//! buffers a WebGPU adapter must allow a shader, the inputs' layouts are compiled into it. The
//! CPU and other GPU runtimes take the reference (the same sums from Burn's operations,
//! tensor after tensor). No gradient flows through it (it reads gradients).

mod wgpu;

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{Backend, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::prelude::*;

use crate::ops::wgsl::{agrees, check_on, read};

/// Tensors per operation: seven summed, or six and the running total.
pub const INPUTS: usize = 7;

/// The operations (dispatches on wgpu) that a sum over `tensors` tensors takes: the first
/// seven, then six with the running total.
pub fn operations(tensors: usize) -> usize {
    if tensors == 0 {
        0
    } else {
        1 + tensors.saturating_sub(INPUTS).div_ceil(INPUTS - 1)
    }
}

/// The sum of squares over seven tensors as a backend operation.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait SumSquaresBackend: Backend {
    /// The sum of the squares of every element of `x0`..`x6` (any shapes), `[1]`; when
    /// `carried`, `x6` is a running total (`[1]`) added as it is, after the others.
    #[fusion(meta = total_spec)]
    #[allow(clippy::too_many_arguments)]
    fn sum_squares(
        x0: FloatTensor<Self>,
        x1: FloatTensor<Self>,
        x2: FloatTensor<Self>,
        x3: FloatTensor<Self>,
        x4: FloatTensor<Self>,
        x5: FloatTensor<Self>,
        x6: FloatTensor<Self>,
        carried: bool,
    ) -> FloatTensor<Self> {
        reference::<Self>([x0, x1, x2, x3, x4, x5, x6], carried)
    }
}

/// The result's shape and type, for the fusion stream: `[1]` of the inputs' type.
#[allow(clippy::too_many_arguments)]
fn total_spec(
    x0: &TensorSpec,
    _x1: &TensorSpec,
    _x2: &TensorSpec,
    _x3: &TensorSpec,
    _x4: &TensorSpec,
    _x5: &TensorSpec,
    _x6: &TensorSpec,
    _carried: &bool,
) -> TensorSpec {
    TensorSpec {
        shape: Shape::new([1]),
        dtype: x0.dtype,
    }
}

/// The sum of squares from the backend's tensor operations, one tensor after another: with
/// `carried`, the running total `x6` plus each input's sum in turn, else the same from the
/// first input's sum.
fn reference<B: Backend>(xs: [FloatTensor<B>; INPUTS], carried: bool) -> FloatTensor<B> {
    let [x0, x1, x2, x3, x4, x5, x6] = xs;
    let square_sum = |x: FloatTensor<B>| B::float_sum(B::float_mul(x.clone(), x));
    let (mut total, rest) = if carried {
        (x6, vec![x0, x1, x2, x3, x4, x5])
    } else {
        (square_sum(x0), vec![x1, x2, x3, x4, x5, x6])
    };
    for x in rest {
        total = B::float_add(total, square_sum(x));
    }
    total
}

/// A running sum of the squares of every element of the tensors added to it, computed
/// [`INPUTS`] tensors at a time.
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
        // Seven to a group, six once the running total takes the last place.
        let full = INPUTS - usize::from(self.total.is_some());
        if self.pending.len() == full {
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

    /// One operation for the pending tensors (and the running total, if any), the missing
    /// ones `[0.0]` (an upload, no kernel).
    fn flush(&mut self, device: &Device) {
        check_kernel(device);
        let zero = || Tensor::<1>::from_data(TensorData::new(vec![0.0f32], [1]), device);
        let carried = self.total.is_some();
        let mut group: Vec<_> = std::mem::take(&mut self.pending);
        group.resize_with(INPUTS - usize::from(carried), || zero().into_dispatch());
        group.extend(self.total.take().map(Tensor::into_dispatch));
        let Ok([x0, x1, x2, x3, x4, x5, x6]) = <[_; INPUTS]>::try_from(group) else {
            unreachable!("a group holds {INPUTS} tensors")
        };
        self.total = Some(Tensor::from_dispatch(
            <Dispatch as SumSquaresBackend>::sum_squares(x0, x1, x2, x3, x4, x5, x6, carried),
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
            let x = |from: usize, n: usize| {
                Tensor::<1>::from_data(TensorData::new(xs[from..from + n].to_vec(), [n]), device)
                    .into_dispatch()
            };
            // Seven inputs of different sizes, the whole 1000 and a transposed view among
            // them; then six more with that total carried.
            let whole = Tensor::<2>::from_data(TensorData::new(xs.clone(), [40, 25]), device);
            let first = <Dispatch as SumSquaresBackend>::sum_squares(
                x(0, 1),
                whole.clone().into_dispatch(),
                x(3, 64),
                x(100, 700),
                whole.transpose().into_dispatch(),
                x(999, 1),
                x(7, 65),
                false,
            );
            Tensor::<1>::from_dispatch(<Dispatch as SumSquaresBackend>::sum_squares(
                x(5, 3),
                x(200, 129),
                x(0, 1000),
                x(1, 1),
                x(2, 2),
                x(500, 64),
                first,
                true,
            ))
        };
        let (got, want) = (read(run(device))?, read(run(&Device::flex()))?);
        // A sum of a few thousand squares near 1: compare relative to its size.
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
    fn sum_squares(
        x0: FloatTensor<Self>,
        x1: FloatTensor<Self>,
        x2: FloatTensor<Self>,
        x3: FloatTensor<Self>,
        x4: FloatTensor<Self>,
        x5: FloatTensor<Self>,
        x6: FloatTensor<Self>,
        carried: bool,
    ) -> FloatTensor<Self> {
        let xs = [x0, x1, x2, x3, x4, x5, x6];
        if wgpu::serves(&xs) {
            wgpu::sum_squares(xs, carried)
        } else {
            reference::<Self>(xs, carried)
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
        let tensors: Vec<Tensor<1>> = (1..=20)
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

    /// Seven tensors to the first operation, six to each after it.
    #[test]
    fn operations_take_seven_then_six() {
        let counts: Vec<usize> = [0, 1, 7, 8, 13, 14, 37].map(operations).to_vec();
        assert_eq!(counts, [0, 1, 1, 2, 2, 3, 6]);
    }
}
