//! The wgpu launcher of `shaders/attention.wgsl`: packed, masked self-attention in one dispatch.

use burn::backend::wgpu::{CubeBackend, CubeTensor};
use burn::cubecl::prelude::CubeCount;
use burn::prelude::Shape;

use super::Dims;
use crate::ops::wgsl::{self, Wgsl};

/// Query rows per workgroup (the workgroup size).
const ROWS: usize = 64;
/// Keys staged per tile: `2 · KEYS · d_head` floats of workgroup memory, 16 KiB at the largest
/// head width, WebGPU's guaranteed minimum.
const KEYS: usize = 16;
/// The widest head the kernel takes: the query and the accumulator live in registers.
pub(super) const MAX_D_HEAD: usize = 128;

/// The kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::attention";

/// Whether the kernel serves this call: `f32` on wgpu, a head no wider than [`MAX_D_HEAD`],
/// and the check on this device passed (or has not run: the check itself calls here).
pub(super) fn serves(qkv: &CubeTensor, heads: usize) -> bool {
    serves_as(NAME, qkv, heads)
}

/// Whether the kernels checked under `kernel` serve `qkv` (as [`serves`]).
fn serves_as(kernel: &'static str, qkv: &CubeTensor, heads: usize) -> bool {
    let d_head = qkv.meta.shape()[2] / (3 * heads);
    wgsl::serves(qkv) && d_head <= MAX_D_HEAD && !wgsl::failed(kernel, &qkv.device)
}

/// The context `[batch, seq, heads · d_head]` and, when `with_weights`, the weights
/// `[batch, heads, seq, seq]`.
pub(super) fn attention(
    qkv: CubeTensor,
    bias: CubeTensor,
    heads: usize,
    scale: f64,
    with_weights: bool,
) -> (CubeTensor, Option<CubeTensor>) {
    let dims = Dims::of::<CubeBackend>(&qkv, heads);
    let qkv = burn_cubecl::kernel::into_contiguous(qkv);
    let bias = burn_cubecl::kernel::into_contiguous(bias);
    let Dims {
        batch, seq, d_head, ..
    } = dims;
    let context = wgsl::empty_like(&qkv, Shape::new([batch, seq, dims.d_model()]));
    // Without weights the binding still needs a buffer; one element serves.
    let weights = if with_weights {
        wgsl::empty_like(&qkv, Shape::new([batch, heads, seq, seq]))
    } else {
        wgsl::empty_like(&qkv, Shape::new([1]))
    };
    let client = qkv.client.clone();
    let info = wgsl::info(
        &client,
        &[
            batch as u32,
            seq as u32,
            heads as u32,
            (scale as f32).to_bits(),
            with_weights as u32,
        ],
    );
    let kernel = Wgsl::new(
        NAME,
        &[
            include_str!("../../../shaders/attention.wgsl"),
            include_str!("../../../shaders/online_softmax.wgsl"),
        ],
        &[
            ("d_head", d_head),
            ("rows", ROWS),
            ("keys", KEYS),
            ("tile", KEYS * d_head),
        ],
        ROWS as u32,
    );
    let count = CubeCount::Static(seq.div_ceil(ROWS) as u32, heads as u32, batch as u32);
    kernel.launch(
        &client,
        count,
        vec![
            qkv.handle.clone(),
            bias.handle.clone(),
            context.handle.clone(),
            weights.handle.clone(),
            info,
        ],
    );
    (context, with_weights.then_some(weights))
}

/// The backward kernels' names (`shaders/attention_backward_query.wgsl`, then
/// `shaders/attention_backward_key.wgsl`); they are checked together, under the first.
pub(super) const BACKWARD: &str = "remem::attention_backward";
const BACKWARD_KEY: &str = "remem::attention_backward_key";

/// Whether the backward kernels serve this call (as [`serves`], for their own check).
pub(super) fn serves_backward(qkv: &CubeTensor, heads: usize) -> bool {
    qkv.meta.shape()[1] > 0 && serves_as(BACKWARD, qkv, heads)
}

/// The gradient of the packed projection `[batch, seq, 3 · heads · d_head]` from the
/// projection, the forward's weights `[batch, heads, seq, seq]` and the merged context's
/// gradient `[batch, seq, heads · d_head]`, in two dispatches: per query row the query
/// gradient and the score gradients, then per key row the key and value gradients.
pub(super) fn attention_backward(
    qkv: CubeTensor,
    weights: CubeTensor,
    grad: CubeTensor,
    heads: usize,
    scale: f64,
) -> CubeTensor {
    let dims = Dims::of::<CubeBackend>(&qkv, heads);
    let qkv = burn_cubecl::kernel::into_contiguous(qkv);
    let weights = burn_cubecl::kernel::into_contiguous(weights);
    let grad = burn_cubecl::kernel::into_contiguous(grad);
    let Dims {
        batch, seq, d_head, ..
    } = dims;
    let d_qkv = wgsl::empty_like(&qkv, Shape::new([batch, seq, 3 * dims.d_model()]));
    let scores = wgsl::empty_like(&qkv, Shape::new([batch, heads, seq, seq]));
    let client = qkv.client.clone();
    let info = wgsl::info(
        &client,
        &[
            batch as u32,
            seq as u32,
            heads as u32,
            (scale as f32).to_bits(),
        ],
    );
    let values = [
        ("d_head", d_head),
        ("rows", ROWS),
        ("keys", KEYS),
        ("tile", KEYS * d_head),
    ];
    let count = || CubeCount::Static(seq.div_ceil(ROWS) as u32, heads as u32, batch as u32);
    let per_query = Wgsl::new(
        BACKWARD,
        &[include_str!(
            "../../../shaders/attention_backward_query.wgsl"
        )],
        &values,
        ROWS as u32,
    );
    per_query.launch(
        &client,
        count(),
        vec![
            qkv.handle.clone(),
            weights.handle.clone(),
            grad.handle.clone(),
            d_qkv.handle.clone(),
            scores.handle.clone(),
            info.clone(),
        ],
    );
    let per_key = Wgsl::new(
        BACKWARD_KEY,
        &[include_str!("../../../shaders/attention_backward_key.wgsl")],
        &values,
        ROWS as u32,
    );
    per_key.launch(
        &client,
        count(),
        vec![
            qkv.handle.clone(),
            weights.handle.clone(),
            grad.handle.clone(),
            scores.handle.clone(),
            d_qkv.handle.clone(),
            info,
        ],
    );
    d_qkv
}
