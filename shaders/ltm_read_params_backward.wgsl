// The gradients of ltm_read.wgsl's keys, values and parameters from what
// ltm_read_backward.wgsl kept per query row (scores s, score gradients e, expectations r and
// the gradients da, dc of the mean's and the variance's inputs), in one dispatch: invocations
// [0, batch heads N) each write one key's and one value's gradient for one head,
//   dk_j = scale * sum_i e_ij q_i,   dv_j = sum_i r_ij g_i   (over the head's query rows i),
// the next 4 N + 2 one parameter's,
//   dw_mu_j = sum_rows da s_j,  db_mu = sum_rows da,  dw_sigma_j = sum_rows dc s_j,
//   db_sigma = sum_rows dc,  and 0 for the basis's centres and widths (not trained).
// Each sums in a fixed order.
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/ltm_read/wgpu.rs, which fills d_head. Dispatch: ceil((batch heads N + 4 N + 2) / 64)
// invocations over the first two axes.

@group(0) @binding(0) var<storage, read_write> q: array<f32>;       // [batch, seq_q, heads * D]
@group(0) @binding(1) var<storage, read_write> grad: array<f32>;    // [batch, seq_q, heads * D]
@group(0) @binding(2) var<storage, read_write> scratch: array<f32>; // per row: s [N], e [N], r [N], da, dc
@group(0) @binding(3) var<storage, read_write> dkv: array<f32>;     // [batch, N, 2 * heads * D]
@group(0) @binding(4) var<storage, read_write> dparams: array<f32>; // [4 N + 2]
@group(0) @binding(5) var<storage, read_write> info: array<u32>;    // batch, seq_q, N, heads, scale, min_variance

const D: u32 = {{ d_head }}u;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let batch = info[0];
    let seq_q = info[1];
    let n = info[2];
    let heads = info[3];
    let scale = bitcast<f32>(info[4]);
    let width = heads * D;
    let per_row = 3u * n + 2u;
    var idx = (group.y * groups.x + group.x) * 64u + t;
    if idx < batch * heads * n {
        // idx = (b * heads + h) * n + j
        let j = idx % n;
        let h = (idx / n) % heads;
        let b = idx / (n * heads);
        var dk: array<f32, {{ d_head }}>;
        var dv: array<f32, {{ d_head }}>;
        for (var d = 0u; d < D; d++) {
            dk[d] = 0.0;
            dv[d] = 0.0;
        }
        for (var i = 0u; i < seq_q; i++) {
            let kept = ((b * heads + h) * seq_q + i) * per_row;
            let e = scratch[kept + n + j];
            let r = scratch[kept + 2u * n + j];
            let at = (b * seq_q + i) * width + h * D;
            for (var d = 0u; d < D; d++) {
                dk[d] += e * q[at + d];
                dv[d] += r * grad[at + d];
            }
        }
        let key = (b * n + j) * 2u * width + h * D;
        for (var d = 0u; d < D; d++) {
            dkv[key + d] = scale * dk[d];
            dkv[key + width + d] = dv[d];
        }
        return;
    }
    idx -= batch * heads * n;
    if idx >= 4u * n + 2u {
        return;
    }
    let rows = batch * heads * seq_q;
    var sum = 0.0;
    if idx < n {
        for (var row = 0u; row < rows; row++) {
            sum += scratch[row * per_row + 3u * n] * scratch[row * per_row + idx];
        }
    } else if idx == n {
        for (var row = 0u; row < rows; row++) {
            sum += scratch[row * per_row + 3u * n];
        }
    } else if idx < 2u * n + 1u {
        let j = idx - n - 1u;
        for (var row = 0u; row < rows; row++) {
            sum += scratch[row * per_row + 3u * n + 1u] * scratch[row * per_row + j];
        }
    } else if idx == 2u * n + 1u {
        for (var row = 0u; row < rows; row++) {
            sum += scratch[row * per_row + 3u * n + 1u];
        }
    }
    dparams[idx] = sum;
}
