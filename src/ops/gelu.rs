//! GELU, the exact (erf) form, with a multi-threaded CPU kernel.
//!
//! Burn's flex backend evaluates `erf` one element at a time with libm, on one thread, in the
//! forward and in the backward pass: 14-17% of remem's CPU time in profiles. This backend
//! extension runs over parallel chunks, with an `erf` accurate to 1.5e-7 (Abramowitz and
//! Stegun 7.1.26) whose `exp` also gives the Gaussian density the gradient needs. When the
//! gradient will be wanted (under autodiff), one pass writes the output and its slope
//! `d/dx [x Φ(x)]` together, and the backward is a product with the kept slope: `erf` and `exp`
//! are evaluated once per element instead of once forward and again backward, and the input is
//! read where it lies instead of copied. GPU backends run Burn's own GELU. [`gelu`] is the
//! entry point.

#[cfg(feature = "train")]
use burn::backend::Autodiff;
#[cfg(feature = "train")]
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::ops::ActivationOps;
use burn::backend::{
    Backend, Cube, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;

use super::cpu;

/// GELU as a backend operation, so that the CPU can run its own kernel.
#[backend_extension(Flex, Cube, Autodiff: cfg(feature = "train"))]
pub trait GeluBackend: Backend {
    /// `x Φ(x)`, elementwise.
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }

    /// `(x Φ(x), d/dx [x Φ(x)])`, elementwise: the output and the slope its gradient is
    /// scaled by.
    fn gelu_erf_and_slope(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        burns_gelu_and_slope::<Self>(x)
    }
}

/// Burn's own GELU of `x`, and its slope as Burn's backward against a gradient of ones.
fn burns_gelu_and_slope<B: Backend>(x: FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>) {
    let ones = B::float_ones(x.shape(), &x.device(), x.dtype().into());
    (B::gelu(x.clone()), B::gelu_backward(x, ones))
}

/// GELU (erf form) of every element of `x`.
///
/// # Shapes
/// any; the output has the shape of `x`
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as GeluBackend>::gelu_erf(x.into_dispatch()))
}

impl GeluBackend for Cube {}

impl GeluBackend for Flex {
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !cpu::is_f32(&x) {
            return Flex::gelu(x);
        }
        let mut x = cpu::owned(x);
        cpu::for_chunks(cpu::f32s_mut(&mut x), cpu::CHUNK, &ForwardKernel);
        x
    }

    fn gelu_erf_and_slope(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !cpu::is_f32(&x) {
            return burns_gelu_and_slope::<Flex>(x);
        }
        // The output overwrites the input where nothing else holds it (the backward needs only
        // the slope); the slope goes to a buffer that is written whole, never zero-filled first.
        let mut out = cpu::owned(x);
        let n = out.layout().num_elements();
        let mut slope = Vec::<f32>::with_capacity(n);
        let values = cpu::f32s_mut(&mut out);
        cpu::for_chunk_pairs(
            values,
            &mut slope.spare_capacity_mut()[..n],
            cpu::CHUNK,
            &SlopeKernel,
        );
        // SAFETY: `SlopeKernel` wrote every one of the `n` elements.
        unsafe { slope.set_len(n) };
        let slope = cpu::new(slope, &out);
        (out, slope)
    }
}

/// The forward kernel, in place.
struct ForwardKernel;

impl cpu::Kernel for ForwardKernel {
    type Out = ();

    #[inline(always)]
    fn run(&self, _: usize, x: &mut [f32]) {
        x.iter_mut().for_each(|v| *v = gelu_f32(*v));
    }
}

/// The output in place of each input element, and its slope into a second buffer.
struct SlopeKernel;

impl cpu::PairKernel for SlopeKernel {
    #[inline(always)]
    fn run(&self, _: usize, x: &mut [f32], slope: &mut [std::mem::MaybeUninit<f32>]) {
        for (v, s) in x.iter_mut().zip(slope.iter_mut()) {
            let (out, d) = gelu_and_slope_f32(*v);
            *v = out;
            s.write(d);
        }
    }
}

#[cfg(feature = "train")]
impl<B: Backend + GeluBackend, C: CheckpointStrategy> GeluBackend for Autodiff<B, C> {
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct GeluErfBackward;

