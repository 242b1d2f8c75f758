// unit_rms.wgsl's backward, one workgroup per row of x: with y = x / r and g the output
// gradient,
//   dx = (g - y mean(g y)) / r
// on the rows start..start + count of each sequence of n rows that the forward read, and zero
// on the others (the whole gradient of x in one dispatch).
//
// Every binding is read_write, inputs too (see layer_norm.wgsl). Launched by
// src/ops/unit_rms/wgpu.rs. Dispatch: (min(rows, 65535), ceil(rows / 65535)), rows x's
// (batch · n).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;    // [batch, n, d]
@group(0) @binding(1) var<storage, read_write> g: array<f32>;    // [batch, count, d]
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;   // [batch, n, d]
@group(0) @binding(3) var<storage, read_write> info: array<u32>; // rows, d, epsilon, n, start, count

// THREADS and workgroup_sum come from workgroup_sum.wgsl, row_sizes from row_sizes.wgsl, which
// the launcher puts first.

// Whether this workgroup's row was read, shared so that the barriers after the test stay in
// uniform control flow.
var<workgroup> shared_read: u32;

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
    let n = info[3];
    let start = info[4];
    let count = info[5];
    let within = row % n;
    if t == 0u {
        shared_read = select(0u, 1u, within >= start && within < start + count);
    }
    let base = row * d;
    if workgroupUniformLoad(&shared_read) == 0u {
        for (var i = t; i < d; i += THREADS) {
            dx[base + i] = 0.0;
        }
        return;
    }
    let epsilon = bitcast<f32>(info[2]);
    let at = ((row / n) * count + within - start) * d;
    let width = f32(d);

    var squares = 0.0;
    for (var i = t; i < d; i += THREADS) {
        squares += x[base + i] * x[base + i];
    }
    let r = sqrt(workgroup_sum(t, squares) / width + epsilon);
    var sum_gy = 0.0;
    for (var i = t; i < d; i += THREADS) {
        sum_gy += g[at + i] * x[base + i] / r;
    }
    let mean_gy = workgroup_sum(t, sum_gy) / width;
    for (var i = t; i < d; i += THREADS) {
        dx[base + i] = (g[at + i] - x[base + i] / r * mean_gy) / r;
    }
}
