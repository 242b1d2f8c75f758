// Masked multi-head attention over a packed [query | key | value] projection, in one dispatch:
// the scores, the mask, the softmax and the weighted sum of the values, with the heads read
// where they lie in the packed rows and the context written with its heads merged.
//
// Every row is a key and a value; the queries are the rows from `first` on (info[5]; 0 for
// self-attention, the cache's length for Transformer-XL's [cache | segment], whose cached rows
// are keys only). With rotary positions (info[6] == 1) each query and key turns to its row's
// position as it is read (`turned` in attention_rotary.wgsl, which the launcher appends).
//
// Flash-style: each workgroup holds ROWS query rows of one (batch, head) and walks the keys in
// tiles of KEYS, staged in workgroup memory, with an online softmax (running maximum `m`,
// running sum `l`; `tile_scores` and `fold_scores` in online_softmax.wgsl, which the launcher
// appends), so the [seq_q, seq] scores never exist in memory. When asked (`info[4] == 1`),
// the weights are written out too (the page draws them; training keeps them for the
// backward): each tile's raw scores as they are computed, then, once the row's maximum and sum
// are known, the row normalised in place (no second walk over the keys).
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
// Dispatch: (ceil(seq_q / ROWS), heads, batch), seq_q = seq - first.

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;     // [batch, seq, 3 * heads * D]
@group(0) @binding(1) var<storage, read_write> bias: array<f32>;    // [seq_q, seq], 0 or very negative
@group(0) @binding(2) var<storage, read_write> rope: array<f32>;    // [positions, D, 2]: cos, sin
@group(0) @binding(3) var<storage, read_write> context: array<f32>; // [batch, seq_q, heads * D]
@group(0) @binding(4) var<storage, read_write> weights: array<f32>; // [batch, heads, seq_q, seq]
@group(0) @binding(5) var<storage, read_write> info: array<u32>;    // batch, seq, heads, scale, weights?, first, rotary

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
    let first = info[5];
    let rotary = info[6] == 1u;
    let seq_q = seq - first;

    let h = group.y;
    let b = group.z;
    let qi = group.x * ROWS + t;
    let i = first + qi;
    let live = qi < seq_q;
    let width = 3u * heads * D;
    let first_row = b * seq;
    // This row's weights, when asked for (the binding is one element otherwise).
    let weights_row = ((b * heads + h) * seq_q + min(qi, seq_q - 1u)) * seq;

    // This row's query, turned and scaled once.
    var q: array<f32, D>;
    var acc: array<f32, D>;
    if live {
        let at = (first_row + i) * width + h * D;
        for (var d = 0u; d < D; d++) {
            q[d] = turned(qkv[at + d], qkv[at + (d ^ 1u)], i, d, rotary) * scale;
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
                let at = (first_row + j) * width + h * D;
                let k = at + heads * D;
                k_tile[e] = turned(qkv[k + d], qkv[k + (d ^ 1u)], j, d, rotary);
                v_tile[e] = qkv[at + 2u * heads * D + d];
            } else {
                // The last tile's padding: zeros, which fold_tile weighs by nothing.
                k_tile[e] = 0.0;
                v_tile[e] = 0.0;
            }
        }
        workgroupBarrier();
        if live {
            let n = min(KEYS, seq - j0);
            var s = tile_scores(&q, qi * seq + j0, n);
            if write_weights {
                // The raw scores for now; normalised below, once the row's maximum and sum
                // are known.
                for (var jj = 0u; jj < n; jj++) {
                    weights[weights_row + j0 + jj] = s[jj];
                }
            }
            fold_scores(&s, &acc, &run, n);
        }
        workgroupBarrier();
    }

    if !live {
        return;
    }
    let out = (b * seq_q + qi) * heads * D + h * D;
    for (var d = 0u; d < D; d++) {
        context[out + d] = acc[d] / run.l;
    }
    if write_weights {
        for (var j = 0u; j < seq; j++) {
            weights[weights_row + j] = exp(weights[weights_row + j] - run.m) / run.l;
        }
    }
}
