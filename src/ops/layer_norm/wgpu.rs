//! The wgpu launchers of `shaders/layer_norm.wgsl` (layer norm over the last axis in one
//! dispatch, one workgroup per row; in training keeping each row's statistics) and
//! `shaders/layer_norm_backward.wgsl` (its three gradients in one dispatch).

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;
use burn::prelude::Shape;

use crate::ops::wgsl::{self, Wgsl};

/// Invocations per workgroup (the shader's `THREADS`).
const THREADS: u32 = 64;
/// Workgroups along one dispatch axis at most (WebGPU's guaranteed limit).
const MAX_GROUPS: usize = 65_535;

/// The kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::layer_norm";

/// Whether the kernel serves this call: `f32` on wgpu, a non-empty last axis, and the check on
/// this device passed (or has not run: the check itself calls here).
pub(super) fn serves(x: &CubeTensor) -> bool {
    wgsl::serves_rows(NAME, x)
}

/// `(x - mean) / sqrt(var + epsilon) * gamma + beta` over the last axis of `x`.
pub(super) fn layer_norm(
    x: CubeTensor,
    gamma: CubeTensor,
    beta: CubeTensor,
    epsilon: f64,
) -> CubeTensor {
    forward(x, gamma, beta, epsilon, false).0
}

/// [`layer_norm`] in training: also each row's mean and reciprocal deviation `[rows, 2]`, for
/// [`layer_norm_backward`].
pub(super) fn layer_norm_train(
    x: CubeTensor,
    gamma: CubeTensor,
    beta: CubeTensor,
    epsilon: f64,
) -> (CubeTensor, CubeTensor) {
    let (out, stats) = forward(x, gamma, beta, epsilon, true);
    (out, stats.expect("kept"))
}

/// The forward dispatch, keeping the rows' statistics when `keep`.
fn forward(
    x: CubeTensor,
    gamma: CubeTensor,
    beta: CubeTensor,
    epsilon: f64,
    keep: bool,
) -> (CubeTensor, Option<CubeTensor>) {
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / d;
    let x = burn_cubecl::kernel::into_contiguous(x);
    let gamma = burn_cubecl::kernel::into_contiguous(gamma);
    let beta = burn_cubecl::kernel::into_contiguous(beta);
    let out = wgsl::empty_like(&x, shape);
    let client = x.client.clone();
    let stats = keep.then(|| wgsl::empty_like(&x, Shape::new([rows, 2])));
    // Without the statistics the binding is never written, but it must be a buffer of its
    // own (see the affine kernel's residual).
    let stats_handle = match &stats {
        Some(s) => s.handle.clone(),
        None => wgsl::info(&client, &[0]),
    };
    let info = wgsl::info(
        &client,
        &[rows as u32, d as u32, (epsilon as f32).to_bits()],
    );
    let kernel = Wgsl::new(
        NAME,
        &wgsl::row_kernel(include_str!("../../../shaders/layer_norm.wgsl")),
        &[("stats", usize::from(keep))],
        THREADS,
    );
    kernel.launch(
        &client,
        groups(rows),
        vec![
            x.handle.clone(),
            gamma.handle.clone(),
            beta.handle.clone(),
            out.handle.clone(),
            stats_handle,
            info,
        ],
    );
    (out, stats)
}

/// The backward kernel's name (`shaders/layer_norm_backward.wgsl`).
pub(super) const BACKWARD: &str = "remem::layer_norm_backward";

/// Whether the backward kernel serves this call (as [`serves`], for its own check).
pub(super) fn serves_backward(x: &CubeTensor) -> bool {
    wgsl::serves_rows(BACKWARD, x)
}

/// The gradients of `x`, `gamma` and `beta` from `x`, `gamma`, the output gradient and the
/// rows' statistics the forward kept ([`layer_norm_train`]), in one dispatch: the input
/// gradient one workgroup per row, the scale and shift gradients one per column.
pub(super) fn layer_norm_backward(
    x: CubeTensor,
    gamma: CubeTensor,
    grad: CubeTensor,
    stats: CubeTensor,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / d;
    let [x, gamma, grad, stats] = [x, gamma, grad, stats].map(burn_cubecl::kernel::into_contiguous);
    let dx = wgsl::empty_like(&x, shape);
    let dgamma = wgsl::empty_like(&gamma, Shape::new([d]));
    let dbeta = wgsl::empty_like(&gamma, Shape::new([d]));
    let client = x.client.clone();
    let info = wgsl::info(&client, &[rows as u32, d as u32]);
    let kernel = Wgsl::new(
        BACKWARD,
        &wgsl::row_kernel(include_str!("../../../shaders/layer_norm_backward.wgsl")),
        &[],
        THREADS,
    );
    kernel.launch(
        &client,
        groups(rows + d),
        vec![
            x.handle.clone(),
            gamma.handle.clone(),
            grad.handle.clone(),
            stats.handle.clone(),
            dx.handle.clone(),
            dgamma.handle.clone(),
            dbeta.handle.clone(),
            info,
        ],
    );
    (dx, dgamma, dbeta)
}

/// `n` workgroups spread over the dispatch's first two axes.
fn groups(n: usize) -> CubeCount {
    CubeCount::Static(n.min(MAX_GROUPS) as u32, n.div_ceil(MAX_GROUPS) as u32, 1)
}
