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

/// What the store returns for each row's features, plus `residual` where there is one:
/// `[batch, n, d]`.
pub(super) fn store_read(
    keys: CubeTensor,
    store: CubeTensor,
    residual: Option<CubeTensor>,
    normalised: bool,
) -> CubeTensor {
    let [keys, store] = [keys, store].map(burn_cubecl::kernel::into_contiguous);
    let residual = residual.map(burn_cubecl::kernel::into_contiguous);
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
            ("residual", usize::from(residual.is_some())),
        ],
        THREADS as u32,
    );
    // Without a residual the binding is never read, but it must be a buffer of its own
    // (WebGPU refuses a buffer bound twice where a binding is writable; see affine's).
    let residual = match &residual {
        Some(r) => r.handle.clone(),
        None => wgsl::info(&client, &[0]),
    };
    kernel.launch(
        &client,
        CubeCount::Static(n as u32, batch as u32, 1),
        vec![
            keys.handle.clone(),
            store.handle.clone(),
            residual,
            out.handle.clone(),
            info,
        ],
    );
    out
}

/// The backward kernels' names in logs and launch counts.
pub(super) const BACKWARD_NAME: &str = "remem::store_read_backward";
const STORE_BACKWARD_NAME: &str = "remem::store_read_store_backward";

/// Floats of workgroup memory the backward kernel may stage (16 KiB, WebGPU's guaranteed
/// `maxComputeWorkgroupStorageSize`, less the workgroup sum's 64).
const MAX_STAGED: usize = 4096 - THREADS;

/// Whether the backward kernels serve `keys` `[batch, n, K]` reading `store` `[batch, F,
/// d + 1]`: as [`serves`] for the forward, with the entries, features, their gradients and the
/// lookup's gradient of one row within workgroup memory, the store's entries within two
/// dispatch axes, and their check on this device passed.
pub(super) fn serves_backward(keys: &CubeTensor, store: &CubeTensor) -> bool {
    let [batch, n, k] = keys.shape().dims::<3>();
    let [_, features, width] = store.shape().dims::<3>();
    wgsl::serves(keys)
        && wgsl::serves(store)
        && n > 0
        && k > 0
        && batch <= MAX_GROUPS
        && n <= MAX_GROUPS
        && 2 * k + 2 * features + width <= MAX_STAGED
        && (batch * features * width).div_ceil(THREADS) <= MAX_GROUPS * MAX_GROUPS
        && !wgsl::failed(BACKWARD_NAME, &keys.device)
}

/// The gradients of `keys` `[batch, n, K]` and `store` `[batch, F, d + 1]` from the read's
/// gradient `grad` `[batch, n, d]`: two dispatches.
pub(super) fn store_read_backward(
    keys: CubeTensor,
    store: CubeTensor,
    grad: CubeTensor,
    normalised: bool,
) -> (CubeTensor, CubeTensor) {
    let [keys, store, grad] = [keys, store, grad].map(burn_cubecl::kernel::into_contiguous);
    let [batch, n, k] = keys.shape().dims::<3>();
    let [_, features, width] = store.shape().dims::<3>();
    let dkeys = wgsl::empty_like(&keys, keys.shape());
    let dstore = wgsl::empty_like(&keys, store.shape());
    let phis = wgsl::empty_like(&keys, Shape::new([batch, n, features]));
    let dboth = wgsl::empty_like(&keys, Shape::new([batch, n, width]));
    let client = keys.client.clone();
    Wgsl::new(
        BACKWARD_NAME,
        &[
            include_str!("../../../shaders/workgroup_sum.wgsl"),
            include_str!("../../../shaders/store_read_backward.wgsl"),
        ],
        &[
            ("key_dim", k),
            ("entries", 2 * k),
            ("features", features),
            ("width", width),
            ("normalised", usize::from(normalised)),
        ],
        THREADS as u32,
    )
    .launch(
        &client,
        CubeCount::Static(n as u32, batch as u32, 1),
        vec![
            keys.handle.clone(),
            store.handle.clone(),
            grad.handle.clone(),
            dkeys.handle.clone(),
            phis.handle.clone(),
            dboth.handle.clone(),
            wgsl::info(&client, &[n as u32]),
        ],
    );
    let entries = (batch * features * width).div_ceil(THREADS);
    Wgsl::new(
        STORE_BACKWARD_NAME,
        &[include_str!(
            "../../../shaders/store_read_store_backward.wgsl"
        )],
        &[("features", features), ("width", width)],
        THREADS as u32,
    )
    .launch(
        &client,
        CubeCount::Static(
            entries.min(MAX_GROUPS) as u32,
            entries.div_ceil(MAX_GROUPS) as u32,
            1,
        ),
        vec![
            phis.handle.clone(),
            dboth.handle.clone(),
            dstore.handle.clone(),
            wgsl::info(&client, &[n as u32, batch as u32]),
        ],
    );
    (dkeys, dstore)
}
