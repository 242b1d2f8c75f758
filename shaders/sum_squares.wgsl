// The sum of the squares of seven whole tensors, in one workgroup: each invocation sums the
// squares of a strided share of each input, then the workgroup adds the shares up
// (workgroup_sum.wgsl) and the first invocation writes the total. Gradient clipping chains one
// dispatch per six parameters (seven in the first) for the global norm's square, where Burn's
// operations took a square, a reduction or two and an addition per parameter. When CARRIED is
// 1 the last input is the running total of the dispatches before (`[1]`), added as it is after
// the others. Seven inputs and the result are the eight storage buffers every WebGPU adapter
// allows a shader; the inputs' sizes and layouts are compiled in (the placeholders below, one
// filling per group of parameter shapes), so no binding goes to them.
//
// Each input may be a view: element i of input k is at (i / COLSk) S0k + (i % COLSk) S1k (a
// dense buffer in any order is one row; a slice of a packed gradient or a transposed one is
// two axes), so no input needs a copy.
//
// One workgroup is enough for the gradients it serves (up to a few million elements: a few
// thousand loads per invocation); a tensor's sum over many workgroups would need a second pass.
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/sum_squares/wgpu.rs, which puts workgroup_sum.wgsl first. Dispatch: (1, 1, 1).

@group(0) @binding(0) var<storage, read_write> x0: array<f32>;
@group(0) @binding(1) var<storage, read_write> x1: array<f32>;
@group(0) @binding(2) var<storage, read_write> x2: array<f32>;
@group(0) @binding(3) var<storage, read_write> x3: array<f32>;
@group(0) @binding(4) var<storage, read_write> x4: array<f32>;
@group(0) @binding(5) var<storage, read_write> x5: array<f32>;
@group(0) @binding(6) var<storage, read_write> x6: array<f32>;  // or the running total, [1]
@group(0) @binding(7) var<storage, read_write> out: array<f32>; // [1]

// Input k's element count, columns and strides.
const N0: u32 = {{ n0 }}u;
const COLS0: u32 = {{ cols0 }}u;
const S00: u32 = {{ s00 }}u;
const S10: u32 = {{ s10 }}u;
const N1: u32 = {{ n1 }}u;
const COLS1: u32 = {{ cols1 }}u;
const S01: u32 = {{ s01 }}u;
const S11: u32 = {{ s11 }}u;
const N2: u32 = {{ n2 }}u;
const COLS2: u32 = {{ cols2 }}u;
const S02: u32 = {{ s02 }}u;
const S12: u32 = {{ s12 }}u;
const N3: u32 = {{ n3 }}u;
const COLS3: u32 = {{ cols3 }}u;
const S03: u32 = {{ s03 }}u;
const S13: u32 = {{ s13 }}u;
const N4: u32 = {{ n4 }}u;
const COLS4: u32 = {{ cols4 }}u;
const S04: u32 = {{ s04 }}u;
const S14: u32 = {{ s14 }}u;
const N5: u32 = {{ n5 }}u;
const COLS5: u32 = {{ cols5 }}u;
const S05: u32 = {{ s05 }}u;
const S15: u32 = {{ s15 }}u;
const N6: u32 = {{ n6 }}u;
const COLS6: u32 = {{ cols6 }}u;
const S06: u32 = {{ s06 }}u;
const S16: u32 = {{ s16 }}u;
// 1 when x6 is the running total.
const CARRIED: u32 = {{ carried }}u;

// Where element i of an input with `cols` columns and strides s0, s1 is in its buffer.
fn at(i: u32, cols: u32, s0: u32, s1: u32) -> u32 {
    return (i / cols) * s0 + (i % cols) * s1;
}

@compute @workgroup_size(64)
fn main(@builtin(local_invocation_index) t: u32) {
    var sum = 0.0;
    for (var i = t; i < N0; i += THREADS) {
        let v = x0[at(i, COLS0, S00, S10)];
        sum += v * v;
    }
    for (var i = t; i < N1; i += THREADS) {
        let v = x1[at(i, COLS1, S01, S11)];
        sum += v * v;
    }
    for (var i = t; i < N2; i += THREADS) {
        let v = x2[at(i, COLS2, S02, S12)];
        sum += v * v;
    }
    for (var i = t; i < N3; i += THREADS) {
        let v = x3[at(i, COLS3, S03, S13)];
        sum += v * v;
    }
    for (var i = t; i < N4; i += THREADS) {
        let v = x4[at(i, COLS4, S04, S14)];
        sum += v * v;
    }
    for (var i = t; i < N5; i += THREADS) {
        let v = x5[at(i, COLS5, S05, S15)];
        sum += v * v;
    }
    if CARRIED == 0u {
        for (var i = t; i < N6; i += THREADS) {
            let v = x6[at(i, COLS6, S06, S16)];
            sum += v * v;
        }
    }
    let total = workgroup_sum(t, sum);
    if t == 0u {
        if CARRIED == 1u {
            out[0] = x6[0] + total;
        } else {
            out[0] = total;
        }
    }
}
