// Masked multi-head attention's backward, second pass: per key row, the key and value
// gradients. For key row j of one (batch, head), from the forward's weights P, the score
// gradients dS of the first pass (attention_backward_query.wgsl), the queries as the forward
// turned them and the merged context's gradient dO:
//   dK_j = Σ_i dS_ij Q_i,   dV_j = Σ_i P_ij dO_i,
// dK turned back when positions are rotary (`unturn` in attention_rotary.wgsl), written into the
// key and value columns of the packed gradient (the first pass wrote the query columns of the
// rows that ask; rows before `first` ask nothing, and their query columns get zeros here). The
// sums run over the queries in order, a tile of KEYS queries at a time staged in workgroup
// memory.
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/attention/wgpu.rs (placeholders as in the first pass).
// Dispatch: (ceil(seq / ROWS), heads, batch).

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;     // [batch, seq, 3 * heads * D]
@group(0) @binding(1) var<storage, read_write> rope: array<f32>;    // [positions, D, 2]: cos, sin
@group(0) @binding(2) var<storage, read_write> weights: array<f32>; // [batch, heads, seq_q, seq]
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;    // [batch, seq_q, heads * D]
@group(0) @binding(4) var<storage, read_write> scores: array<f32>;  // [batch, heads, seq_q, seq]
@group(0) @binding(5) var<storage, read_write> d_qkv: array<f32>;   // [batch, seq, 3 * heads * D]
@group(0) @binding(6) var<storage, read_write> info: array<u32>;    // batch, seq, heads, scale, first, rotary

const D: u32 = {{ d_head }}u;
const ROWS: u32 = {{ rows }}u;
const KEYS: u32 = {{ keys }}u;

var<workgroup> q_tile: array<f32, {{ tile }}>;
var<workgroup> g_tile: array<f32, {{ tile }}>;
var<workgroup> shared_seq: u32;
var<workgroup> shared_seq_q: u32;

@compute @workgroup_size({{ rows }})
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    if t == 0u {
        shared_seq = info[1];
        shared_seq_q = info[1] - info[4];
    }
    let seq = workgroupUniformLoad(&shared_seq);
    let seq_q = workgroupUniformLoad(&shared_seq_q);
    let heads = info[2];
    let first = info[4];
    let rotary = info[5] == 1u;

    let h = group.y;
    let b = group.z;
    let j = group.x * ROWS + t;
    let live = j < seq;
    let width = 3u * heads * D;
    let first_row = b * seq;
    let first_p = (b * heads + h) * seq_q * seq;

    var dk: array<f32, D>;
    var dv: array<f32, D>;
    for (var d = 0u; d < D; d++) {
        dk[d] = 0.0;
        dv[d] = 0.0;
    }

    for (var i0 = 0u; i0 < seq_q; i0 += KEYS) {
        for (var e = t; e < KEYS * D; e += ROWS) {
            let i = i0 + e / D;
            let d = e % D;
            if i < seq_q {
                let at = (first_row + first + i) * width + h * D;
                q_tile[e] = turned(qkv[at + d], qkv[at + (d ^ 1u)], first + i, d, rotary);
                g_tile[e] = grad[(b * seq_q + i) * heads * D + h * D + d];
            }
        }
        workgroupBarrier();
        if live {
            let n = min(KEYS, seq_q - i0);
            for (var ii = 0u; ii < n; ii++) {
                let at = first_p + (i0 + ii) * seq + j;
                let p = weights[at];
                let ds = scores[at];
                for (var d = 0u; d < D; d++) {
                    dv[d] += p * g_tile[ii * D + d];
                    dk[d] += ds * q_tile[ii * D + d];
                }
            }
        }
        workgroupBarrier();
    }

    if live {
        if rotary {
            unturn(&dk, j);
        }
        let at = (first_row + j) * width + h * D;
        for (var d = 0u; d < D; d++) {
            d_qkv[at + heads * D + d] = dk[d];
            d_qkv[at + 2u * heads * D + d] = dv[d];
            if j < first {
                d_qkv[at + d] = 0.0;
            }
        }
    }
}
