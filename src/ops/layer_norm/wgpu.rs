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
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    wgsl::serves(x) && d > 0 && shape.num_elements() > 0 && !wgsl::failed(NAME, &x.device)
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
        include_str!("../../../shaders/layer_norm.wgsl"),
        &[],
        THREADS,
    );
    let count = CubeCount::Static(
        rows.min(MAX_GROUPS) as u32,
        rows.div_ceil(MAX_GROUPS) as u32,
        1,
    );
    kernel.launch(
        &client,
        count,
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
