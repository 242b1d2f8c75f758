// The gradient of ltm_read.wgsl's context with respect to the queries, from each query row: it
// recomputes the row's scores s_j, Gaussian (mu, var) and expectations r_j, then with the
// context's gradient g takes dr_j = g . v_j back through r to the mean and the variance, through
// the sigmoid and the softplus to their inputs (da, dc), to each score (e_j = da w_mu_j +
// dc w_sigma_j), and writes the query's gradient scale * sum_j e_j k_j. It keeps s, e, r, da
// and dc per row in `scratch` for ltm_read_params_backward.wgsl, which sums them into the keys',
// the values' and the parameters' gradients. One invocation per (batch, head, query row).
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/ltm_read/wgpu.rs, which fills d_head. Dispatch: ceil(batch * heads * seq_q / 64)
// invocations over the first two axes.

@group(0) @binding(0) var<storage, read_write> q: array<f32>;       // [batch, seq_q, heads * D]
@group(0) @binding(1) var<storage, read_write> kv: array<f32>;      // [batch, N, 2 * heads * D]
@group(0) @binding(2) var<storage, read_write> params: array<f32>;  // w_mu [N], b_mu, w_sigma [N], b_sigma, c [N], w^2 [N]
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;    // [batch, seq_q, heads * D]
@group(0) @binding(4) var<storage, read_write> dq: array<f32>;      // [batch, seq_q, heads * D]
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>; // per row: s [N], e [N], r [N], da, dc
@group(0) @binding(6) var<storage, read_write> info: array<u32>;    // batch, seq_q, N, heads, scale, min_variance

const D: u32 = {{ d_head }}u;
const TWO_PI: f32 = 6.283185307179586;

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
    let min_variance = bitcast<f32>(info[5]);
    let row = (group.y * groups.x + group.x) * 64u + t;
    if row >= batch * heads * seq_q {
        return;
    }
    // row = (b * heads + h) * seq_q + i, the density's order.
    let i = row % seq_q;
    let h = (row / seq_q) % heads;
    let b = row / (seq_q * heads);
    let width = heads * D;
    let at = (b * seq_q + i) * width + h * D;
    let kept = row * (3u * n + 2u);

    var qr: array<f32, {{ d_head }}>;
    var gr: array<f32, {{ d_head }}>;
    for (var d = 0u; d < D; d++) {
        qr[d] = q[at + d];
        gr[d] = grad[at + d];
    }

    // The scores and their two weighted sums, as the forward.
    var mu_in = params[n];
    var sigma_in = params[2u * n + 1u];
    for (var j = 0u; j < n; j++) {
        let key = (b * n + j) * 2u * width + h * D;
        var s = 0.0;
        for (var d = 0u; d < D; d++) {
            s += qr[d] * kv[key + d];
        }
        s = s * scale;
        scratch[kept + j] = s;
        mu_in += s * params[j];
        sigma_in += s * params[n + 1u + j];
    }
    let mu = 1.0 / (1.0 + exp(-mu_in));
    let softplus = max(sigma_in, 0.0) + log(1.0 + exp(-abs(sigma_in)));
    let variance = max(softplus, min_variance);

    // Each expectation, and the context's gradient back to the mean and the variance.
    var dmu = 0.0;
    var dvar = 0.0;
    for (var j = 0u; j < n; j++) {
        let v = variance + params[3u * n + 2u + j];
        let x = mu - params[2u * n + 2u + j];
        let r = exp(x * x / (-2.0 * v)) / sqrt(v * TWO_PI);
        scratch[kept + 2u * n + j] = r;
        let value = (b * n + j) * 2u * width + width + h * D;
        var dr = 0.0;
        for (var d = 0u; d < D; d++) {
            dr += gr[d] * kv[value + d];
        }
        dmu += dr * r * (-x / v);
        dvar += dr * r * (x * x / (2.0 * v * v) - 0.5 / v);
    }
    // Through the sigmoid, and the softplus (whose slope is the sigmoid) where the variance
    // is above its floor.
    let da = dmu * mu * (1.0 - mu);
    var dc = 0.0;
    if softplus >= min_variance {
        dc = dvar / (1.0 + exp(-sigma_in));
    }
    scratch[kept + 3u * n] = da;
    scratch[kept + 3u * n + 1u] = dc;

    // Each score's gradient, and the query's.
    var acc: array<f32, {{ d_head }}>;
    for (var d = 0u; d < D; d++) {
        acc[d] = 0.0;
    }
    for (var j = 0u; j < n; j++) {
        let e = da * params[j] + dc * params[n + 1u + j];
        scratch[kept + n + j] = e;
        let key = (b * n + j) * 2u * width + h * D;
        for (var d = 0u; d < D; d++) {
            acc[d] += e * kv[key + d];
        }
    }
    for (var d = 0u; d < D; d++) {
        dq[at + d] = scale * acc[d];
    }
}
