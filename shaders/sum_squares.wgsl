// `acc + Σ x²` over five whole tensors, in one workgroup: each invocation sums the squares of
// a strided share of each input, then the workgroup adds the shares up (workgroup_sum.wgsl) and
// the first invocation writes the total after the running sum `acc`. Gradient clipping chains
// one dispatch per five parameters through `acc` to get the global norm's square, where Burn's
// operations took a square, a reduction or two and an addition per parameter. Five inputs, the
// total, the result and the sizes are the eight storage buffers every WebGPU adapter allows a
// shader. (WGSL cannot pass a storage array to a function, so the five loops are written out.)
//
// One workgroup is enough for the gradients it serves (up to a few million elements: a few
// thousand loads per invocation); a tensor's sum over many workgroups would need a second pass.
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/sum_squares/wgpu.rs, which puts workgroup_sum.wgsl first. Dispatch: (1, 1, 1).

@group(0) @binding(0) var<storage, read_write> x0: array<f32>;   // [info[0]]
@group(0) @binding(1) var<storage, read_write> x1: array<f32>;   // [info[1]]
@group(0) @binding(2) var<storage, read_write> x2: array<f32>;   // [info[2]]
@group(0) @binding(3) var<storage, read_write> x3: array<f32>;   // [info[3]]
@group(0) @binding(4) var<storage, read_write> x4: array<f32>;   // [info[4]]
@group(0) @binding(5) var<storage, read_write> acc: array<f32>;  // [1]
@group(0) @binding(6) var<storage, read_write> out: array<f32>;  // [1]
@group(0) @binding(7) var<storage, read_write> info: array<u32>; // the five sizes

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32) {
    var sum = 0.0;
    for (var i = t; i < info[0]; i += THREADS) {
        sum += x0[i] * x0[i];
    }
    for (var i = t; i < info[1]; i += THREADS) {
        sum += x1[i] * x1[i];
    }
    for (var i = t; i < info[2]; i += THREADS) {
        sum += x2[i] * x2[i];
    }
    for (var i = t; i < info[3]; i += THREADS) {
        sum += x3[i] * x3[i];
    }
    for (var i = t; i < info[4]; i += THREADS) {
        sum += x4[i] * x4[i];
    }
    let total = workgroup_sum(t, sum);
    if t == 0u {
        out[0] = acc[0] + total;
    }
}
