//! Layer normalisation over the last axis as one autodiff operation: a CPU backward kernel, and
//! on wgpu WGSL kernels forward and backward.
//!
//! Burn's `LayerNorm` is fused on flex at inference, but under autodiff it is built from nine
//! tracked operations (two means, subtract, square, add, sqrt, divide, scale, shift), each with
//! its own pass over the activations forward and backward. [`layer_norm`] records one: the
//! forward is the backend's own layer norm on the CPU (flex's fused row kernel) and one dispatch
//! of `shaders/layer_norm.wgsl` on wgpu ([`wgpu`]); the backward gives the input, scale and shift
//! gradients in one pass per row on the CPU's thread pool, and on wgpu in one dispatch of
//! `shaders/layer_norm_backward.wgsl` (a workgroup per row for the input gradient, one per
//! column for the scale and shift gradients), from each row's mean and reciprocal deviation
//! that the training forward kept; other GPU runtimes take the same formula from Burn's ops.

mod wgpu;

#[cfg(feature = "train")]
use burn::backend::Autodiff;
#[cfg(feature = "train")]
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{
    Backend, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;

use crate::ops::wgsl::{agrees, check_on, read};

use crate::ops::cpu;

/// Layer norm over the last axis as a backend operation, so that autodiff records one node.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait LayerNormBackend: Backend {
    /// `(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last axis.
    #[fusion(dtype = x, shape = x)]
    fn layer_norm_last(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(x, gamma, Some(beta), epsilon)
    }

    /// The gradients of `x`, `gamma` and `beta` from `x`, `gamma` and the output gradient.
    #[fusion(meta = gradient_specs)]
    fn layer_norm_last_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        backward_from_ops::<Self>(x, gamma, grad, epsilon)
    }

    /// [`LayerNormBackend::layer_norm_last`] in training: the output, and what the backward
    /// keeps of the forward ([`LayerNormBackend::layer_norm_last_backward_kept`]): on the GPU
    /// runtimes each row's mean and reciprocal deviation `[rows, 2]`, elsewhere `x` itself
    /// (not read: the CPU's backward finds them again in its one pass).
    #[fusion(meta = train_specs)]
    fn layer_norm_last_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        (Self::layer_norm_last(x.clone(), gamma, beta, epsilon), x)
    }

    /// [`LayerNormBackend::layer_norm_last_backward`] with what
    /// [`LayerNormBackend::layer_norm_last_train`] kept.
    #[fusion(meta = kept_gradient_specs)]
    fn layer_norm_last_backward_kept(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        _kept: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        Self::layer_norm_last_backward(x, gamma, grad, epsilon)
    }
}

/// The training forward's shapes and type, for the fusion stream (which only the GPU runtimes
/// use): the output's, and the rows' statistics `[rows, 2]`.
fn train_specs(
    x: &TensorSpec,
    _gamma: &TensorSpec,
    _beta: &TensorSpec,
    _epsilon: &f64,
) -> (TensorSpec, TensorSpec) {
    let d = x.shape[x.shape.num_dims() - 1];
    let rows = x.shape.num_elements() / d.max(1);
    (x.clone(), TensorSpec::new(Shape::new([rows, 2]), x.dtype))
}

/// [`gradient_specs`] for the backward from what the forward kept.
fn kept_gradient_specs(
    x: &TensorSpec,
    gamma: &TensorSpec,
    grad: &TensorSpec,
    _kept: &TensorSpec,
    epsilon: &f64,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    gradient_specs(x, gamma, grad, epsilon)
}

/// Each row's mean and reciprocal deviation `[rows, 2]` over the last axis of `x`, as
/// `shaders/layer_norm.wgsl` keeps them, from the backend's tensor operations.
fn stats_from_ops<B: Backend>(x: FloatTensor<B>, epsilon: f64) -> FloatTensor<B> {
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / d.max(1);
    let x = B::float_reshape(x, Shape::new([rows, d]));
    let mean = B::float_mean_dim(x.clone(), 1);
    let centred = B::float_sub(x, mean.clone());
    let var = B::float_mean_dim(B::float_mul(centred.clone(), centred), 1);
    let rstd = B::float_recip(B::float_sqrt(B::float_add_scalar(var, epsilon.into())));
    B::float_cat(vec![mean, rstd], 1)
}

