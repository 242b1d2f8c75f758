//! The wgpu launcher of `shaders/rotary.wgsl`: rotary positions on rows of heads written in the
//! heads' layout, or their transpose (the gradient) back into rows, one invocation per element.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;

use crate::ops::wgsl::{self, Wgsl};

/// Invocations per workgroup (the shader's `@workgroup_size`).
const WORKGROUP: usize = 64;
/// Workgroups along one dispatch axis at most (WebGPU's guaranteed limit).
const MAX_GROUPS: usize = 65_535;

/// The kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::rotary";

/// Whether the kernel serves `x`: `f32` on wgpu, non-empty, within the dispatch limits, and the
/// check on this device passed (or has not run: the check itself calls here).
pub(super) fn serves(x: &CubeTensor) -> bool {
    let elements = x.shape().num_elements();
    wgsl::serves(x)
        && elements > 0
        && elements.div_ceil(WORKGROUP) <= MAX_GROUPS * MAX_GROUPS
        && elements <= u32::MAX as usize
        && !wgsl::failed(NAME, &x.device)
}

/// `x` `[batch, seq, heads · d_head]` turned by `table` `[positions, d_head, 2]` at positions
/// `start..` into the heads' layout, or with `transpose` the heads' layout turned back into rows
/// (the shape is `x`'s either way).
pub(super) fn rotary(
    x: CubeTensor,
    table: CubeTensor,
    d_head: usize,
    start: usize,
    transpose: bool,
) -> CubeTensor {
    let [x, table] = [x, table].map(burn_cubecl::kernel::into_contiguous);
    let shape = x.shape();
    let [_, seq, width] = shape.dims::<3>();
    let elements = shape.num_elements();
    let out = wgsl::empty_like(&x, shape);
    let info = wgsl::info(
        &x.client,
        &[
            elements as u32,
            seq as u32,
            width as u32,
            d_head as u32,
            start as u32,
            u32::from(transpose),
        ],
    );
    let groups = elements.div_ceil(WORKGROUP);
    let count = CubeCount::Static(
        groups.min(MAX_GROUPS) as u32,
        groups.div_ceil(MAX_GROUPS) as u32,
        1,
    );
    Wgsl::new(
        NAME,
        &[include_str!("../../../shaders/rotary.wgsl")],
        &[],
        WORKGROUP as u32,
    )
    .launch(
        &x.client,
        count,
        vec![x.handle.clone(), table.handle, out.handle.clone(), info],
    );
    out
}
