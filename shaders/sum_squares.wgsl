// `acc + Σ x²` over five whole tensors, in one workgroup: each invocation sums the squares of
// a strided share of each input, then the workgroup adds the shares up (workgroup_sum.wgsl) and
// the first invocation writes the total after the running sum `acc`. Gradient clipping chains
// one dispatch per five parameters through `acc` to get the global norm's square, where Burn's
// operations took a square, a reduction or two and an addition per parameter. Five inputs, the
// total, the result and the sizes are the eight storage buffers every WebGPU adapter allows a
// shader. (WGSL cannot pass a storage array to a function, so the five loops are written out.)
//
// Each input may be a view: element i of tensor k is at (i / cols) s0 + (i % cols) s1, with
// its size, cols, s0 and s1 at info[4k..4k + 4] (a dense buffer in any order is one row; a
// slice of a packed gradient or a transposed one is two axes), so no input needs a copy.
//
// One workgroup is enough for the gradients it serves (up to a few million elements: a few
// thousand loads per invocation); a tensor's sum over many workgroups would need a second pass.
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/sum_squares/wgpu.rs, which puts workgroup_sum.wgsl first. Dispatch: (1, 1, 1).

@group(0) @binding(0) var<storage, read_write> x0: array<f32>;   // info[0] elements
@group(0) @binding(1) var<storage, read_write> x1: array<f32>;   // info[4]
@group(0) @binding(2) var<storage, read_write> x2: array<f32>;   // info[8]
@group(0) @binding(3) var<storage, read_write> x3: array<f32>;   // info[12]
@group(0) @binding(4) var<storage, read_write> x4: array<f32>;   // info[16]
@group(0) @binding(5) var<storage, read_write> acc: array<f32>;  // [1]
@group(0) @binding(6) var<storage, read_write> out: array<f32>;  // [1]
@group(0) @binding(7) var<storage, read_write> info: array<u32>; // per input: size, cols, s0, s1

// Where element i of input k is in its buffer.
fn at(k: u32, i: u32) -> u32 {
    let cols = max(info[4u * k + 1u], 1u);
    return (i / cols) * info[4u * k + 2u] + (i % cols) * info[4u * k + 3u];
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32) {
    var sum = 0.0;
    for (var i = t; i < info[0]; i += THREADS) {
        let v = x0[at(0u, i)];
        sum += v * v;
    }
    for (var i = t; i < info[4]; i += THREADS) {
        let v = x1[at(1u, i)];
        sum += v * v;
    }
    for (var i = t; i < info[8]; i += THREADS) {
        let v = x2[at(2u, i)];
        sum += v * v;
    }
    for (var i = t; i < info[12]; i += THREADS) {
        let v = x3[at(3u, i)];
        sum += v * v;
    }
    for (var i = t; i < info[16]; i += THREADS) {
        let v = x4[at(4u, i)];
        sum += v * v;
    }
    let total = workgroup_sum(t, sum);
    if t == 0u {
        out[0] = acc[0] + total;
    }
}
