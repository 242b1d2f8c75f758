// Rows scaled to unit root-mean-square over the last axis, one workgroup per row:
//   y = x / r,  r = sqrt(mean(x²) + epsilon)
// (ARMT's memory rows before they write their store; crate::nn::associative::unit_rms).
//
// Every binding is read_write, inputs too (see layer_norm.wgsl). Launched by
// src/ops/unit_rms/wgpu.rs. Dispatch: (min(rows, 65535), ceil(rows / 65535)).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;    // [rows, d]
@group(0) @binding(1) var<storage, read_write> out: array<f32>;  // [rows, d]
@group(0) @binding(2) var<storage, read_write> info: array<u32>; // rows, d, epsilon

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

    var squares = 0.0;
    for (var i = t; i < d; i += THREADS) {
        squares += x[base + i] * x[base + i];
    }
    let r = sqrt(workgroup_sum(t, squares) / f32(d) + epsilon);
    for (var i = t; i < d; i += THREADS) {
        out[base + i] = x[base + i] / r;
    }
}
