// ARMT's read of one layer's associative store, in one dispatch: for each row, the DPFP-3
// features of its projected query made unit length, then what the store returns for them:
// A·φ under the delta rule, A·φ / (z·φ + ε) under the paper's normalised rule (z the store's
// last column), plus the residual stream where the read joins it (RESIDUAL). One workgroup
// per (row, sequence): the features staged in workgroup memory, their length and the
// normaliser reduced over the workgroup, then each invocation one
// column of the store at a time.
//
// With r = [relu(x), relu(-x)] (W = 2K entries), feature (j - 1)·W + i is r[i]·r[(i - j) mod W]
// for j = 1..3: the order of crate::nn::associative::dpfp, which writes the store.
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/store_read/wgpu.rs after workgroup_sum.wgsl, which fills key_dim, features and
// normalised. Dispatch: (rows, batch).

@group(0) @binding(0) var<storage, read_write> keys: array<f32>;     // [batch, rows, K]
@group(0) @binding(1) var<storage, read_write> store: array<f32>;    // [batch, F, d + 1]
@group(0) @binding(2) var<storage, read_write> residual: array<f32>; // [batch, rows, d], read when RESIDUAL
@group(0) @binding(3) var<storage, read_write> out: array<f32>;      // [batch, rows, d]
@group(0) @binding(4) var<storage, read_write> info: array<u32>;     // rows, d

const K: u32 = {{ key_dim }}u;
const W: u32 = 2u * K;
const F: u32 = {{ features }}u;
const NORMALISED: bool = {{ normalised }}u == 1u;
// The residual stream the read joins, added in place of a kernel of its own.
const RESIDUAL: bool = {{ residual }}u == 1u;
const EPS: f32 = 1e-5;

var<workgroup> phi: array<f32, {{ features }}>;

// Entry e of r for the key starting at `at`.
fn rectified(at: u32, e: u32) -> f32 {
    if e < K {
        return max(keys[at + e], 0.0);
    }
    return max(-keys[at + e - K], 0.0);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let rows = info[0];
    let d = info[1];
    let row = group.x;
    let b = group.y;
    let at = (b * rows + row) * K;
    var squares = 0.0;
    for (var f = t; f < F; f += THREADS) {
        let i = f % W;
        let j = f / W + 1u;
        let v = rectified(at, i) * rectified(at, (i + W - j) % W);
        phi[f] = v;
        squares += v * v;
    }
    // The sum's barriers also make every feature visible to the whole workgroup.
    let size = sqrt(workgroup_sum(t, squares) + 1e-12);
    let width = d + 1u;
    let base = b * F * width;
    var scale = 1.0 / size;
    if NORMALISED {
        var norm = 0.0;
        for (var f = t; f < F; f += THREADS) {
            norm += phi[f] * store[base + f * width + d];
        }
        scale = scale / (workgroup_sum(t, norm) / size + EPS);
    }
    for (var c = t; c < d; c += THREADS) {
        var acc = 0.0;
        for (var f = 0u; f < F; f += 1u) {
            acc += phi[f] * store[base + f * width + c];
        }
        let at = (b * rows + row) * d + c;
        if RESIDUAL {
            out[at] = residual[at] + acc * scale;
        } else {
            out[at] = acc * scale;
        }
    }
}
