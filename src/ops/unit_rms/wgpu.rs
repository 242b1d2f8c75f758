//! The wgpu launchers of `shaders/unit_rms.wgsl` and `shaders/unit_rms_backward.wgsl`: rows
//! scaled to unit root-mean-square and the input's gradient, one dispatch each, one workgroup
//! per row.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;

use crate::ops::wgsl::{self, Wgsl};

/// Invocations per workgroup (the shaders' `THREADS`).
const THREADS: u32 = 64;
/// Workgroups along one dispatch axis at most (WebGPU's guaranteed limit).
const MAX_GROUPS: usize = 65_535;

/// The forward kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::unit_rms";
/// The backward kernel's name.
pub(super) const BACKWARD: &str = "remem::unit_rms_backward";

/// Whether `kernel` serves `x`: `f32` on wgpu, a non-empty last axis, and the kernel's check
/// on this device passed (or has not run: the check itself calls here).
pub(super) fn serves(kernel: &'static str, x: &CubeTensor) -> bool {
    wgsl::serves_rows(kernel, x)
}

/// Launches `kernel` (`name`) over the rows of the first of `tensors` (each `[rows, d]`,
/// contiguous, the inputs then the output), with the sizes bound last.
fn launch(name: &'static str, kernel: &'static str, tensors: &[&CubeTensor], epsilon: f64) {
    let x = tensors[0];
    let shape = x.shape();
    let d = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / d;
    let client = x.client.clone();
    let info = wgsl::info(
        &client,
        &[rows as u32, d as u32, (epsilon as f32).to_bits()],
    );
    let mut handles: Vec<_> = tensors.iter().map(|t| t.handle.clone()).collect();
    handles.push(info);
    Wgsl::new(name, &wgsl::row_kernel(kernel), &[], THREADS).launch(
        &client,
        CubeCount::Static(
            rows.min(MAX_GROUPS) as u32,
            rows.div_ceil(MAX_GROUPS) as u32,
            1,
        ),
        handles,
    );
}

/// `x / sqrt(mean(x²) + epsilon)` over the last axis of `x`.
pub(super) fn unit_rms(x: CubeTensor, epsilon: f64) -> CubeTensor {
    let x = burn_cubecl::kernel::into_contiguous(x);
    let out = wgsl::empty_like(&x, x.shape());
    let kernel = include_str!("../../../shaders/unit_rms.wgsl");
    launch(NAME, kernel, &[&x, &out], epsilon);
    out
}

/// The input's gradient from `x` and the output gradient `grad`.
pub(super) fn unit_rms_backward(x: CubeTensor, grad: CubeTensor, epsilon: f64) -> CubeTensor {
    let [x, grad] = [x, grad].map(burn_cubecl::kernel::into_contiguous);
    let dx = wgsl::empty_like(&x, x.shape());
    let kernel = include_str!("../../../shaders/unit_rms_backward.wgsl");
    launch(BACKWARD, kernel, &[&x, &grad, &dx], epsilon);
    dx
}
