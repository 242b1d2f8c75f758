//! The wgpu launcher of `shaders/store_write.wgsl`: ARMT's store write, DPFP features and all,
//! in one dispatch.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;

use crate::nn::associative::NU;
use crate::ops::wgsl::{self, Wgsl};

/// Invocations per workgroup.
const THREADS: usize = 64;
/// Workgroup memory the kernel may stage, in bytes: WebGPU's guaranteed minimum.
const WORKGROUP_BYTES: usize = 16 * 1024;
/// The most sequences one dispatch covers (one workgroup each).
const MAX_GROUPS: usize = 65_535;

/// The kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::store_write";

/// Floats the kernel stages for `m` rows, keys of `k` and values of `d`: the features, the
/// updates, the new normaliser and four numbers per row.
fn staged(m: usize, k: usize, d: usize) -> usize {
    let features = 2 * NU * k;
    m * features + m * d + features + 4 * m
}

/// Whether what the kernel stages for `m` rows, keys of `k` and values of `d` fits
/// [`WORKGROUP_BYTES`] (and none of them is empty).
pub(super) fn fits(m: usize, k: usize, d: usize) -> bool {
    m > 0 && k > 0 && d > 0 && 4 * staged(m, k, d) <= WORKGROUP_BYTES
}

/// Whether the kernel serves `projections` `[batch, M, K + d + 1]` writing `store` `[batch, F,
/// d + 1]`: `f32` on wgpu, what it stages fitting ([`fits`]), at most [`MAX_GROUPS`]
/// sequences, and the check on this device passed (or has not run: the check itself calls
/// here).
pub(super) fn serves(projections: &CubeTensor, store: &CubeTensor) -> bool {
    let [batch, m, p] = projections.shape().dims::<3>();
    let d = store.shape()[2] - 1;
    wgsl::serves(projections)
        && wgsl::serves(store)
        && p > d + 1
        && fits(m, p - d - 1, d)
        && batch <= MAX_GROUPS
        && !wgsl::failed(NAME, &projections.device)
}

/// The store after the write: `[batch, F, d + 1]`, from the keys, values and strengths side by
/// side in `projections` `[batch, M, K + d + 1]`.
pub(super) fn store_write(
    projections: CubeTensor,
    store: CubeTensor,
    normalised: bool,
) -> CubeTensor {
    let [projections, store] = [projections, store].map(burn_cubecl::kernel::into_contiguous);
    let [batch, m, p] = projections.shape().dims::<3>();
    let d = store.shape()[2] - 1;
    let k = p - d - 1;
    let features = 2 * NU * k;
    let out = wgsl::empty_like(&store, store.shape());
    let client = projections.client.clone();
    let kernel = Wgsl::new(
        NAME,
        &[include_str!("../../../shaders/store_write.wgsl")],
        &[
            ("rows", m),
            ("key_dim", k),
            ("features", features),
            ("d", d),
            ("row_features", m * features),
            ("row_values", m * d),
            ("normalised", usize::from(normalised)),
        ],
        THREADS as u32,
    );
    kernel.launch(
        &client,
        CubeCount::Static(batch as u32, 1, 1),
        vec![
            projections.handle.clone(),
            store.handle.clone(),
            out.handle.clone(),
        ],
    );
    out
}

/// The backward kernel's name in logs and launch counts.
pub(super) const BACKWARD_NAME: &str = "remem::store_write_backward";

/// The largest storage buffer every WebGPU adapter binds (`maxStorageBufferBindingSize`).
const MAX_BINDING_BYTES: usize = 128 << 20;

/// Floats of scratch the backward kernel keeps per sequence for `m` rows, keys of `k` and
/// values of `d` (the layout at the top of `shaders/store_write_backward.wgsl`).
fn scratch(m: usize, k: usize, d: usize) -> usize {
    let (w, f, width) = (2 * k, 2 * NU * k, d + 1);
    // r, features, lengths, overlaps, lookup, z', k·z', updates, per, the rows' five sums,
    // db, dz', the features' gradient, and two sums over the rows.
    m * w + m * f + m + m + m * width + f + m + m * d + m * d + 5 * m + m * d + f + m * f + 2 * f
}

/// Whether the backward kernel serves `projections` `[batch, M, K + d + 1]` writing `store`
/// `[batch, F, d + 1]`: `f32` on wgpu, at most [`MAX_GROUPS`] sequences, the scratch within
/// one binding, and its check on this device passed.
pub(super) fn serves_backward(projections: &CubeTensor, store: &CubeTensor) -> bool {
    let [batch, m, p] = projections.shape().dims::<3>();
    let d = store.shape()[2] - 1;
    wgsl::serves(projections)
        && wgsl::serves(store)
        && m > 0
        && p > d + 1
        && batch <= MAX_GROUPS
        && 4 * batch * scratch(m, p - d - 1, d) <= MAX_BINDING_BYTES
        && !wgsl::failed(BACKWARD_NAME, &projections.device)
}

/// The gradients of `packed` `[batch, M, K + d + 1]` (the keys, values and strengths side by
/// side) and of `store` `[batch, F, d + 1]` from the new store's gradient `grad`: one
/// dispatch, one workgroup per sequence.
pub(super) fn store_write_backward(
    packed: CubeTensor,
    store: CubeTensor,
    grad: CubeTensor,
    normalised: bool,
) -> (CubeTensor, CubeTensor) {
    let [packed, store, grad] = [packed, store, grad].map(burn_cubecl::kernel::into_contiguous);
    let [batch, m, p] = packed.shape().dims::<3>();
    let [_, features, width] = store.shape().dims::<3>();
    let key_dim = p - width;
    let dpacked = wgsl::empty_like(&packed, packed.shape());
    let dstore = wgsl::empty_like(&packed, store.shape());
    let kept = wgsl::empty_like(
        &packed,
        burn::prelude::Shape::new([batch * scratch(m, key_dim, width - 1)]),
    );
    let client = packed.client.clone();
    Wgsl::new(
        BACKWARD_NAME,
        &[include_str!("../../../shaders/store_write_backward.wgsl")],
        &[
            ("rows", m),
            ("key_dim", key_dim),
            ("entries", 2 * key_dim),
            ("features", features),
            ("width", width),
            ("normalised", usize::from(normalised)),
        ],
        THREADS as u32,
    )
    .launch(
        &client,
        CubeCount::Static(batch as u32, 1, 1),
        vec![
            packed.handle.clone(),
            store.handle.clone(),
            grad.handle.clone(),
            dpacked.handle.clone(),
            dstore.handle.clone(),
            kept.handle.clone(),
        ],
    );
    (dpacked, dstore)
}
