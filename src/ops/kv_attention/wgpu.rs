//! The wgpu launcher of `shaders/kv_attention.wgsl`: attention from query rows to keys and values
//! given apart, rotary positions applied in the kernel, in one dispatch.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;
use burn::prelude::Shape;

use crate::ops::wgsl::{self, Wgsl};

/// Query rows per workgroup (the workgroup size).
const ROWS: usize = 64;
/// Keys staged per tile: `2 · KEYS · d_head` floats of workgroup memory, 16 KiB at the widest
/// head, WebGPU's guaranteed minimum.
const KEYS: usize = 16;
/// The widest head the kernel takes: the query and the accumulator live in registers.
const MAX_D_HEAD: usize = 128;

/// The kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::kv_attention";

/// Whether the kernel serves `q` `[batch, seq_q, heads · d_head]`: `f32` on wgpu, a head no
/// wider than [`MAX_D_HEAD`] (and even, for rotary pairs), and the check on this device passed
/// (or has not run: the check itself calls here).
pub(super) fn serves(q: &CubeTensor, heads: usize) -> bool {
    let [_, seq_q, width] = q.shape().dims::<3>();
    let d_head = width / heads;
    wgsl::serves(q)
        && seq_q > 0
        && d_head <= MAX_D_HEAD
        && d_head.is_multiple_of(2)
        && !wgsl::failed(NAME, &q.device)
}

/// The merged context `[batch, seq_q, heads · d_head]`. `rope` is the rotary table `[positions,
/// d_head, 2]` with the queries' first position when positions are rotary.
pub(super) fn kv_attention(
    q: CubeTensor,
    kv: CubeTensor,
    bias: CubeTensor,
    rope: Option<(CubeTensor, usize)>,
    heads: usize,
    scale: f64,
) -> CubeTensor {
    let [q, kv, bias] = [q, kv, bias].map(burn_cubecl::kernel::into_contiguous);
    let [batch, seq_q, width] = q.shape().dims::<3>();
    let seq_k = kv.shape()[1];
    let d_head = width / heads;
    let context = wgsl::empty_like(&q, Shape::new([batch, seq_q, width]));
    let client = q.client.clone();
    let rotary = rope.is_some();
    let (table, query_start) = match rope {
        Some((table, start)) => (burn_cubecl::kernel::into_contiguous(table).handle, start),
        // Bound, never read: a buffer of its own (WebGPU refuses a buffer bound twice where one
        // binding is writable).
        None => (wgsl::info(&client, &[0]), 0),
    };
    let info = wgsl::info(
        &client,
        &[
            batch as u32,
            seq_q as u32,
            seq_k as u32,
            heads as u32,
            (scale as f32).to_bits(),
            u32::from(rotary),
            query_start as u32,
        ],
    );
    let kernel = Wgsl::new(
        NAME,
        &[
            include_str!("../../../shaders/kv_attention.wgsl"),
            include_str!("../../../shaders/online_softmax.wgsl"),
            include_str!("../../../shaders/attention_rotary.wgsl"),
        ],
        &[
            ("d_head", d_head),
            ("rows", ROWS),
            ("keys", KEYS),
            ("tile", KEYS * d_head),
        ],
        ROWS as u32,
    );
    let count = CubeCount::Static(seq_q.div_ceil(ROWS) as u32, heads as u32, batch as u32);
    kernel.launch(
        &client,
        count,
        vec![
            q.handle.clone(),
            kv.handle.clone(),
            bias.handle.clone(),
            table,
            context.handle.clone(),
            info,
        ],
    );
    context
}