/// Layer norm of `x` along its last axis with scale `gamma` and shift `beta`.
///
/// # Shapes
/// - x: `[..., d_model]`
/// - gamma, beta: `[d_model]`
/// - output: as `x`
pub fn layer_norm<const D: usize>(
    x: Tensor<D>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
) -> Tensor<D> {
    check_kernel(&x.device());
    if x.is_autodiff() {
        check_backward_kernel(&x.device());
    }
    Tensor::from_dispatch(<Dispatch as LayerNormBackend>::layer_norm_last(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
    ))
}

/// On wgpu, check the WGSL kernel against Burn's layer norm on the CPU once per device (see
/// [`crate::ops::wgsl`]); elsewhere, and in a browser (no synchronous reads), nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let (x, gamma) = check_input();
        let d = gamma.num_elements();
        let beta = TensorData::new((0..d).map(|i| (i as f32 / 7.0).sin()).collect(), [d]);
        let got = Tensor::<2>::from_dispatch(<Dispatch as LayerNormBackend>::layer_norm_last(
            Tensor::<2>::from_data(x.clone(), device).into_dispatch(),
            Tensor::<1>::from_data(gamma.clone(), device).into_dispatch(),
            Tensor::<1>::from_data(beta.clone(), device).into_dispatch(),
            1e-5,
        ));
        // The reference runs on the CPU (see the attention's check).
        let cpu = Device::flex();
        let want = burn::tensor::module::layer_norm(
            Tensor::<2>::from_data(x, &cpu),
            Tensor::<1>::from_data(gamma, &cpu),
            Some(Tensor::<1>::from_data(beta, &cpu)),
            1e-5,
        );
        agrees("output", &read(got)?, &read(want)?)
    });
}

/// The checks' input and scale: 70 rows of 100 (not multiples of the workgroup), rows of
/// different offsets and spreads.
fn check_input() -> (TensorData, TensorData) {
    let (rows, d) = (70, 100);
    let xs: Vec<f32> = (0..rows * d)
        .map(|i| ((i * 7919) % 1013) as f32 / 300.0 * (1.0 + (i / d) as f32 % 4.0) - 1.5)
        .collect();
    let gamma = (0..d).map(|i| 0.5 + i as f32 / 64.0).collect();
    (TensorData::new(xs, [rows, d]), TensorData::new(gamma, [d]))
}

/// The gradients' shapes and type, for the fusion stream: the input's, then the scale's twice.
fn gradient_specs(
    x: &TensorSpec,
    gamma: &TensorSpec,
    _grad: &TensorSpec,
    _epsilon: &f64,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (x.clone(), gamma.clone(), gamma.clone())
}

/// On wgpu, check the WGSL backward kernels against [`backward_from_ops`] on the CPU once per
/// device, as [`check_kernel`] does for the forward.
fn check_backward_kernel(device: &Device) {
    check_on(wgpu::BACKWARD, device, |device| {
        // The forward's input, and an output gradient that is not uniform.
        let (x, gamma) = check_input();
        let shape = x.shape().clone();
        let grad: Vec<f32> = (0..x.num_elements())
            .map(|i| ((i * 104_729) % 997) as f32 / 500.0 - 1.0)
            .collect();
        let grad = TensorData::new(grad, shape);
        let d = gamma.num_elements();
        let beta = TensorData::new(vec![0.25f32; d], [d]);
        // The training forward keeps what the backward reads, then the backward from it.
        let run = |device: &Device| {
            let x = || Tensor::<2>::from_data(x.clone(), device).into_dispatch();
            let gamma = || Tensor::<1>::from_data(gamma.clone(), device).into_dispatch();
            let (_, kept) = <Dispatch as LayerNormBackend>::layer_norm_last_train(
                x(),
                gamma(),
                Tensor::<1>::from_data(beta.clone(), device).into_dispatch(),
                1e-5,
            );
            let (dx, dgamma, dbeta) = <Dispatch as LayerNormBackend>::layer_norm_last_backward_kept(
                x(),
                gamma(),
                Tensor::<2>::from_data(grad.clone(), device).into_dispatch(),
                kept,
                1e-5,
            );
            (
                Tensor::<2>::from_dispatch(dx),
                Tensor::<1>::from_dispatch(dgamma),
                Tensor::<1>::from_dispatch(dbeta),
            )
        };
        let (dx, dgamma, dbeta) = run(device);
        let (want_dx, want_dgamma, want_dbeta) = run(&Device::flex());
        agrees("input gradient", &read(dx)?, &read(want_dx)?)?;
        agrees("scale gradient", &read(dgamma)?, &read(want_dgamma)?)?;
        agrees("shift gradient", &read(dbeta)?, &read(want_dbeta)?)
    });
}

