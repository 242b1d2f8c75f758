// The gradients of store_write.wgsl's inputs (the keys before DPFP, the values, the strengths
// before their sigmoid, and the store written into) from the new store's gradient
// G = [G_A | G_z], in one dispatch, one workgroup per sequence. The formulas are those of
// backward_from_ops in src/ops/store_write/mod.rs, phase by phase: the forward's quantities
// again (features k, their lengths, overlaps s, the lookup b = k·S, under the paper's rule the
// grown normaliser z' and what it returns, the updates u), then per = (k·G_A) / s, the rows'
// sums (the gradients of the grown normaliser's lookup, the overlaps, the strengths and the
// normaliser), what reaches the stored values (db), the store's gradient, each feature's
// gradient, and back through the unit length and DPFP's rectified products to the keys
// (as store_read_backward.wgsl does for one row).
//
// The rows' intermediate results live in `scratch` (a workgroup's own slice), each phase
// separated by storageBarrier(). Every binding is read_write, inputs too (see attention.wgsl).
// Launched by src/ops/store_write/wgpu.rs, which fills rows (M), key_dim, entries (2K),
// features, width (d + 1) and normalised, and packs keys, values and strengths side by side
// (and their gradients likewise). Dispatch: (batch).

@group(0) @binding(0) var<storage, read_write> packed: array<f32>;  // [batch, M, K + d + 1]
@group(0) @binding(1) var<storage, read_write> store: array<f32>;   // [batch, F, d + 1]
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;    // [batch, F, d + 1]
@group(0) @binding(3) var<storage, read_write> dpacked: array<f32>; // [batch, M, K + d + 1]
@group(0) @binding(4) var<storage, read_write> dstore: array<f32>;  // [batch, F, d + 1]
@group(0) @binding(5) var<storage, read_write> scratch: array<f32>; // [batch, TOTAL]

const M: u32 = {{ rows }}u;
const K: u32 = {{ key_dim }}u;
const W: u32 = {{ entries }}u;
const F: u32 = {{ features }}u;
const WIDTH: u32 = {{ width }}u;
const D: u32 = WIDTH - 1u;
const P: u32 = K + WIDTH;
const NORMALISED: bool = {{ normalised }}u == 1u;
const EPS: f32 = 1e-5;
const THREADS: u32 = 64u;

// Offsets into a sequence's scratch.
const R: u32 = 0u;                   // [M, W] rectified entries
const KF: u32 = R + M * W;           // [M, F] features (unit length after phase 3)
const SIZE: u32 = KF + M * F;        // [M] the features' lengths
const SHARED: u32 = SIZE + M;        // [M] overlaps
const BOTH: u32 = SHARED + M;        // [M, d + 1] lookup k·S
const ZP: u32 = BOTH + M * WIDTH;    // [F] grown normaliser z'
const GROWN: u32 = ZP + F;           // [M] k·z'
const UPD: u32 = GROWN + M;          // [M, d] updates
const PER: u32 = UPD + M * D;        // [M, d] (k·G_A) / s
const SUMS: u32 = PER + M * D;       // [5, M] dgrown, dshared, dbeta, dnorm, along
const DB: u32 = SUMS + 5u * M;       // [M, d] the stored values' gradient
const DZP: u32 = DB + M * D;         // [F] z''s gradient
const DK: u32 = DZP + F;             // [M, F] the features' gradient
const ALL: u32 = DK + M * F;         // [F] Σ_j k_j
const ALL_D: u32 = ALL + F;          // [F] Σ_j dshared_j k_j
const TOTAL: u32 = ALL_D + F;

var<private> at: u32;  // this sequence's scratch
var<private> seq: u32; // this sequence

