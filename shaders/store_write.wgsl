// ARMT's write into one layer's associative store, in one dispatch (the formulas of
// crate::nn::AssociativeMemory::write). From the M memory rows' projections side by side (keys
// before DPFP, values, strengths before their sigmoid): the keys' DPFP-3 features made unit
// length, how much each key shares with the others (s_m = Σ_j k_m·k_j), then
//   delta:      A' = A + Σ_m k_m ⊗ β_m (v_m − k_m·A) / s_m,  z unchanged;
//   normalised: n_m = k_m·z, z' = z + Σ_m k_m clamp(1 − n_m, 0, 1) / s_m, g_m = k_m·z',
//               A' = A + Σ_m k_m ⊗ (g_m t_m − k_m·A) / s_m,
//               t_m = o_m + β_m (v_m − o_m), o_m = k_m·A / (n_m + ε).
// One workgroup per sequence; the features, the updates and the new normaliser are staged in
// workgroup memory between the passes. Feature (j - 1)·2K + i of a key is r[i]·r[(i - j) mod 2K]
// with r = [relu(x), relu(-x)], the order of crate::nn::associative::dpfp.
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/store_write/wgpu.rs, which fills the sizes. Dispatch: (batch). Every barrier stands
// in uniform control flow (the loops around them have compile-time bounds).

@group(0) @binding(0) var<storage, read_write> projections: array<f32>; // [batch, M, K + D + 1]
@group(0) @binding(1) var<storage, read_write> store: array<f32>;       // [batch, F, D + 1]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;         // [batch, F, D + 1]

const THREADS: u32 = 64u;
const M: u32 = {{ rows }}u;
const K: u32 = {{ key_dim }}u;
const W: u32 = 2u * K;
const F: u32 = {{ features }}u;
const D: u32 = {{ d }}u;
// A row of the projections: the key (K), the value (D), the strength (1), side by side.
const P: u32 = K + D + 1u;
const NORMALISED: bool = {{ normalised }}u == 1u;
const EPS: f32 = 1e-5;

var<workgroup> feature: array<f32, {{ row_features }}>; // [M, F]
var<workgroup> update: array<f32, {{ row_values }}>;    // [M, D]
var<workgroup> grown_z: array<f32, {{ features }}>;     // z' (normalised)
var<workgroup> scale: array<f32, {{ rows }}>;           // 1 / |φ(k_m)|
var<workgroup> overlap: array<f32, {{ rows }}>;         // s_m
var<workgroup> filled: array<f32, {{ rows }}>;          // n_m = k_m·z
var<workgroup> grown: array<f32, {{ rows }}>;           // g_m = k_m·z'

// Entry e of r for the key starting at `at`.
fn rectified(at: u32, e: u32) -> f32 {
    if e < K {
        return max(projections[at + e], 0.0);
    }
    return max(-projections[at + e - K], 0.0);
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let b = group.x;
    let width = D + 1u;
    let base = b * F * width;

    // The features, then each key's length, then the features made unit length.
    for (var i = t; i < M * F; i += THREADS) {
        let m = i / F;
        let f = i % F;
        let at = (b * M + m) * P;
        let e = f % W;
        let j = f / W + 1u;
        feature[i] = rectified(at, e) * rectified(at, (e + W - j) % W);
    }
    workgroupBarrier();
    if t < M {
        var squares = 0.0;
        for (var f = 0u; f < F; f += 1u) {
            let v = feature[t * F + f];
            squares += v * v;
        }
        scale[t] = 1.0 / sqrt(squares + 1e-12);
    }
    workgroupBarrier();
    for (var i = t; i < M * F; i += THREADS) {
        feature[i] = feature[i] * scale[i / F];
    }
    workgroupBarrier();

    // How much each key shares with those written alongside it, and (normalised) how full
    // the store already is for it.
    if t < M {
        var shared_sum = 0.0;
        var n = 0.0;
        for (var f = 0u; f < F; f += 1u) {
            let kf = feature[t * F + f];
            var column = 0.0;
            for (var j = 0u; j < M; j += 1u) {
                column += feature[j * F + f];
            }
            shared_sum += kf * column;
            n += kf * store[base + f * width + D];
        }
        overlap[t] = shared_sum;
        filled[t] = n;
    }
    workgroupBarrier();

    if NORMALISED {
        // z' = z + Σ_m k_m clamp(1 − n_m, 0, 1) / s_m, then g_m = k_m·z'.
        for (var f = t; f < F; f += THREADS) {
            var z = store[base + f * width + D];
            for (var m = 0u; m < M; m += 1u) {
                z += feature[m * F + f] * clamp(1.0 - filled[m], 0.0, 1.0) / overlap[m];
            }
            grown_z[f] = z;
        }
        workgroupBarrier();
        if t < M {
            var g = 0.0;
            for (var f = 0u; f < F; f += 1u) {
                g += feature[t * F + f] * grown_z[f];
            }
            grown[t] = g;
        }
        workgroupBarrier();
    }

    // Each row's update, column by column.
    for (var i = t; i < M * D; i += THREADS) {
        let m = i / D;
        let c = i % D;
        var stored = 0.0;
        for (var f = 0u; f < F; f += 1u) {
            stored += feature[m * F + f] * store[base + f * width + c];
        }
        let beta = sigmoid(projections[(b * M + m) * P + K + D]);
        let v = projections[(b * M + m) * P + K + c];
        if NORMALISED {
            let old = stored / (filled[m] + EPS);
            let goal = old + beta * (v - old);
            update[i] = (goal * grown[m] - stored) / overlap[m];
        } else {
            update[i] = beta * (v - stored) / overlap[m];
        }
    }
    workgroupBarrier();

    // The new store: A' = A + Σ_m k_m ⊗ update_m, and the normaliser column.
    for (var i = t; i < F * width; i += THREADS) {
        let f = i / width;
        let c = i % width;
        if c == D {
            if NORMALISED {
                out[base + i] = grown_z[f];
            } else {
                out[base + i] = store[base + i];
            }
        } else {
            var a = store[base + i];
            for (var m = 0u; m < M; m += 1u) {
                a += feature[m * F + f] * update[m * D + c];
            }
            out[base + i] = a;
        }
    }
}
