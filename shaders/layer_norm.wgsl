// Layer norm over the last axis, one workgroup per row: the mean, then the variance of the
// centred values (two passes, as the reference computes it), then scale and shift; in
// training also each row's mean and reciprocal deviation (STATS).
//
// Every binding is read_write, inputs too: the runtime pools tensors in shared wgpu buffers, and
// one buffer bound both read-only and writable in a dispatch is a validation error.
//
// Launched by src/ops/layer_norm/wgpu.rs. Dispatch: (min(rows, 65535), ceil(rows / 65535)).
// The row count and width are read through workgroupUniformLoad: the row guard and the
// reductions' barriers need uniform control flow.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;     // [rows, d]
@group(0) @binding(1) var<storage, read_write> gamma: array<f32>; // [d]
@group(0) @binding(2) var<storage, read_write> beta: array<f32>;  // [d]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;   // [rows, d]
@group(0) @binding(4) var<storage, read_write> stats: array<f32>; // [rows, 2] with STATS
@group(0) @binding(5) var<storage, read_write> info: array<u32>;  // rows, d, epsilon

// In training each row's mean and reciprocal deviation are kept for the backward
// (layer_norm_backward.wgsl), which then needs no pass of its own to find them.
const STATS: bool = {{ stats }}u == 1u;

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

    var sum = 0.0;
    for (var i = t; i < d; i += THREADS) {
        sum += x[base + i];
    }
    let mean = workgroup_sum(t, sum) / f32(d);
    var squares = 0.0;
    for (var i = t; i < d; i += THREADS) {
        let c = x[base + i] - mean;
        squares += c * c;
    }
    let deviation = sqrt(workgroup_sum(t, squares) / f32(d) + epsilon);
    for (var i = t; i < d; i += THREADS) {
        out[base + i] = (x[base + i] - mean) / deviation * gamma[i] + beta[i];
    }
    if STATS && t == 0u {
        stats[2u * row] = mean;
        stats[2u * row + 1u] = 1.0 / deviation;
    }
}