/// With `x̂ = (x - mean) rstd` and `h = g gamma`: `dx = rstd (h - mean(h) - x̂ mean(h x̂))`,
/// `dgamma = Σ_rows g x̂`, `dbeta = Σ_rows g`, from the backend's tensor operations.
fn backward_from_ops<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    grad: FloatTensor<B>,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / d.max(1);
    let x = B::float_reshape(x, Shape::new([rows, d]));
    let g = B::float_reshape(grad, Shape::new([rows, d]));
    let mean = B::float_mean_dim(x.clone(), 1);
    let centred = B::float_sub(x, mean);
    let var = B::float_mean_dim(B::float_mul(centred.clone(), centred.clone()), 1);
    let rstd = B::float_recip(B::float_sqrt(B::float_add_scalar(var, epsilon.into())));
    let x_hat = B::float_mul(centred, rstd.clone());
    let h = B::float_mul(g.clone(), B::float_reshape(gamma, Shape::new([1, d])));
    let mean_h = B::float_mean_dim(h.clone(), 1);
    let mean_hx = B::float_mean_dim(B::float_mul(h.clone(), x_hat.clone()), 1);
    let dx = B::float_sub(
        B::float_sub(h, mean_h),
        B::float_mul(x_hat.clone(), mean_hx),
    );
    let dx = B::float_reshape(B::float_mul(dx, rstd), shape);
    let dgamma = B::float_sum_dim(B::float_mul(g.clone(), x_hat), 0);
    let dbeta = B::float_sum_dim(g, 0);
    (
        dx,
        B::float_reshape(dgamma, Shape::new([d])),
        B::float_reshape(dbeta, Shape::new([d])),
    )
}

/// The GPU runtimes: on wgpu the WGSL kernel where it serves, Burn's operations elsewhere.
impl LayerNormBackend for CubeBackend {
    fn layer_norm_last(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        if wgpu::serves(&x) {
            wgpu::layer_norm(x, gamma, beta, epsilon)
        } else {
            <Self as burn::backend::ops::ModuleOps<Self>>::layer_norm(x, gamma, Some(beta), epsilon)
        }
    }

    fn layer_norm_last_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if wgpu::serves(&x) {
            wgpu::layer_norm_train(x, gamma, beta, epsilon)
        } else {
            let stats = stats_from_ops::<Self>(x.clone(), epsilon);
            (Self::layer_norm_last(x, gamma, beta, epsilon), stats)
        }
    }

    fn layer_norm_last_backward_kept(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        kept: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if wgpu::serves_backward(&x) {
            wgpu::layer_norm_backward(x, gamma, grad, kept)
        } else {
            backward_from_ops::<Self>(x, gamma, grad, epsilon)
        }
    }
}

impl LayerNormBackend for Flex {
    fn layer_norm_last_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let shape = x.layout().shape().clone();
        let d = shape.last().copied().unwrap_or(0);
        if d == 0
            || ![&x, &gamma, &grad].into_iter().all(cpu::is_f32)
            || &shape != grad.layout().shape()
            || gamma.layout().num_elements() != d
        {
            return backward_from_ops::<Flex>(x, gamma, grad, epsilon);
        }
        let x = x.to_contiguous();
        let gamma = gamma.to_contiguous();
        let backward = BackwardKernel {
            x: cpu::f32s(&x),
            gamma: cpu::f32s(&gamma),
            epsilon: epsilon as f32,
        };
        // The output gradient becomes the input gradient in place; each chunk of rows adds up its
        // own share of the scale and shift gradients, summed below in chunk order (the same
        // numbers whatever the thread count).
        let mut grad = cpu::owned(grad);
        let partials = cpu::for_chunks(cpu::f32s_mut(&mut grad), cpu::rows_chunk(d), &backward);
        let (mut dgamma, mut dbeta) = (vec![0.0f32; d], vec![0.0f32; d]);
        for (pg, pb) in partials {
            dgamma.iter_mut().zip(pg).for_each(|(a, b)| *a += b);
            dbeta.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
        }
        (grad, cpu::new(dgamma, &gamma), cpu::new(dbeta, &gamma))
    }
}

/// The backward kernel: rows of the output gradient become the input gradient, and each chunk
/// gives back its share of the scale and shift gradients.
struct BackwardKernel<'a> {
    x: &'a [f32],
    gamma: &'a [f32],
    epsilon: f32,
}

