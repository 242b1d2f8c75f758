//! The wgpu launchers of `shaders/unit_rms.wgsl` and `shaders/unit_rms_backward.wgsl`: rows
//! scaled to unit root-mean-square and the input's gradient, one dispatch each, one workgroup
//! per row.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;
use burn::prelude::Shape;

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

/// Launches `kernel` (`name`) with one workgroup for each of `rows` rows, over `tensors` (the
/// inputs then the output, contiguous, rows of `d`), with the sizes bound last: the rows, `d`,
/// epsilon, then the rows per sequence of `x`, the first row read and the rows read per
/// sequence.
fn launch(
    name: &'static str,
    kernel: &'static str,
    tensors: &[&CubeTensor],
    rows: usize,
    [d, n, start, count]: [usize; 4],
    epsilon: f64,
) {
    let client = tensors[0].client.clone();
    let info = wgsl::info(
        &client,
        &[
            rows as u32,
            d as u32,
            (epsilon as f32).to_bits(),
            n as u32,
            start as u32,
            count as u32,
        ],
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

/// Rows `start..start + count` of each sequence of `x` `[batch, n, d]` over `sqrt(mean(x²) +
/// epsilon)`: `[batch, count, d]`, read where they lie.
pub(super) fn unit_rms(x: CubeTensor, start: usize, count: usize, epsilon: f64) -> CubeTensor {
    let x = burn_cubecl::kernel::into_contiguous(x);
    let shape = x.shape();
    let (batch, n, d) = (shape[0], shape[1], shape[2]);
    let out = wgsl::empty_like(&x, Shape::new([batch, count, d]));
    let kernel = include_str!("../../../shaders/unit_rms.wgsl");
    launch(
        NAME,
        kernel,
        &[&x, &out],
        batch * count,
        [d, n, start, count],
        epsilon,
    );
    out
}

/// The gradient of `x` `[batch, n, d]` from the output gradient `grad` `[batch, count, d]` of
/// its rows `start..start + count`, zeros on the others, in one dispatch over all rows.
pub(super) fn unit_rms_backward(
    x: CubeTensor,
    grad: CubeTensor,
    start: usize,
    epsilon: f64,
) -> CubeTensor {
    let [x, grad] = [x, grad].map(burn_cubecl::kernel::into_contiguous);
    let shape = x.shape();
    let (batch, n, d) = (shape[0], shape[1], shape[2]);
    let count = grad.shape()[1];
    let dx = wgsl::empty_like(&x, x.shape());
    let kernel = include_str!("../../../shaders/unit_rms_backward.wgsl");
    launch(
        BACKWARD,
        kernel,
        &[&x, &grad, &dx],
        batch * n,
        [d, n, start, count],
        epsilon,
    );
    dx
}
