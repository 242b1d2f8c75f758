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

/// Whether the kernel serves `keys` `[batch, M, K]` writing `store` `[batch, F, d + 1]`:
/// `f32` on wgpu, what it stages fitting ([`fits`]), at most [`MAX_GROUPS`] sequences, and
/// the check on this device passed (or has not run: the check itself calls here).
pub(super) fn serves(keys: &CubeTensor, store: &CubeTensor) -> bool {
    let [batch, m, k] = keys.shape().dims::<3>();
    let d = store.shape()[2] - 1;
    wgsl::serves(keys)
        && wgsl::serves(store)
        && fits(m, k, d)
        && batch <= MAX_GROUPS
        && !wgsl::failed(NAME, &keys.device)
}

/// The store after the write: `[batch, F, d + 1]`.
pub(super) fn store_write(
    keys: CubeTensor,
    values: CubeTensor,
    strengths: CubeTensor,
    store: CubeTensor,
    normalised: bool,
) -> CubeTensor {
    let [keys, values, strengths, store] =
        [keys, values, strengths, store].map(burn_cubecl::kernel::into_contiguous);
    let [batch, m, k] = keys.shape().dims::<3>();
    let d = store.shape()[2] - 1;
    let features = 2 * NU * k;
    let out = wgsl::empty_like(&store, store.shape());
    let client = keys.client.clone();
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
            keys.handle.clone(),
            values.handle.clone(),
            strengths.handle.clone(),
            store.handle.clone(),
            out.handle.clone(),
        ],
    );
    out
}
