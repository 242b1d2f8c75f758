// Masked multi-head attention's backward, first pass: per query row, the query gradient and the
// score gradients. From the packed projection, the forward's weights P and the merged context's
// gradient dO, for query i of one (batch, head), with Q and K as the forward turned them:
//   dP_ij = dO_i · V_j,   delta_i = Σ_j P_ij dP_ij,   dS_ij = P_ij (dP_ij - delta_i) · scale,
//   dQ_i = Σ_j dS_ij K_j,
// turned back (`unturn` in attention_rotary.wgsl) when positions are rotary and written into the
// query columns of the packed gradient; dS goes to `scores` for the second pass
// (attention_backward_key.wgsl), which sums the key and value gradients per key row and writes
// the query columns of the rows that ask nothing (those before `first`). The mask needs no
// input: a blocked key has zero weight, so zero score gradient.
//
// The keys and values are staged in workgroup memory a tile of KEYS at a time, as in the
// forward (attention.wgsl); two walks over the tiles, the first for delta_i.
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/attention/wgpu.rs, which fills the placeholders (d_head, rows, keys, tile as in the
// forward). Dispatch: (ceil(seq_q / ROWS), heads, batch), seq_q = seq - first.

@group(0) @binding(0) var<storage, read_write> qkv: array<f32>;     // [batch, seq, 3 * heads * D]
@group(0) @binding(1) var<storage, read_write> rope: array<f32>;    // [positions, D, 2]: cos, sin
@group(0) @binding(2) var<storage, read_write> weights: array<f32>; // [batch, heads, seq_q, seq]
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;    // [batch, seq_q, heads * D]
@group(0) @binding(4) var<storage, read_write> d_qkv: array<f32>;   // [batch, seq, 3 * heads * D]
@group(0) @binding(5) var<storage, read_write> scores: array<f32>;  // [batch, heads, seq_q, seq]
@group(0) @binding(6) var<storage, read_write> info: array<u32>;    // batch, seq, heads, scale, first, rotary

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
    let first = info[4];
    let rotary = info[5] == 1u;
    let seq_q = seq - first;

    let h = group.y;
    let b = group.z;
    let qi = group.x * ROWS + t;
    let i = first + qi;
    let live = qi < seq_q;
    let width = 3u * heads * D;
    let first_row = b * seq;
    let p_row = ((b * heads + h) * seq_q + min(qi, seq_q - 1u)) * seq;

    // This row's context gradient, and its query gradient so far.
    var g: array<f32, D>;
    var dq: array<f32, D>;
    if live {
        let at = (b * seq_q + qi) * heads * D + h * D;
        for (var d = 0u; d < D; d++) {
            g[d] = grad[at + d];
            dq[d] = 0.0;
        }
    }

    // delta_i = Σ_j P_ij (dO_i · V_j).
    var delta = 0.0;
    for (var j0 = 0u; j0 < seq; j0 += KEYS) {
        for (var e = t; e < KEYS * D; e += ROWS) {
            let j = j0 + e / D;
            if j < seq {
                v_tile[e] = qkv[(first_row + j) * width + 2u * heads * D + h * D + e % D];
            }
        }
        workgroupBarrier();
        if live {
            let n = min(KEYS, seq - j0);
            for (var jj = 0u; jj < n; jj++) {
                let p = weights[p_row + j0 + jj];
                if p != 0.0 {
                    var dp = 0.0;
                    for (var d = 0u; d < D; d++) {
                        dp += g[d] * v_tile[jj * D + d];
                    }
                    delta += p * dp;
                }
            }
        }
        workgroupBarrier();
    }

    // dS_ij, and dQ_i = Σ_j dS_ij K_j.
    for (var j0 = 0u; j0 < seq; j0 += KEYS) {
        for (var e = t; e < KEYS * D; e += ROWS) {
            let j = j0 + e / D;
            let d = e % D;
            if j < seq {
                let at = (first_row + j) * width + h * D;
                let k = at + heads * D;
                k_tile[e] = turned(qkv[k + d], qkv[k + (d ^ 1u)], j, d, rotary);
                v_tile[e] = qkv[at + 2u * heads * D + d];
            }
        }
        workgroupBarrier();
        if live {
            let n = min(KEYS, seq - j0);
            for (var jj = 0u; jj < n; jj++) {
                let p = weights[p_row + j0 + jj];
                var ds = 0.0;
                if p != 0.0 {
                    var dp = 0.0;
                    for (var d = 0u; d < D; d++) {
                        dp += g[d] * v_tile[jj * D + d];
                    }
                    ds = p * (dp - delta) * scale;
                    for (var d = 0u; d < D; d++) {
                        dq[d] += ds * k_tile[jj * D + d];
                    }
                }
                scores[p_row + j0 + jj] = ds;
            }
        }
        workgroupBarrier();
    }

    if live {
        if rotary {
            unturn(&dq, i);
        }
        let at = (first_row + i) * width + h * D;
        for (var d = 0u; d < D; d++) {
            d_qkv[at + d] = dq[d];
        }
    }
}