impl cpu::Kernel for BackwardKernel<'_> {
    /// The chunk's `(dgamma, dbeta)`.
    type Out = (Vec<f32>, Vec<f32>);

    #[inline(always)]
    fn run(&self, start: usize, g: &mut [f32]) -> Self::Out {
        let d = self.gamma.len();
        let n = d as f32;
        let gamma = self.gamma;
        let mut dgamma = vec![0.0f32; d];
        let mut dbeta = vec![0.0f32; d];
        for (g, x) in g.chunks_mut(d).zip(self.x[start..].chunks(d)) {
            let mean = cpu::sum8(x, |v| v) / n;
            let var = cpu::sum8(x, |v| (v - mean) * (v - mean)) / n;
            let rstd = 1.0 / (var + self.epsilon).sqrt();
            for (((dg, db), g), x) in dgamma.iter_mut().zip(&mut dbeta).zip(&*g).zip(x) {
                *dg += g * (x - mean) * rstd;
                *db += g;
            }
            // h = g gamma; dx = rstd (h - mean(h) - x_hat mean(h x_hat)).
            g.iter_mut().zip(gamma).for_each(|(g, gamma)| *g *= gamma);
            let mean_h = cpu::sum8(g, |h| h) / n;
            let mean_hx = cpu::sum8_zip(g, x, |h, x| h * (x - mean) * rstd) / n;
            for (g, x) in g.iter_mut().zip(x) {
                *g = rstd * (*g - mean_h - (x - mean) * rstd * mean_hx);
            }
        }
        (dgamma, dbeta)
    }
}

