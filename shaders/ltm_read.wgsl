// The infinity-former's read of its long-term memory, in one dispatch: for each query row and
// head, the scores against the memory's N keys, the Gaussian's mean (a sigmoid of the scores'
// weighted sum) and variance (a softplus of another, at least min_variance), each basis
// function's expectation under it, N(mu; c_j, var + w_j^2), and the context, the values
// weighted by those expectations. One invocation per (batch, head, query row); two passes over
// the keys and values, nothing staged (N and the heads are small).
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/ltm_read/wgpu.rs, which fills d_head. Dispatch: (ceil(batch * heads * seq_q / 64)).

@group(0) @binding(0) var<storage, read_write> q: array<f32>;       // [batch, seq_q, heads * D]
@group(0) @binding(1) var<storage, read_write> kv: array<f32>;      // [batch, N, 2 * heads * D]
@group(0) @binding(2) var<storage, read_write> params: array<f32>;  // w_mu [N], b_mu, w_sigma [N], b_sigma, c [N], w^2 [N]
@group(0) @binding(3) var<storage, read_write> context: array<f32>; // [batch, seq_q, heads * D]
@group(0) @binding(4) var<storage, read_write> density: array<f32>; // [2, batch, heads, seq_q]: mean, variance
@group(0) @binding(5) var<storage, read_write> info: array<u32>;    // batch, seq_q, N, heads, scale, min_variance

const D: u32 = {{ d_head }}u;
const TWO_PI: f32 = 6.283185307179586;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let batch = info[0];
    let seq_q = info[1];
    let n = info[2];
    let heads = info[3];
    let scale = bitcast<f32>(info[4]);
    let min_variance = bitcast<f32>(info[5]);
    let row = id.x;
    if row >= batch * heads * seq_q {
        return;
    }
    // row = (b * heads + h) * seq_q + i, the density's order.
    let i = row % seq_q;
    let h = (row / seq_q) % heads;
    let b = row / (seq_q * heads);
    let width = heads * D;

    var qr: array<f32, {{ d_head }}>;
    let at = (b * seq_q + i) * width + h * D;
    for (var d = 0u; d < D; d++) {
        qr[d] = q[at + d];
    }

    // The scores' two weighted sums.
    var mu_in = params[n];
    var sigma_in = params[2u * n + 1u];
    for (var j = 0u; j < n; j++) {
        let key = (b * n + j) * 2u * width + h * D;
        var s = 0.0;
        for (var d = 0u; d < D; d++) {
            s += qr[d] * kv[key + d];
        }
        s = s * scale;
        mu_in += s * params[j];
        sigma_in += s * params[n + 1u + j];
    }
    let mu = 1.0 / (1.0 + exp(-mu_in));
    // Softplus without overflow: max(x, 0) + log(1 + exp(-|x|)).
    let softplus = max(sigma_in, 0.0) + log(1.0 + exp(-abs(sigma_in)));
    let variance = max(softplus, min_variance);
    density[row] = mu;
    density[batch * heads * seq_q + row] = variance;

    // The context: the values weighted by each basis function's expectation.
    var acc: array<f32, {{ d_head }}>;
    for (var d = 0u; d < D; d++) {
        acc[d] = 0.0;
    }
    for (var j = 0u; j < n; j++) {
        let v = variance + params[3u * n + 2u + j];
        let x = mu - params[2u * n + 2u + j];
        let r = exp(x * x / (-2.0 * v)) / sqrt(v * TWO_PI);
        let value = (b * n + j) * 2u * width + width + h * D;
        for (var d = 0u; d < D; d++) {
            acc[d] += r * kv[value + d];
        }
    }
    for (var d = 0u; d < D; d++) {
        context[at + d] = acc[d];
    }
}
