// Layer norm's backward over the last axis, in one dispatch, from the mean and reciprocal
// deviation of each row that the forward kept (layer_norm.wgsl with STATS). With
// x̂ = (x - mean) rstd and h = g gamma:
//   workgroups [0, rows), one per row:     dx = rstd (h - mean(h) - x̂ mean(h x̂));
//   workgroups [rows, rows + d), one per column:
//     dgamma[j] = Σ_rows g[r, j] x̂[r, j],  dbeta[j] = Σ_rows g[r, j],
//   its invocations taking every 64th row and summing in a fixed order (the same numbers on
//   every run).
//
// Every binding is read_write, inputs too (see layer_norm.wgsl). Launched by
// src/ops/layer_norm/wgpu.rs. Dispatch: (min(rows + d, 65535), ceil((rows + d) / 65535)).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;      // [rows, d]
@group(0) @binding(1) var<storage, read_write> gamma: array<f32>;  // [d]
@group(0) @binding(2) var<storage, read_write> g: array<f32>;      // [rows, d]
@group(0) @binding(3) var<storage, read_write> stats: array<f32>;  // [rows, 2]: mean, rstd
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;     // [rows, d]
@group(0) @binding(5) var<storage, read_write> dgamma: array<f32>; // [d]
@group(0) @binding(6) var<storage, read_write> dbeta: array<f32>;  // [d]
@group(0) @binding(7) var<storage, read_write> info: array<u32>;   // rows, d

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
    let w = group.y * groups.x + group.x;
    if w < rows {
        // The input gradient of row w.
        let base = w * d;
        let n = f32(d);
        let mean = stats[2u * w];
        let rstd = stats[2u * w + 1u];
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
        return;
    }
    // The scale and shift gradients of column w - rows.
    let column = w - rows;
    if column >= d {
        return;
    }
    var scale = 0.0;
    var shift = 0.0;
    for (var r = t; r < rows; r += THREADS) {
        let grad = g[r * d + column];
        scale += grad * (x[r * d + column] - stats[2u * r]) * stats[2u * r + 1u];
        shift += grad;
    }
    let total_scale = workgroup_sum(t, scale);
    let total_shift = workgroup_sum(t, shift);
    if t == 0u {
        dgamma[column] = total_scale;
        dbeta[column] = total_shift;
    }
}
