// Layer norm's backward over the last axis, first pass: one workgroup per row. From the input
// x, the scale gamma and the output gradient g, with x̂ = (x - mean) rstd and h = g gamma:
//   dx = rstd (h - mean(h) - x̂ mean(h x̂)),
// and the row's mean and rstd for the second pass (layer_norm_params_backward.wgsl), which
// sums the scale and shift gradients over rows.
//
// Every binding is read_write, inputs too (see layer_norm.wgsl). Launched by
// src/ops/layer_norm/wgpu.rs. Dispatch: (min(rows, 65535), ceil(rows / 65535)).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;     // [rows, d]
@group(0) @binding(1) var<storage, read_write> gamma: array<f32>; // [d]
@group(0) @binding(2) var<storage, read_write> g: array<f32>;     // [rows, d]
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;    // [rows, d]
@group(0) @binding(4) var<storage, read_write> stats: array<f32>; // [rows, 2]: mean, rstd
@group(0) @binding(5) var<storage, read_write> info: array<u32>;  // rows, d, epsilon

// THREADS and workgroup_sum come from workgroup_sum.wgsl, row_sizes from row_sizes.wgsl, which
// the launcher puts first.

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let sizes = row_sizes(t);
    let rows = sizes.x;
    let d = sizes.y;
    let row = group.y * groups.x + group.x;
    if row >= rows {
        return;
    }
    let epsilon = bitcast<f32>(info[2]);
    let base = row * d;
    let n = f32(d);

    var sum = 0.0;
    for (var i = t; i < d; i += THREADS) {
        sum += x[base + i];
    }
    let mean = workgroup_sum(t, sum) / n;
    var squares = 0.0;
    for (var i = t; i < d; i += THREADS) {
        let c = x[base + i] - mean;
        squares += c * c;
    }
    let rstd = 1.0 / sqrt(workgroup_sum(t, squares) / n + epsilon);

    var sum_h = 0.0;
    var sum_hx = 0.0;
    for (var i = t; i < d; i += THREADS) {
        let h = g[base + i] * gamma[i];
        sum_h += h;
        sum_hx += h * (x[base + i] - mean) * rstd;
    }
    let mean_h = workgroup_sum(t, sum_h) / n;
    let mean_hx = workgroup_sum(t, sum_hx) / n;
    for (var i = t; i < d; i += THREADS) {
        let h = g[base + i] * gamma[i];
        let x_hat = (x[base + i] - mean) * rstd;
        dx[base + i] = rstd * (h - mean_h - x_hat * mean_hx);
    }
    if t == 0u {
        stats[2u * row] = mean;
        stats[2u * row + 1u] = rstd;
    }
}
