//! The wgpu launcher of `shaders/affine.wgsl`: `epilogue(x' w + b)`, one 64 x 64 output tile
//! per workgroup, `x'` read as it lies (`shaders/affine_rows.wgsl`) or layer-normed
//! (`shaders/affine_norm.wgsl`).

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;
use burn::prelude::Shape;

use crate::ops::wgsl::{self, Wgsl};

/// The output tile's side (the shader's `TILE`).
const TILE: usize = 64;
/// Invocations per workgroup (the shader's `@workgroup_size`), each a 4 x 4 block of the tile.
const INVOCATIONS: u32 = 256;
/// Workgroups along one dispatch axis at most (WebGPU's guaranteed limit).
const MAX_GROUPS: usize = 65_535;

/// The kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::affine";

/// Whether the kernel serves `x`: `f32` on wgpu, non-empty, a grid of tiles within the
/// dispatch limits, and the check on this device passed (or has not run: the check itself
/// calls here).
pub(super) fn serves(x: &CubeTensor) -> bool {
    let shape = x.shape();
    wgsl::serves(x)
        && shape.num_elements() > 0
        && shape[0].div_ceil(TILE) <= MAX_GROUPS
        && shape.num_elements() <= u32::MAX as usize
        && !wgsl::failed(NAME, &x.device)
}

/// `epilogue(x' w + b)`, `[rows, n]`; `x'` is `x` with each row layer-normed when `norm` gives
/// `(gamma, beta, epsilon)`.
pub(super) fn affine_rows(
    x: CubeTensor,
    weight: CubeTensor,
    bias: CubeTensor,
    residual: CubeTensor,
    epilogue: usize,
    norm: Option<(CubeTensor, CubeTensor, f64)>,
) -> CubeTensor {
    let [x, weight, bias] = [x, weight, bias].map(burn_cubecl::kernel::into_contiguous);
    let (rows, k, n) = (x.shape()[0], x.shape()[1], weight.shape()[1]);
    let out = wgsl::empty_like(&x, Shape::new([rows, n]));
    let epsilon = norm.as_ref().map_or(0.0, |n| n.2) as f32;
    let info = wgsl::info(
        &x.client,
        &[rows as u32, k as u32, n as u32, epsilon.to_bits()],
    );
    // Without the residual epilogue the binding is never read, but it must be a buffer of its
    // own: WebGPU refuses a buffer bound twice where one binding is writable (and every
    // binding here is), which the caller's stand-in (`x` again) would be.
    let residual = match epilogue {
        2 => burn_cubecl::kernel::into_contiguous(residual).handle,
        _ => wgsl::info(&x.client, &[0]),
    };
    let count = CubeCount::Static(n.div_ceil(TILE) as u32, rows.div_ceil(TILE) as u32, 1);
    let mut buffers = vec![
        x.handle.clone(),
        weight.handle.clone(),
        bias.handle.clone(),
        residual,
        out.handle.clone(),
        info,
    ];
    let input = match norm {
        Some((gamma, beta, _)) => {
            let [gamma, beta] = [gamma, beta].map(burn_cubecl::kernel::into_contiguous);
            buffers.extend([gamma.handle, beta.handle]);
            include_str!("../../../shaders/affine_norm.wgsl")
        }
        None => include_str!("../../../shaders/affine_rows.wgsl"),
    };
    let normed = usize::from(buffers.len() > 6);
    Wgsl::new(
        NAME,
        &[input, include_str!("../../../shaders/affine.wgsl")],
        &[("epilogue", epilogue), ("norm", normed)],
        INVOCATIONS,
    )
    .launch(&x.client, count, buffers);
    out
}
