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
    let d_head = qkv.meta.shape()[2] / (3 * heads);
    wgsl::serves(qkv) && d_head <= MAX_D_HEAD && !wgsl::failed(NAME, &qkv.device)
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
        include_str!("../../../shaders/attention.wgsl"),
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
