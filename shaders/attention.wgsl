// Masked multi-head self-attention over a packed [query | key | value] projection, in one
// dispatch: the scores, the mask, the softmax and the weighted sum of the values, with the heads
// read where they lie in the packed rows and the context written with its heads merged.
//
// Flash-style: each workgroup holds ROWS query rows of one (batch, head) and walks the keys in
// tiles of KEYS, staged in workgroup memory, with an online softmax (running maximum `m`, running
// sum `l`; `fold_tile` in online_softmax.wgsl, which the launcher appends), so the [seq, seq]
// scores never exist in memory. When asked (`info[4] == 1`), a second pass writes the weights
// out for the visualisation.
//
// Every binding is read_write, inputs too: the runtime pools tensors in shared wgpu buffers, and
// one buffer bound both read-only and writable in a dispatch is a validation error.
//
// Launched by src/ops/attention/wgpu.rs, which fills the placeholders (names in double braces):
//   d_head  head width (the query and accumulator live in registers)
//   rows    query rows per workgroup (the workgroup size)
//   keys    keys per tile (KEYS * d_head * 8 bytes of workgroup memory)
//   tile    KEYS * d_head
//
// The loop over key tiles holds barriers, so its bound must be uniform: the sequence length is
// read through workgroupUniformLoad (browsers' WGSL compilers check this; reads of a storage
// buffer count as non-uniform).
// Dispatch: (ceil(seq / ROWS), heads, batch).

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;           // [batch, seq, 3 * heads * D]
@group(0) @binding(1) var<storage, read_write> bias: array<f32>;          // [seq, seq], 0 or very negative
@group(0) @binding(2) var<storage, read_write> context: array<f32>; // [batch, seq, heads * D]
@group(0) @binding(3) var<storage, read_write> weights: array<f32>; // [batch, heads, seq, seq]
@group(0) @binding(4) var<storage, read_write> info: array<u32>;          // batch, seq, heads, scale, weights?

const D: u32 = {{ d_head }}u;
const ROWS: u32 = {{ rows }}u;
const KEYS: u32 = {{ keys }}u;

var<workgroup> k_tile: array<f32, {{ tile }}>;
var<workgroup> v_tile: array<f32, {{ tile }}>;
var<workgroup> shared_seq: u32;

@compute @workgroup_size({{ rows }})
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    if t == 0u {
        shared_seq = info[1];
    }
    let seq = workgroupUniformLoad(&shared_seq);
    let heads = info[2];
    let scale = bitcast<f32>(info[3]);
    let write_weights = info[4] == 1u;

    let h = group.y;
    let b = group.z;
    let i = group.x * ROWS + t;
    let live = i < seq;
    let width = 3u * heads * D;
    let first_row = b * seq;

    // This row's query, scaled once.
    var q: array<f32, D>;
    var acc: array<f32, D>;
    if live {
        let at = (first_row + i) * width + h * D;
        for (var d = 0u; d < D; d++) {
            q[d] = qkv[at + d] * scale;
            acc[d] = 0.0;
        }
    }
    var run = Running(-3.0e38, 0.0);

    for (var j0 = 0u; j0 < seq; j0 += KEYS) {
        // Every invocation helps stage the tile, live or not: barriers need uniform control.
        for (var e = t; e < KEYS * D; e += ROWS) {
            let j = j0 + e / D;
            let d = e % D;
            if j < seq {
                let at = (first_row + j) * width + h * D + d;
                k_tile[e] = qkv[at + heads * D];
                v_tile[e] = qkv[at + 2u * heads * D];
            }
        }
        workgroupBarrier();
        if live {
            fold_tile(&q, &acc, &run, i * seq + j0, min(KEYS, seq - j0));
        }
        workgroupBarrier();
    }

    if !live {
        return;
    }
    let out = (first_row + i) * heads * D + h * D;
    for (var d = 0u; d < D; d++) {
        context[out + d] = acc[d] / run.l;
    }
    if write_weights {
        let row = ((b * heads + h) * seq + i) * seq;
        for (var j = 0u; j < seq; j++) {
            let at = (first_row + j) * width + heads * D + h * D;
            var s = bias[i * seq + j];
            for (var d = 0u; d < D; d++) {
                s += q[d] * qkv[at + d];
            }
            weights[row + j] = exp(s - run.m) / run.l;
        }
    }
}
