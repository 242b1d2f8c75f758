// Masked multi-head attention from query rows to keys and values given apart, in one dispatch:
// Transformer-XL and the infinity-former attend from a segment's rows over [cache | segment].
// Rotary positions, when asked for (`info[5] == 1`), are applied inside the kernel as each query
// and key is read (`turned` in attention_rotary.wgsl, which the launcher appends); queries sit at
// positions query_start.., keys at 0...
//
// Flash-style as attention.wgsl: each workgroup holds ROWS query rows of one (batch, head) and
// walks the keys in tiles of KEYS, staged in workgroup memory, with an online softmax
// (`fold_tile` in online_softmax.wgsl, which the launcher appends), so the [seq_q, seq_k] scores
// never exist in memory.
//
// Every binding is read_write, inputs too (see attention.wgsl). The key count bounds the loop
// that holds barriers, so it is read through workgroupUniformLoad.
//
// Launched by src/ops/kv_attention/wgpu.rs, which fills the placeholders (names in double
// braces): d_head, rows (the workgroup size), keys (keys per tile), tile (keys * d_head).
// Dispatch: (ceil(seq_q / ROWS), heads, batch).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;       // [batch, seq_q, heads * D]
@group(0) @binding(1) var<storage, read_write> kv: array<f32>;      // [batch, seq_k, 2 * heads * D]
@group(0) @binding(2) var<storage, read_write> bias: array<f32>;    // [seq_q, seq_k], 0 or very negative
@group(0) @binding(3) var<storage, read_write> rope: array<f32>;    // [positions, D, 2]: cos, sin
@group(0) @binding(4) var<storage, read_write> context: array<f32>; // [batch, seq_q, heads * D]
@group(0) @binding(5) var<storage, read_write> info: array<u32>;    // batch, seq_q, seq_k, heads, scale, rotary, query_start

const D: u32 = {{ d_head }}u;
const ROWS: u32 = {{ rows }}u;
const KEYS: u32 = {{ keys }}u;

var<workgroup> k_tile: array<f32, {{ tile }}>;
var<workgroup> v_tile: array<f32, {{ tile }}>;
var<workgroup> shared_seq_k: u32;

@compute @workgroup_size({{ rows }})
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    if t == 0u {
        shared_seq_k = info[2];
    }
    let seq_k = workgroupUniformLoad(&shared_seq_k);
    let seq_q = info[1];
    let heads = info[3];
    let scale = bitcast<f32>(info[4]);
    let rotary = info[5] == 1u;
    let query_start = info[6];

    let h = group.y;
    let b = group.z;
    let i = group.x * ROWS + t;
    let live = i < seq_q;
    let width = heads * D;

    // This row's query, turned to its position and scaled once.
    var qr: array<f32, D>;
    var acc: array<f32, D>;
    if live {
        let at = (b * seq_q + i) * width + h * D;
        for (var d = 0u; d < D; d++) {
            qr[d] = turned(q[at + d], q[at + (d ^ 1u)], query_start + i, d, rotary) * scale;
            acc[d] = 0.0;
        }
    }
    var run = Running(-3.0e38, 0.0);

    for (var j0 = 0u; j0 < seq_k; j0 += KEYS) {
        // Every invocation helps stage the tile, live or not: barriers need uniform control.
        for (var e = t; e < KEYS * D; e += ROWS) {
            let j = j0 + e / D;
            let d = e % D;
            if j < seq_k {
                let at = (b * seq_k + j) * 2u * width + h * D;
                k_tile[e] = turned(kv[at + d], kv[at + (d ^ 1u)], j, d, rotary);
                v_tile[e] = kv[at + width + d];
            } else {
                // The last tile's padding: zeros, which fold_tile weighs by nothing.
                k_tile[e] = 0.0;
                v_tile[e] = 0.0;
            }
        }
        workgroupBarrier();
        if live {
            fold_tile(&qr, &acc, &run, i * seq_k + j0, min(KEYS, seq_k - j0));
        }
        workgroupBarrier();
    }

    if !live {
        return;
    }
    let out = (b * seq_q + i) * width + h * D;
    for (var d = 0u; d < D; d++) {
        context[out + d] = acc[d] / run.l;
    }
}
