// `acc + Σ x²` over a whole tensor, in one workgroup: each invocation sums the squares of a
// strided share of `x`, then the workgroup adds the shares up (workgroup_sum.wgsl) and the
// first invocation writes the total after the running sum `acc`. Gradient clipping chains one
// dispatch per parameter through `acc` to get the global norm's square: one kernel per
// parameter, where Burn's operations took a square, a reduction or two and an addition.
//
// One workgroup is enough for the gradients it serves (up to a few million elements: a few
// thousand loads per invocation); a tensor's sum over many workgroups would need a second pass.
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/sum_squares/wgpu.rs, which puts workgroup_sum.wgsl first. Dispatch: (1, 1, 1).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;    // [n]
@group(0) @binding(1) var<storage, read_write> acc: array<f32>;  // [1]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // [1]
@group(0) @binding(3) var<storage, read_write> info: array<u32>; // n

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32) {
    let n = info[0];
    var sum = 0.0;
    for (var i = t; i < n; i += THREADS) {
        let v = x[i];
        sum += v * v;
    }
    let total = workgroup_sum(t, sum);
    if t == 0u {
        out[0] = acc[0] + total;
    }
}
