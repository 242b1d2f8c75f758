// The gradient of store_read.wgsl's keys, per row, in one dispatch; what the store's gradient
// needs is kept for store_read_store_backward.wgsl. For one row with features φ̂ = φ / |φ|
// (φ the DPFP-3 features of its key x, |φ| with 1e-12 under the root), the lookup
// b = φ̂·S (S the store, its last column z) and the read's gradient g:
//   db_c = g_c / n for c < d, db_d = -Σ_c g_c b_c / n²   (n = b_d + ε, the paper's rule),
//   db_c = g_c, db_d = 0                                  (the delta rule),
//   dφ̂ = S·db,  dφ = (dφ̂ - φ̂ (φ̂·dφ̂)) / |φ|,
// and each feature r[i]·r[(i - j) mod W] passes dφ times the other factor to both factors
// (r = [relu(x), relu(-x)], W = 2K entries, j = 1..3 as in store_read.wgsl); x_k gets
// dr[k] where x_k > 0 and -dr[k + K] where x_k < 0 (nothing at 0, as Burn's relu).
// One workgroup per (row, sequence): r, φ̂, dφ and db staged in workgroup memory.
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/store_read/wgpu.rs after workgroup_sum.wgsl, which fills key_dim, entries (2K),
// features, width (d + 1) and normalised. Dispatch: (rows, batch).

@group(0) @binding(0) var<storage, read_write> keys: array<f32>;  // [batch, rows, K]
@group(0) @binding(1) var<storage, read_write> store: array<f32>; // [batch, F, d + 1]
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;  // [batch, rows, d]
@group(0) @binding(3) var<storage, read_write> dkeys: array<f32>; // [batch, rows, K]
@group(0) @binding(4) var<storage, read_write> phis: array<f32>;  // [batch, rows, F]: φ̂
@group(0) @binding(5) var<storage, read_write> dboth: array<f32>; // [batch, rows, d + 1]: db
@group(0) @binding(6) var<storage, read_write> info: array<u32>;  // rows

const K: u32 = {{ key_dim }}u;
const W: u32 = {{ entries }}u;
const F: u32 = {{ features }}u;
const WIDTH: u32 = {{ width }}u;
const D: u32 = WIDTH - 1u;
const NORMALISED: bool = {{ normalised }}u == 1u;
const EPS: f32 = 1e-5;

var<workgroup> r: array<f32, {{ entries }}>;
var<workgroup> phi: array<f32, {{ features }}>;
var<workgroup> dphi: array<f32, {{ features }}>;
var<workgroup> db: array<f32, {{ width }}>;

// The gradient of entry e of r: e is the first factor of feature (j - 1)·W + e and the
// second of feature (j - 1)·W + (e + j) mod W.
fn entry_gradient(e: u32) -> f32 {
    var acc = 0.0;
    for (var j = 1u; j <= F / W; j += 1u) {
        let first = (j - 1u) * W;
        acc += dphi[first + e] * r[(e + W - j) % W];
        acc += dphi[first + (e + j) % W] * r[(e + j) % W];
    }
    return acc;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    let rows = info[0];
    let line = group.y * rows + group.x;
    let at = line * K;
    for (var e = t; e < W; e += THREADS) {
        if e < K {
            r[e] = max(keys[at + e], 0.0);
        } else {
            r[e] = max(-keys[at + e - K], 0.0);
        }
    }
    workgroupBarrier();
    var squares = 0.0;
    for (var f = t; f < F; f += THREADS) {
        let i = f % W;
        let v = r[i] * r[(i + W - f / W - 1u) % W];
        phi[f] = v;
        squares += v * v;
    }
    let size = sqrt(workgroup_sum(t, squares) + 1e-12);
    // Each invocation scales the features it wrote.
    for (var f = t; f < F; f += THREADS) {
        phi[f] = phi[f] / size;
        phis[line * F + f] = phi[f];
    }
    workgroupBarrier();
    let base = group.y * F * WIDTH;
    var inv = 1.0;
    if NORMALISED {
        var norm = 0.0;
        for (var f = t; f < F; f += THREADS) {
            norm += phi[f] * store[base + f * WIDTH + D];
        }
        inv = 1.0 / (workgroup_sum(t, norm) + EPS);
    }
    var along_values = 0.0;
    for (var c = t; c < D; c += THREADS) {
        let g = grad[line * D + c];
        if NORMALISED {
            var b = 0.0;
            for (var f = 0u; f < F; f += 1u) {
                b += phi[f] * store[base + f * WIDTH + c];
            }
            along_values += g * b;
        }
        db[c] = g * inv;
    }
    let total = workgroup_sum(t, along_values);
    if t == 0u {
        db[D] = select(0.0, -total * inv * inv, NORMALISED);
    }
    workgroupBarrier();
    for (var c = t; c < WIDTH; c += THREADS) {
        dboth[line * WIDTH + c] = db[c];
    }
    var dot = 0.0;
    for (var f = t; f < F; f += THREADS) {
        var acc = 0.0;
        for (var c = 0u; c < WIDTH; c += 1u) {
            acc += db[c] * store[base + f * WIDTH + c];
        }
        dphi[f] = acc;
        dot += phi[f] * acc;
    }
    let along = workgroup_sum(t, dot);
    for (var f = t; f < F; f += THREADS) {
        dphi[f] = (dphi[f] - phi[f] * along) / size;
    }
    workgroupBarrier();
    for (var k = t; k < K; k += THREADS) {
        let x = keys[at + k];
        var dx = 0.0;
        if x > 0.0 {
            dx = entry_gradient(k);
        } else if x < 0.0 {
            dx = -entry_gradient(k + K);
        }
        dkeys[at + k] = dx;
    }
}
