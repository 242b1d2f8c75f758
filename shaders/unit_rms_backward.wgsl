// unit_rms.wgsl's backward, one workgroup per row: with y = x / r and g the output gradient,
//   dx = (g - y mean(g y)) / r.
//
// Every binding is read_write, inputs too (see layer_norm.wgsl). Launched by
// src/ops/unit_rms/wgpu.rs. Dispatch: (min(rows, 65535), ceil(rows / 65535)).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;    // [rows, d]
@group(0) @binding(1) var<storage, read_write> g: array<f32>;    // [rows, d]
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;   // [rows, d]
@group(0) @binding(3) var<storage, read_write> info: array<u32>; // rows, d, epsilon

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

    var squares = 0.0;
    for (var i = t; i < d; i += THREADS) {
        squares += x[base + i] * x[base + i];
    }
    let r = sqrt(workgroup_sum(t, squares) / n + epsilon);
    var sum_gy = 0.0;
    for (var i = t; i < d; i += THREADS) {
        sum_gy += g[base + i] * x[base + i] / r;
    }
    let mean_gy = workgroup_sum(t, sum_gy) / n;
    for (var i = t; i < d; i += THREADS) {
        dx[base + i] = (g[base + i] - x[base + i] / r * mean_gy) / r;
    }
}
