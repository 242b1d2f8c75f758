//! The wgpu launcher of `shaders/store_read.wgsl`: ARMT's store read, DPFP features and all,
//! in one dispatch.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;
use burn::prelude::Shape;

use crate::nn::associative::NU;
use crate::ops::wgsl::{self, Wgsl};

/// Invocations per workgroup; `shaders/workgroup_sum.wgsl` reduces over as many.
const THREADS: usize = 64;
/// The widest key the kernel takes: its `2ν·K` features are staged in workgroup memory
/// (6 KiB at this width).
const MAX_KEY_DIM: usize = 256;
/// The most rows or sequences one dispatch covers (one workgroup each, per axis).
const MAX_GROUPS: usize = 65_535;

/// The kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::store_read";

/// Whether the kernel serves `keys` `[batch, n, K]` reading `store`: `f32` on wgpu, keys no
/// wider than [`MAX_KEY_DIM`], at most [`MAX_GROUPS`] rows and sequences, and the check on
/// this device passed (or has not run: the check itself calls here).
pub(super) fn serves(keys: &CubeTensor, store: &CubeTensor) -> bool {
    let [batch, n, k] = keys.shape().dims::<3>();
    wgsl::serves(keys)
        && wgsl::serves(store)
        && n > 0
        && (1..=MAX_KEY_DIM).contains(&k)
        && batch <= MAX_GROUPS
        && n <= MAX_GROUPS
        && !wgsl::failed(NAME, &keys.device)
}

/// What the store returns for each row's features: `[batch, n, d]`.
pub(super) fn store_read(keys: CubeTensor, store: CubeTensor, normalised: bool) -> CubeTensor {
    let [keys, store] = [keys, store].map(burn_cubecl::kernel::into_contiguous);
    let [batch, n, k] = keys.shape().dims::<3>();
    let d = store.shape()[2] - 1;
    let out = wgsl::empty_like(&keys, Shape::new([batch, n, d]));
    let client = keys.client.clone();
    let info = wgsl::info(&client, &[n as u32, d as u32]);
    let kernel = Wgsl::new(
        NAME,
        &[
            include_str!("../../../shaders/workgroup_sum.wgsl"),
            include_str!("../../../shaders/store_read.wgsl"),
        ],
        &[
            ("key_dim", k),
            ("features", 2 * NU * k),
            ("normalised", usize::from(normalised)),
        ],
        THREADS as u32,
    );
    kernel.launch(
        &client,
        CubeCount::Static(n as u32, batch as u32, 1),
        vec![
            keys.handle.clone(),
            store.handle.clone(),
            out.handle.clone(),
            info,
        ],
    );
    out
}
