//! The wgpu launcher of `shaders/ltm_read.wgsl`: the infinity-former's long-term memory read in
//! one dispatch.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;
use burn::prelude::Shape;

use crate::ops::wgsl::{self, Wgsl};

/// Invocations per workgroup (the shader's `@workgroup_size`).
const WORKGROUP: usize = 64;
/// The widest head the kernel takes: the query and the accumulator live in registers.
const MAX_D_HEAD: usize = 128;
/// Workgroups along one dispatch axis at most (WebGPU's guaranteed limit).
const MAX_GROUPS: usize = 65_535;

/// The kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::ltm_read";

/// Whether the kernel serves `q` `[batch, seq_q, heads · d_head]`: `f32` on wgpu, a head no
/// wider than [`MAX_D_HEAD`], rows within one dispatch axis, and the check on this device
/// passed (or has not run: the check itself calls here).
pub(super) fn serves(q: &CubeTensor, heads: usize) -> bool {
    let [batch, seq_q, width] = q.shape().dims::<3>();
    wgsl::serves(q)
        && seq_q > 0
        && width / heads <= MAX_D_HEAD
        && (batch * heads * seq_q).div_ceil(WORKGROUP) <= MAX_GROUPS
        && !wgsl::failed(NAME, &q.device)
}

/// The merged context `[batch, seq_q, heads · d_head]` and the densities `[2, batch, heads,
/// seq_q]` (means, then variances).
pub(super) fn ltm_read(
    q: CubeTensor,
    kv: CubeTensor,
    params: CubeTensor,
    heads: usize,
    scale: f64,
    min_variance: f64,
) -> (CubeTensor, CubeTensor) {
    let [q, kv, params] = [q, kv, params].map(burn_cubecl::kernel::into_contiguous);
    let [batch, seq_q, width] = q.shape().dims::<3>();
    let n = kv.shape()[1];
    let context = wgsl::empty_like(&q, Shape::new([batch, seq_q, width]));
    let density = wgsl::empty_like(&q, Shape::new([2, batch, heads, seq_q]));
    let info = wgsl::info(
        &q.client,
        &[
            batch as u32,
            seq_q as u32,
            n as u32,
            heads as u32,
            (scale as f32).to_bits(),
            (min_variance as f32).to_bits(),
        ],
    );
    let rows = batch * heads * seq_q;
    Wgsl::new(
        NAME,
        &[include_str!("../../../shaders/ltm_read.wgsl")],
        &[("d_head", width / heads)],
        WORKGROUP as u32,
    )
    .launch(
        &q.client,
        CubeCount::Static(rows.div_ceil(WORKGROUP) as u32, 1, 1),
        vec![
            q.handle.clone(),
            kv.handle.clone(),
            params.handle.clone(),
            context.handle.clone(),
            density.handle.clone(),
            info,
        ],
    );
    (context, density)
}
