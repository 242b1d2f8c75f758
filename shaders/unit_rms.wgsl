// Rows scaled to unit root-mean-square over the last axis, one workgroup per row:
//   y = x / r,  r = sqrt(mean(x²) + epsilon)
// (ARMT's memory rows before they write their store; crate::nn::associative::unit_rms). The
// rows are start..start + count of each sequence of n rows of x, read where they lie.
//
// Every binding is read_write, inputs too (see layer_norm.wgsl). Launched by
// src/ops/unit_rms/wgpu.rs. Dispatch: (min(rows, 65535), ceil(rows / 65535)), rows the
// output's (batch · count).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;    // [batch, n, d]
@group(0) @binding(1) var<storage, read_write> out: array<f32>;  // [batch, count, d]
@group(0) @binding(2) var<storage, read_write> info: array<u32>; // rows, d, epsilon, n, start, count

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
    let count = info[5];
    // The output's row `row` is row start + (row mod count) of sequence row / count.
    let source = ((row / count) * info[3] + info[4] + row % count) * d;
    let base = row * d;

    var squares = 0.0;
    for (var i = t; i < d; i += THREADS) {
        squares += x[source + i] * x[source + i];
    }
    let r = sqrt(workgroup_sum(t, squares) / f32(d) + epsilon);
    for (var i = t; i < d; i += THREADS) {
        out[base + i] = x[source + i] / r;
    }
}
