// The gradient of store_read.wgsl's store from what store_read_backward.wgsl kept per row
// (the unit features φ̂ and the lookup's gradient db): dS[b, f, c] = Σ_rows φ̂_f db_c over the
// sequence's rows, one invocation per entry, summed in row order.
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/store_read/wgpu.rs, which fills features and width (d + 1). Dispatch:
// ceil(batch F (d + 1) / 64) invocations over the first two axes.

@group(0) @binding(0) var<storage, read_write> phis: array<f32>;   // [batch, rows, F]
@group(0) @binding(1) var<storage, read_write> dboth: array<f32>;  // [batch, rows, d + 1]
@group(0) @binding(2) var<storage, read_write> dstore: array<f32>; // [batch, F, d + 1]
@group(0) @binding(3) var<storage, read_write> info: array<u32>;   // rows, batch

const F: u32 = {{ features }}u;
const WIDTH: u32 = {{ width }}u;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rows = info[0];
    let batch = info[1];
    let idx = (group.y * groups.x + group.x) * 64u + t;
    if idx >= batch * F * WIDTH {
        return;
    }
    let c = idx % WIDTH;
    let f = (idx / WIDTH) % F;
    let b = idx / (WIDTH * F);
    var acc = 0.0;
    for (var row = 0u; row < rows; row += 1u) {
        let line = b * rows + row;
        acc += phis[line * F + f] * dboth[line * WIDTH + c];
    }
    dstore[idx] = acc;
}