fn key(i: u32, c: u32) -> f32 {
    return packed[(seq * M + i) * P + c];
}
fn value(i: u32, c: u32) -> f32 {
    return packed[(seq * M + i) * P + K + c];
}
fn beta(i: u32) -> f32 {
    return 1.0 / (1.0 + exp(-packed[(seq * M + i) * P + K + D]));
}
fn s_at(f: u32, c: u32) -> f32 {
    return store[(seq * F + f) * WIDTH + c];
}
fn g_at(f: u32, c: u32) -> f32 {
    return grad[(seq * F + f) * WIDTH + c];
}
fn k_at(i: u32, f: u32) -> f32 {
    return scratch[at + KF + i * F + f];
}
fn r_at(i: u32, e: u32) -> f32 {
    return scratch[at + R + i * W + e];
}
// The paper's rule: the normaliser's increment for row i, (clamp(1 - b_id)) / s_i.
fn gamma(i: u32) -> f32 {
    return clamp(1.0 - scratch[at + BOTH + i * WIDTH + D], 0.0, 1.0) / scratch[at + SHARED + i];
}
// The old value row i finds, b_ic (the delta rule) or b_ic / (b_id + ε).
fn old(i: u32, c: u32) -> f32 {
    let b = scratch[at + BOTH + i * WIDTH + c];
    if NORMALISED {
        return b / (scratch[at + BOTH + i * WIDTH + D] + EPS);
    }
    return b;
}
// Entry e of row i's r: first factor of feature (j - 1)·W + e, second of (j - 1)·W + (e + j) mod W.
fn entry_gradient(i: u32, e: u32) -> f32 {
    var acc = 0.0;
    for (var j = 1u; j <= F / W; j += 1u) {
        let first = at + DK + i * F + (j - 1u) * W;
        acc += scratch[first + e] * r_at(i, (e + W - j) % W);
        acc += scratch[first + (e + j) % W] * r_at(i, (e + j) % W);
    }
    return acc;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    seq = group.x;
    at = seq * TOTAL;
    // 0: r = [relu(x), relu(-x)] per row.
    for (var e = t; e < M * W; e += THREADS) {
        let i = e / W;
        let w = e % W;
        var v = 0.0;
        if w < K {
            v = max(key(i, w), 0.0);
        } else {
            v = max(-key(i, w - K), 0.0);
        }
        scratch[at + R + e] = v;
    }
    storageBarrier();
    // 1: the features, 2: their lengths, 3: unit length.
    for (var e = t; e < M * F; e += THREADS) {
        let i = e / F;
        let f = e % F;
        let w = f % W;
        scratch[at + KF + e] = r_at(i, w) * r_at(i, (w + W - f / W - 1u) % W);
    }
    storageBarrier();
    for (var i = t; i < M; i += THREADS) {
        var squares = 0.0;
        for (var f = 0u; f < F; f += 1u) {
            squares += k_at(i, f) * k_at(i, f);
        }
        scratch[at + SIZE + i] = sqrt(squares + 1e-12);
    }
    storageBarrier();
    for (var e = t; e < M * F; e += THREADS) {
        scratch[at + KF + e] = scratch[at + KF + e] / scratch[at + SIZE + e / F];
    }
    storageBarrier();
    // 4: overlaps, the lookup, the features' sum over rows.
    for (var i = t; i < M; i += THREADS) {
        var s = 0.0;
        for (var j = 0u; j < M; j += 1u) {
            for (var f = 0u; f < F; f += 1u) {
                s += k_at(i, f) * k_at(j, f);
            }
        }
        scratch[at + SHARED + i] = s;
    }
    for (var e = t; e < M * WIDTH; e += THREADS) {
        let i = e / WIDTH;
        let c = e % WIDTH;
        var b = 0.0;
        for (var f = 0u; f < F; f += 1u) {
            b += k_at(i, f) * s_at(f, c);
        }
        scratch[at + BOTH + e] = b;
    }
    for (var f = t; f < F; f += THREADS) {
        var total = 0.0;
        for (var j = 0u; j < M; j += 1u) {
            total += k_at(j, f);
        }
        scratch[at + ALL + f] = total;
    }
    storageBarrier();
    // 5, 6: the paper's rule's grown normaliser and what it returns.
    if NORMALISED {
        for (var f = t; f < F; f += THREADS) {
            var z = s_at(f, D);
            for (var i = 0u; i < M; i += 1u) {
                z += k_at(i, f) * gamma(i);
            }
            scratch[at + ZP + f] = z;
        }
        storageBarrier();
        for (var i = t; i < M; i += THREADS) {
            var grown = 0.0;
            for (var f = 0u; f < F; f += 1u) {
                grown += k_at(i, f) * scratch[at + ZP + f];
            }
            scratch[at + GROWN + i] = grown;
        }
        storageBarrier();
    }
    // 7: the updates and per = (k·G_A) / s.
    for (var e = t; e < M * D; e += THREADS) {
        let i = e / D;
        let c = e % D;
        let s = scratch[at + SHARED + i];
        let o = old(i, c);
        var u = 0.0;
        if NORMALISED {
            let aim = o + beta(i) * (value(i, c) - o);
            u = (aim * scratch[at + GROWN + i] - scratch[at + BOTH + i * WIDTH + c]) / s;
        } else {
            u = beta(i) * (value(i, c) - o) / s;
        }
        scratch[at + UPD + e] = u;
        var du = 0.0;
        for (var f = 0u; f < F; f += 1u) {
            du += k_at(i, f) * g_at(f, c);
        }
        scratch[at + PER + e] = du / s;
    }
    storageBarrier();
    // 8: the rows' sums, the strengths' and values' gradients, what reaches the stored values.
    for (var i = t; i < M; i += THREADS) {
        let b = beta(i);
        var dgrown = 0.0;
        var dshared = 0.0;
        var dbeta = 0.0;
        var dnorm = 0.0;
        for (var c = 0u; c < D; c += 1u) {
            let per = scratch[at + PER + i * D + c];
            let o = old(i, c);
            dshared -= per * scratch[at + UPD + i * D + c];
            if NORMALISED {
                let grown = scratch[at + GROWN + i];
                dgrown += per * (o + b * (value(i, c) - o));
                dbeta += per * grown * (value(i, c) - o);
                dnorm -= per * grown * (1.0 - b) * o;
            } else {
                dbeta += per * (value(i, c) - o);
            }
        }
        if NORMALISED {
            dnorm = dnorm / (scratch[at + BOTH + i * WIDTH + D] + EPS);
        }
        scratch[at + SUMS + i] = dgrown;
        scratch[at + SUMS + M + i] = dshared;
        scratch[at + SUMS + 2u * M + i] = dbeta;
        scratch[at + SUMS + 3u * M + i] = dnorm;
        dpacked[(seq * M + i) * P + K + D] = dbeta * b * (1.0 - b);
    }
    for (var e = t; e < M * D; e += THREADS) {
        let i = e / D;
        let c = e % D;
        let b = beta(i);
        let per = scratch[at + PER + e];
        if NORMALISED {
            let dtarget = per * scratch[at + GROWN + i];
            dpacked[(seq * M + i) * P + K + c] = dtarget * b;
            let near = scratch[at + BOTH + i * WIDTH + D] + EPS;
            scratch[at + DB + e] = dtarget * (1.0 - b) / near - per;
        } else {
            dpacked[(seq * M + i) * P + K + c] = per * b;
            scratch[at + DB + e] = -per * b;
        }
    }
    storageBarrier();
    // 9: z''s gradient and Σ_j dshared_j k_j.
    for (var f = t; f < F; f += THREADS) {
        var dz = g_at(f, D);
        var shared_sum = 0.0;
        for (var i = 0u; i < M; i += 1u) {
            dz += k_at(i, f) * scratch[at + SUMS + i];
            shared_sum += k_at(i, f) * scratch[at + SUMS + M + i];
        }
        scratch[at + DZP + f] = dz;
        scratch[at + ALL_D + f] = shared_sum;
    }
    storageBarrier();
    // 10: the store's gradient and the features'.
    for (var e = t; e < F * WIDTH; e += THREADS) {
        let f = e / WIDTH;
        let c = e % WIDTH;
        var acc = 0.0;
        if c < D {
            acc = g_at(f, c);
            for (var i = 0u; i < M; i += 1u) {
                acc += k_at(i, f) * scratch[at + DB + i * D + c];
            }
        } else if NORMALISED {
            acc = scratch[at + DZP + f];
            for (var i = 0u; i < M; i += 1u) {
                acc += k_at(i, f) * scratch[at + SUMS + 3u * M + i];
            }
        } else {
            acc = g_at(f, D);
        }
        dstore[seq * F * WIDTH + e] = acc;
    }
    for (var e = t; e < M * F; e += THREADS) {
        let i = e / F;
        let f = e % F;
        var acc = scratch[at + SUMS + M + i] * scratch[at + ALL + f] + scratch[at + ALL_D + f];
        for (var c = 0u; c < D; c += 1u) {
            acc += g_at(f, c) * scratch[at + UPD + i * D + c];
            acc += scratch[at + DB + i * D + c] * s_at(f, c);
        }
        if NORMALISED {
            acc += scratch[at + SUMS + 3u * M + i] * s_at(f, D);
            acc += scratch[at + SUMS + i] * scratch[at + ZP + f] + gamma(i) * scratch[at + DZP + f];
        }
        scratch[at + DK + e] = acc;
    }
    storageBarrier();
    // 11, 12: back through the unit length.
    for (var i = t; i < M; i += THREADS) {
        var along = 0.0;
        for (var f = 0u; f < F; f += 1u) {
            along += k_at(i, f) * scratch[at + DK + i * F + f];
        }
        scratch[at + SUMS + 4u * M + i] = along;
    }
    storageBarrier();
    for (var e = t; e < M * F; e += THREADS) {
        let i = e / F;
        let dk = scratch[at + DK + e] - scratch[at + KF + e] * scratch[at + SUMS + 4u * M + i];
        scratch[at + DK + e] = dk / scratch[at + SIZE + i];
    }
    storageBarrier();
    // 13: back through DPFP's rectified products to the keys.
    for (var e = t; e < M * K; e += THREADS) {
        let i = e / K;
        let c = e % K;
        let x = key(i, c);
        var dx = 0.0;
        if x > 0.0 {
            dx = entry_gradient(i, c);
        } else if x < 0.0 {
            dx = -entry_gradient(i, c + K);
        }
        dpacked[(seq * M + i) * P + c] = dx;
    }
}
