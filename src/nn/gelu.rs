//! GELU, the exact (erf) form, with a multi-threaded CPU kernel.
//!
//! Burn's flex backend evaluates `erf` one element at a time with libm, on one thread, in the
//! forward and in the backward pass: 14-17% of remem's CPU time in profiles. This backend
//! extension runs both passes over parallel chunks, with an `erf` accurate to 1.5e-7
//! (Abramowitz and Stegun 7.1.26) whose `exp` also gives the Gaussian density the gradient
//! needs. GPU backends run Burn's own GELU. [`gelu`] is the entry point.

#[cfg(feature = "train")]
use burn::backend::Autodiff;
#[cfg(feature = "train")]
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::ActivationOps;
use burn::backend::{Backend, Cube, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
use burn::tensor::{Bytes, DType};

/// GELU as a backend operation, so that the CPU can run its own kernel.
#[backend_extension(Flex, Cube, Autodiff: cfg(feature = "train"))]
pub trait GeluBackend: Backend {
    /// `x Φ(x)`, elementwise.
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }

    /// `grad · d/dx [x Φ(x)]`, elementwise.
    fn gelu_erf_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_backward(x, grad)
    }
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
        if x.dtype() != DType::F32 {
            return Flex::gelu(x);
        }
        map(x, None, |x, _| gelu_f32(x))
    }

    fn gelu_erf_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if x.dtype() != DType::F32
            || grad.dtype() != DType::F32
            || x.layout().shape() != grad.layout().shape()
        {
            return Flex::gelu_backward(x, grad);
        }
        map(grad, Some(x), |g, x| g * gelu_grad_f32(x))
    }
}

#[cfg(feature = "train")]
impl<B: Backend + GeluBackend, C: CheckpointStrategy> GeluBackend for Autodiff<B, C> {
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct GeluErfBackward;

        impl<B: Backend + GeluBackend> Backward<B, 1> for GeluErfBackward {
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
                    grads.register::<B>(node.id, B::gelu_erf_backward(ops.state, grad));
                }
            }
        }

        match GeluErfBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let input = x.primitive().clone();
                prep.finish(input.clone(), B::gelu_erf(input))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gelu_erf(x.into_primitive())),
        }
    }
}

/// `f(a, b)` over the elements of the f32 tensor `a` and the equally shaped `b` (0 when absent),
/// in parallel chunks; written over `a`'s buffer when `a` owns it, as it does at inference.
fn map(a: FlexTensor, b: Option<FlexTensor>, f: impl Fn(f32, f32) -> f32 + Sync) -> FlexTensor {
    let b = b.map(|b| b.to_contiguous());
    let b: Option<&[f32]> = b.as_ref().map(|b| {
        let (start, end) = b.layout().contiguous_offsets().expect("contiguous");
        &b.storage::<f32>()[start..end]
    });
    let at = |i: usize| b.map_or(0.0, |b| b[i]);
    let mut a = a;
    let in_place = a.is_unique() && a.layout().contiguous_offsets().is_some_and(|(s, _)| s == 0);
    if in_place {
        let n = a.layout().num_elements();
        let out = &mut a.storage_mut::<f32>()[..n];
        for_chunks(out, |i, v| *v = f(*v, at(i)));
        return a;
    }
    let a = a.to_contiguous();
    let shape = a.layout().shape().clone();
    let (start, end) = a.layout().contiguous_offsets().expect("contiguous");
    let src = &a.storage::<f32>()[start..end];
    let mut out = vec![0.0f32; src.len()];
    for_chunks(&mut out, |i, v| *v = f(src[i], at(i)));
    FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// `g(index, element)` over `out`, in chunks on the thread pool (on one thread on wasm).
fn for_chunks(out: &mut [f32], g: impl Fn(usize, &mut f32) + Sync) {
    const CHUNK: usize = 1 << 14;
    let run = |(c, chunk): (usize, &mut [f32])| {
        for (j, v) in chunk.iter_mut().enumerate() {
            g(c * CHUNK + j, v);
        }
    };
    // One chunk runs on the calling thread: handing it to the pool costs more than it saves.
    #[cfg(not(target_family = "wasm"))]
    if out.len() > CHUNK {
        use rayon::prelude::*;
        out.par_chunks_mut(CHUNK).enumerate().for_each(run);
        return;
    }
    out.chunks_mut(CHUNK).enumerate().for_each(run);
}

/// `erf(x / sqrt 2)` and `exp(-x^2 / 2)` (Abramowitz and Stegun 7.1.26, |error| <= 1.5e-7).
#[inline]
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
    let gauss = (-z * z).exp();
    let erf = 1.0 - poly * gauss;
    (if z < 0.0 { -erf } else { erf }, gauss)
}

/// `x Φ(x)`.
#[inline]
fn gelu_f32(x: f32) -> f32 {
    let (erf, _) = erf_and_gauss(x);
    0.5 * x * (1.0 + erf)
}

/// `d/dx [x Φ(x)] = Φ(x) + x φ(x)`.
#[inline]
fn gelu_grad_f32(x: f32) -> f32 {
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    let (erf, gauss) = erf_and_gauss(x);
    0.5 * (1.0 + erf) + x * FRAC_1_SQRT_2PI * gauss
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec().unwrap()
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

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
        // A tensor nothing else holds is overwritten in place: the same values.
        let owned = values(gelu(Tensor::<2>::from_data(x.into_data(), &device)));
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
        let diff = max_diff(&ours, &burns);
        assert!(diff < 2e-6, "gradient differs from Burn's by {diff}");
        // Not trivially zero: GELU'(x) cos(x) reaches 1 in magnitude on this grid.
        assert!(ours.iter().any(|g| g.abs() > 0.5));
    }
}