        impl<B: Backend + GeluBackend> Backward<B, 1> for GeluErfBackward {
            /// The slope at each input element.
            type State = FloatTensor<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [parent] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(node) = parent {
                    grads.register::<B>(node.id, B::float_mul(grad, ops.state));
                }
            }
        }

        match GeluErfBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                // The primitive is handed over, not cloned: the kernel can then overwrite it.
                let (out, slope) = B::gelu_erf_and_slope(x.into_primitive());
                prep.finish(slope, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gelu_erf(x.into_primitive())),
        }
    }
}

/// `erf(x / sqrt 2)` and `exp(-x^2 / 2)` (Abramowitz and Stegun 7.1.26, |error| <= 1.5e-7),
/// without branches or library calls so that the kernels' loops vectorise.
#[inline(always)]
fn erf_and_gauss(x: f32) -> (f32, f32) {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    let z = x * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / (1.0 + P * z.abs());
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let gauss = cpu::exp(-z * z);
    let erf = 1.0 - poly * gauss;
    (if z < 0.0 { -erf } else { erf }, gauss)
}

/// `x Φ(x)`.
#[inline(always)]
fn gelu_f32(x: f32) -> f32 {
    let (erf, _) = erf_and_gauss(x);
    0.5 * x * (1.0 + erf)
}

/// `(x Φ(x), d/dx [x Φ(x)] = Φ(x) + x φ(x))`.
#[inline(always)]
fn gelu_and_slope_f32(x: f32) -> (f32, f32) {
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    let (erf, gauss) = erf_and_gauss(x);
    let phi = 0.5 * (1.0 + erf);
    (x * phi, phi + x * FRAC_1_SQRT_2PI * gauss)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::tests::{max_diff, values};

    /// -8..8 in steps of 1/64 and a row of zeros, as a transposed (non-contiguous) `[2, 1025]`
    /// view, so the kernel also meets a strided input.
    fn grid(device: &Device) -> Tensor<2> {
        let xs: Vec<f32> = (0..1025)
            .flat_map(|i| [-8.0 + i as f32 / 64.0, 0.0])
            .collect();
        Tensor::<2>::from_data(TensorData::new(xs, [1025, 2]), device).swap_dims(0, 1)
    }

    #[test]
    fn matches_burns_gelu_on_flex() {
        let device = Device::flex();
        let x = grid(&device);
        let ours = values(gelu(x.clone()));
        let burns = values(burn::tensor::activation::gelu(x.clone()));
        // A contiguous tensor held elsewhere is copied, one nothing else holds is overwritten
        // in place: the same values either way.
        let contiguous = Tensor::<2>::from_data(x.into_data(), &device);
        let shared = values(gelu(contiguous.clone()));
        let owned = values(gelu(contiguous));
        assert_eq!(shared, ours);
        assert_eq!(owned, ours);
        let diff = max_diff(&ours, &burns);
        assert!(diff < 2e-6, "differs from libm's GELU by {diff}");
    }

    #[cfg(feature = "train")]
    #[test]
    fn gradient_matches_burns_gelu_on_flex() {
        let device = Device::flex().autodiff();
        let weights = grid(&device).cos();
        let grad_of = |f: &dyn Fn(Tensor<2>) -> Tensor<2>| {
            let x = grid(&device).require_grad();
            let loss = (f(x.clone()) * weights.clone()).sum();
            values(x.grad(&loss.backward()).expect("gradient"))
        };
        let ours = grad_of(&|x| gelu(x));
        let burns = grad_of(&|x| burn::tensor::activation::gelu(x));
        // On a tensor nothing else holds (a fresh product), the output overwrites the input:
        // the same gradient.
        let in_place = grad_of(&|x| gelu(x.mul_scalar(1.0)));
        assert_eq!(in_place, ours);
        // The tracked forward (output and slope in one pass) gives the untracked one's bits.
        let tracked = values(gelu(grid(&device).require_grad()));
        assert_eq!(tracked, values(gelu(grid(&Device::flex()))));
        let diff = max_diff(&ours, &burns);
        assert!(diff < 2e-6, "gradient differs from Burn's by {diff}");
        // Not trivially zero: GELU'(x) cos(x) reaches 1 in magnitude on this grid.
        assert!(ours.iter().any(|g| g.abs() > 0.5));
    }
}
