//! The wgpu launcher of `shaders/layer_norm.wgsl`: layer norm over the last axis in one
//! dispatch, one workgroup per row.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;

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
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / d;
    let x = burn_cubecl::kernel::into_contiguous(x);
    let gamma = burn_cubecl::kernel::into_contiguous(gamma);
    let beta = burn_cubecl::kernel::into_contiguous(beta);
    let out = wgsl::empty_like(&x, shape);
    let client = x.client.clone();
    let info = wgsl::info(
        &client,
        &[rows as u32, d as u32, (epsilon as f32).to_bits()],
    );
    let kernel = Wgsl::new(
        NAME,
        &wgsl::row_kernel(include_str!("../../../shaders/layer_norm.wgsl")),
        &[],
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
            info,
        ],
    );
    out
}

/// The backward kernels' names (`shaders/layer_norm_backward.wgsl` for the input gradient,
/// `shaders/layer_norm_params_backward.wgsl` for the scale and shift gradients); they are
/// checked together, under the first.
pub(super) const BACKWARD: &str = "remem::layer_norm_backward";
const PARAMS_BACKWARD: &str = "remem::layer_norm_params_backward";

/// Whether the backward kernels serve this call (as [`serves`], for their own check).
pub(super) fn serves_backward(x: &CubeTensor) -> bool {
    wgsl::serves_rows(BACKWARD, x)
}

/// The gradients of `x`, `gamma` and `beta` from `x`, `gamma` and the output gradient, in two
/// dispatches: the input gradient one workgroup per row (which also keeps each row's mean and
/// rstd), then the scale and shift gradients one workgroup per column.
pub(super) fn layer_norm_backward(
    x: CubeTensor,
    gamma: CubeTensor,
    grad: CubeTensor,
    epsilon: f64,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / d;
    let x = burn_cubecl::kernel::into_contiguous(x);
    let gamma = burn_cubecl::kernel::into_contiguous(gamma);
    let grad = burn_cubecl::kernel::into_contiguous(grad);
    let dx = wgsl::empty_like(&x, shape);
    let stats = wgsl::empty_like(&x, burn::prelude::Shape::new([rows, 2]));
    let dgamma = wgsl::empty_like(&gamma, burn::prelude::Shape::new([d]));
    let dbeta = wgsl::empty_like(&gamma, burn::prelude::Shape::new([d]));
    let client = x.client.clone();
    let info = wgsl::info(
        &client,
        &[rows as u32, d as u32, (epsilon as f32).to_bits()],
    );
    let per_row = Wgsl::new(
        BACKWARD,
        &wgsl::row_kernel(include_str!("../../../shaders/layer_norm_backward.wgsl")),
        &[],
        THREADS,
    );
    per_row.launch(
        &client,
        groups(rows),
        vec![
            x.handle.clone(),
            gamma.handle.clone(),
            grad.handle.clone(),
            dx.handle.clone(),
            stats.handle.clone(),
            info.clone(),
        ],
    );
    let per_column = Wgsl::new(
        PARAMS_BACKWARD,
        &wgsl::row_kernel(include_str!(
            "../../../shaders/layer_norm_params_backward.wgsl"
        )),
        &[],
        THREADS,
    );
    per_column.launch(
        &client,
        groups(d),
        vec![
            x.handle.clone(),
            grad.handle.clone(),
            stats.handle.clone(),
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
