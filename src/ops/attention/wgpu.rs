//! The wgpu launchers of `shaders/attention.wgsl` (packed, masked attention in one dispatch) and
//! of its backward, `shaders/attention_backward_query.wgsl` then
//! `shaders/attention_backward_key.wgsl`; all three append `shaders/attention_rotary.wgsl`.

use burn::backend::wgpu::{CubeBackend, CubeTensor};
use burn::cubecl::prelude::CubeCount;
use burn::cubecl::server::Handle;
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
/// and the check on this device passed (or has not run: the check itself calls here). Rotary
/// heads are even (the operation's shape check).
pub(super) fn serves(qkv: &CubeTensor, heads: usize) -> bool {
    serves_as(NAME, qkv, heads)
}

/// Whether the kernels checked under `kernel` serve `qkv` (as [`serves`]).
fn serves_as(kernel: &'static str, qkv: &CubeTensor, heads: usize) -> bool {
    let d_head = qkv.meta.shape()[2] / (3 * heads);
    wgsl::serves(qkv) && d_head <= MAX_D_HEAD && !wgsl::failed(kernel, &qkv.device)
}

/// The placeholders' values for a head width.
fn values(d_head: usize) -> [(&'static str, usize); 4] {
    [
        ("d_head", d_head),
        ("rows", ROWS),
        ("keys", KEYS),
        ("tile", KEYS * d_head),
    ]
}

/// The rotary table's buffer, or without rotary positions a one-element buffer of its own
/// (bound, never read; WebGPU refuses a buffer bound twice where one binding is writable).
fn table(qkv: &CubeTensor, rope: Option<CubeTensor>) -> Handle {
    match rope {
        Some(table) => burn_cubecl::kernel::into_contiguous(table).handle,
        None => wgsl::info(&qkv.client, &[0]),
    }
}

/// The context `[batch, seq - first, heads · d_head]` and, when `with_weights`, the weights
/// `[batch, heads, seq - first, seq]`: queries are the rows from `first` on, turned with the
/// keys by the rotary table `rope` `[positions, d_head, 2]` when given.
pub(super) fn attention(
    qkv: CubeTensor,
    bias: CubeTensor,
    rope: Option<CubeTensor>,
    first: usize,
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
    let seq_q = seq - first;
    let context = wgsl::empty_like(&qkv, Shape::new([batch, seq_q, dims.d_model()]));
    // Without weights the binding still needs a buffer; one element serves.
    let weights = if with_weights {
        wgsl::empty_like(&qkv, Shape::new([batch, heads, seq_q, seq]))
    } else {
        wgsl::empty_like(&qkv, Shape::new([1]))
    };
    let client = qkv.client.clone();
    let rotary = rope.is_some();
    let table = table(&qkv, rope);
    let info = wgsl::info(
        &client,
        &[
            batch as u32,
            seq as u32,
            heads as u32,
            (scale as f32).to_bits(),
            with_weights as u32,
            first as u32,
            rotary as u32,
        ],
    );
    let kernel = Wgsl::new(
        NAME,
        &[
            include_str!("../../../shaders/attention.wgsl"),
            include_str!("../../../shaders/online_softmax.wgsl"),
            include_str!("../../../shaders/attention_rotary.wgsl"),
        ],
        &values(d_head),
        ROWS as u32,
    );
    let count = CubeCount::Static(seq_q.div_ceil(ROWS) as u32, heads as u32, batch as u32);
    kernel.launch(
        &client,
        count,
        vec![
            qkv.handle.clone(),
            bias.handle.clone(),
            table,
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
/// projection, the forward's weights `[batch, heads, seq - first, seq]` and the merged context's
/// gradient `[batch, seq - first, heads · d_head]`, in two dispatches: per query row the query
/// gradient and the score gradients, then per key row the key and value gradients (and zeros
/// for the query columns of the rows before `first`).
#[allow(clippy::too_many_arguments)]
pub(super) fn attention_backward(
    qkv: CubeTensor,
    rope: Option<CubeTensor>,
    first: usize,
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
    let seq_q = seq - first;
    let d_qkv = wgsl::empty_like(&qkv, Shape::new([batch, seq, 3 * dims.d_model()]));
    let scores = wgsl::empty_like(&qkv, Shape::new([batch, heads, seq_q, seq]));
    let client = qkv.client.clone();
    let rotary = rope.is_some();
    let table = table(&qkv, rope);
    let info = wgsl::info(
        &client,
        &[
            batch as u32,
            seq as u32,
            heads as u32,
            (scale as f32).to_bits(),
            first as u32,
            rotary as u32,
        ],
    );
    let rotary_source = include_str!("../../../shaders/attention_rotary.wgsl");
    let groups =
        |rows: usize| CubeCount::Static(rows.div_ceil(ROWS) as u32, heads as u32, batch as u32);
    let per_query = Wgsl::new(
        BACKWARD,
        &[
            include_str!("../../../shaders/attention_backward_query.wgsl"),
            rotary_source,
        ],
        &values(d_head),
        ROWS as u32,
    );
    per_query.launch(
        &client,
        groups(seq_q),
        vec![
            qkv.handle.clone(),
            table.clone(),
            weights.handle.clone(),
            grad.handle.clone(),
            d_qkv.handle.clone(),
            scores.handle.clone(),
            info.clone(),
        ],
    );
    let per_key = Wgsl::new(
        BACKWARD_KEY,
        &[
            include_str!("../../../shaders/attention_backward_key.wgsl"),
            rotary_source,
        ],
        &values(d_head),
        ROWS as u32,
    );
    per_key.launch(
        &client,
        groups(seq),
        vec![
            qkv.handle.clone(),
            table,
            weights.handle.clone(),
            grad.handle.clone(),
            scores.handle.clone(),
            d_qkv.handle.clone(),
            info,
        ],
    );
    d_qkv
}
