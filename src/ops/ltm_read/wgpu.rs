//! The wgpu launcher of `shaders/ltm_read.wgsl`: the infinity-former's long-term memory read in
//! one dispatch.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;
use burn::cubecl::server::Handle;
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
    let info = info(&q, n, heads, scale, min_variance);
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

/// The backward kernels' names in logs and launch counts.
pub(super) const BACKWARD_NAME: &str = "remem::ltm_read_backward";
const PARAMS_BACKWARD_NAME: &str = "remem::ltm_read_params_backward";

/// The largest storage buffer every WebGPU adapter binds (`maxStorageBufferBindingSize`).
const MAX_BINDING_BYTES: usize = 128 << 20;

/// Whether the backward kernels serve `q`: as [`serves`] for the forward, with the keys' and
/// parameters' invocations within two dispatch axes, what the first kernel keeps per row
/// within one binding, and their check on this device passed.
pub(super) fn serves_backward(q: &CubeTensor, heads: usize, n: usize) -> bool {
    let [batch, seq_q, width] = q.shape().dims::<3>();
    let rows = batch * heads * seq_q;
    wgsl::serves(q)
        && seq_q > 0
        && width / heads <= MAX_D_HEAD
        && rows * (3 * n + 2) * 4 <= MAX_BINDING_BYTES
        && rows.div_ceil(WORKGROUP) <= MAX_GROUPS * MAX_GROUPS
        && (batch * heads * n + 4 * n + 2).div_ceil(WORKGROUP) <= MAX_GROUPS * MAX_GROUPS
        && !wgsl::failed(BACKWARD_NAME, &q.device)
}

/// `invocations` in workgroups of [`WORKGROUP`] over the first two dispatch axes.
fn groups(invocations: usize) -> CubeCount {
    let n = invocations.div_ceil(WORKGROUP);
    CubeCount::Static(n.min(MAX_GROUPS) as u32, n.div_ceil(MAX_GROUPS) as u32, 1)
}

/// The gradients of the queries `[batch, seq_q, heads · d_head]`, the keys and values `[batch,
/// N, 2 · heads · d_head]` and the parameters `[4 N + 2]` (zero for the centres and widths)
/// from the context's gradient `grad`: two dispatches.
pub(super) fn ltm_read_backward(
    q: CubeTensor,
    kv: CubeTensor,
    params: CubeTensor,
    grad: CubeTensor,
    heads: usize,
    scale: f64,
    min_variance: f64,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let [q, kv, params, grad] = [q, kv, params, grad].map(burn_cubecl::kernel::into_contiguous);
    let [batch, seq_q, width] = q.shape().dims::<3>();
    let n = kv.shape()[1];
    let rows = batch * heads * seq_q;
    let dq = wgsl::empty_like(&q, q.shape());
    let dkv = wgsl::empty_like(&q, kv.shape());
    let dparams = wgsl::empty_like(&q, params.shape());
    let scratch = wgsl::empty_like(&q, Shape::new([rows * (3 * n + 2)]));
    let info = info(&q, n, heads, scale, min_variance);
    let values = [("d_head", width / heads)];
    Wgsl::new(
        BACKWARD_NAME,
        &[include_str!("../../../shaders/ltm_read_backward.wgsl")],
        &values,
        WORKGROUP as u32,
    )
    .launch(
        &q.client,
        groups(rows),
        vec![
            q.handle.clone(),
            kv.handle.clone(),
            params.handle.clone(),
            grad.handle.clone(),
            dq.handle.clone(),
            scratch.handle.clone(),
            info.clone(),
        ],
    );
    Wgsl::new(
        PARAMS_BACKWARD_NAME,
        &[include_str!(
            "../../../shaders/ltm_read_params_backward.wgsl"
        )],
        &values,
        WORKGROUP as u32,
    )
    .launch(
        &q.client,
        groups(batch * heads * n + 4 * n + 2),
        vec![
            q.handle.clone(),
            grad.handle.clone(),
            scratch.handle.clone(),
            dkv.handle.clone(),
            dparams.handle.clone(),
            info,
        ],
    );
    (dq, dkv, dparams)
}

/// The kernels' sizes for queries `q`: batch, seq_q, N, heads, and the scale and the variance
/// floor by their bits.
fn info(q: &CubeTensor, n: usize, heads: usize, scale: f64, min_variance: f64) -> Handle {
    let [batch, seq_q, _] = q.shape().dims::<3>();
    wgsl::info(
        &q.client,
        &[
            batch as u32,
            seq_q as u32,
            n as u32,
            heads as u32,
            (scale as f32).to_bits(),
            (min_variance as f32).to_bits(),
        ],
    )
}