#[cfg(feature = "train")]
impl<B: Backend + LayerNormBackend, C: CheckpointStrategy> LayerNormBackend for Autodiff<B, C> {
    fn layer_norm_last(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LayerNormBackward;

        impl<B: Backend + LayerNormBackend> Backward<B, 3> for LayerNormBackward {
            /// The input, the scale, what the forward kept and epsilon.
            type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [x_node, gamma_node, beta_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x, gamma, kept, epsilon) = ops.state;
                let (dx, dgamma, dbeta) =
                    B::layer_norm_last_backward_kept(x, gamma, grad, kept, epsilon);
                for (node, grad) in [(x_node, dx), (gamma_node, dgamma), (beta_node, dbeta)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        match LayerNormBackward
            .prepare::<C>([x.node(), gamma.node(), beta.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, gamma) = (x.primitive().clone(), gamma.primitive().clone());
                let (y, kept) = B::layer_norm_last_train(
                    x.clone(),
                    gamma.clone(),
                    beta.into_primitive(),
                    epsilon,
                );
                prep.finish((x, gamma, kept, epsilon), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::layer_norm_last(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                epsilon,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::tests::{max_diff, values};

    /// Activations `[4, 300, 48]` (more rows than one chunk holds) with rows of different
    /// offsets and spreads, and a scale and shift that are not ones and zeros.
    fn inputs(device: &Device) -> (Tensor<3>, Tensor<1>, Tensor<1>) {
        let xs: Vec<f32> = (0..4 * 300 * 48)
            .map(|i| {
                let row = (i / 48) as f32;
                ((i * 7919) % 1000) as f32 / 250.0 * (1.0 + row % 5.0) + row % 3.0 - 1.0
            })
            .collect();
        let x = Tensor::<3>::from_data(TensorData::new(xs, [4, 300, 48]), device);
        let gamma = Tensor::<1>::from_data(
            TensorData::new((0..48).map(|i| 0.5 + i as f32 / 32.0).collect(), [48]),
            device,
        );
        let beta = Tensor::<1>::from_data(
            TensorData::new((0..48).map(|i| (i as f32 / 7.0).sin()).collect(), [48]),
            device,
        );
        (x, gamma, beta)
    }

    /// Burn's own layer norm op with the same parameters.
    fn burns(x: Tensor<3>, gamma: Tensor<1>, beta: Tensor<1>) -> Tensor<3> {
        burn::tensor::module::layer_norm(x, gamma, Some(beta), 1e-5)
    }

    #[test]
    fn matches_burns_layer_norm_on_flex() {
        let device = Device::flex();
        let (x, gamma, beta) = inputs(&device);
        let ours = values(layer_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5));
        let diff = max_diff(&ours, &values(burns(x, gamma, beta)));
        assert!(diff < 1e-5, "differs from Burn's layer norm by {diff}");
    }

    #[cfg(feature = "train")]
    #[test]
    fn gradients_match_burns_layer_norm_on_flex() {
        let device = Device::flex().autodiff();
        let (x0, gamma0, beta0) = inputs(&device);
        let weights = x0.clone().cos();
        let grads_of = |f: &dyn Fn(Tensor<3>, Tensor<1>, Tensor<1>) -> Tensor<3>| {
            // A strided input, as the block's inputs can be after a concatenation.
            let x = x0.clone().swap_dims(0, 1).require_grad();
            let gamma = gamma0.clone().require_grad();
            let beta = beta0.clone().require_grad();
            let y = f(x.clone().swap_dims(0, 1), gamma.clone(), beta.clone());
            let grads = (y * weights.clone()).sum().backward();
            [
                values(x.grad(&grads).unwrap()),
                values(gamma.grad(&grads).unwrap()),
                values(beta.grad(&grads).unwrap()),
            ]
        };
        let ours = grads_of(&|x, g, b| layer_norm(x, g, b, 1e-5));
        let theirs = grads_of(&|x, g, b| burns(x, g, b));
        for (name, (ours, theirs)) in ["x", "gamma", "beta"].iter().zip(ours.iter().zip(&theirs)) {
            let scale = theirs.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            let diff = max_diff(ours, theirs) / scale;
            assert!(
                diff < 1e-5,
                "{name} gradient differs from Burn's by {diff} (relative)"
            );
            assert!(
                ours.iter().any(|g| g.abs() > 0.1),
                "{name} gradient trivially small"
            );
        }
    }

    /// The f32 kernel's input and scale gradients against central finite differences of the
    /// same loss in f64: the check that does not lean on Burn's own gradients.
    #[cfg(feature = "train")]
    #[test]
    fn gradients_match_finite_differences() {
        let device = Device::flex().autodiff();
        let xs = [0.3f64, -1.2, 2.0, 0.1, 0.7, -0.4, 1.5, -2.2];
        let gamma = [1.5f64, -0.5, 0.8, 2.0];
        let beta = [0.1f64, 0.2, -0.3, 0.0];
        let w = [0.5f64, -1.0, 2.0, 0.25, -0.75, 1.5, -0.5, 1.0];
        let loss_of = |xs: &[f64], gamma: &[f64]| {
            xs.chunks(4)
                .zip(w.chunks(4))
                .map(|(x, w)| {
                    let mean = x.iter().sum::<f64>() / 4.0;
                    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
                    let rstd = 1.0 / (var + 1e-5).sqrt();
                    (0..4)
                        .map(|i| ((x[i] - mean) * rstd * gamma[i] + beta[i]) * w[i])
                        .sum::<f64>()
                })
                .sum::<f64>()
        };
        let f32s = |v: &[f64]| v.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let x = Tensor::<2>::from_data(TensorData::new(f32s(&xs), [2, 4]), &device).require_grad();
        let g = Tensor::<1>::from_data(TensorData::new(f32s(&gamma), [4]), &device).require_grad();
        let b = Tensor::<1>::from_data(TensorData::new(f32s(&beta), [4]), &device);
        let wt = Tensor::<2>::from_data(TensorData::new(f32s(&w), [2, 4]), &device);
        let grads = (layer_norm(x.clone(), g.clone(), b, 1e-5) * wt)
            .sum()
            .backward();
        let dx = values(x.grad(&grads).unwrap());
        let dgamma = values(g.grad(&grads).unwrap());
        let numeric = |i: usize, of_x: bool| {
            let (mut xh, mut xl, mut gh, mut gl) = (xs, xs, gamma, gamma);
            if of_x {
                xh[i] += 1e-4;
                xl[i] -= 1e-4;
            } else {
                gh[i] += 1e-4;
                gl[i] -= 1e-4;
            }
            (loss_of(&xh, &gh) - loss_of(&xl, &gl)) / 2e-4
        };
        for (i, dx) in dx.iter().enumerate() {
            let want = numeric(i, true);
            assert!(
                (*dx as f64 - want).abs() < 1e-3,
                "d/dx[{i}]: {dx} vs {want}"
            );
        }
        for (i, dg) in dgamma.iter().enumerate() {
            let want = numeric(i, false);
            assert!(
                (*dg as f64 - want).abs() < 1e-4,
                "d/dgamma[{i}]: {dg} vs {want}"
            );
        }
    }
}
