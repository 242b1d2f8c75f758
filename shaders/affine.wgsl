// Inference's linear layers: out = epilogue(x' w + b). Each workgroup computes a 64 x 64 tile
// of the output, each of its 256 invocations a 4 x 4 block of it (rows ty, ty + 16, ty + 32,
// ty + 48 and likewise the columns from tx, so neighbouring invocations read neighbouring
// columns); the product's 16-wide slices of x' and w are staged in workgroup memory. Every
// staged value then serves four multiply-adds from registers, where one output per invocation
// read two staged values per multiply-add, and a workgroup passes a barrier once per 256
// multiply-adds of each invocation instead of once per 16 (CPU-emulated adapters such as
// lavapipe and SwiftShader pay dearly for barriers). The epilogue is fixed when the kernel is
// built ({{ epilogue }}): 0 none, 1 GELU, 2 adding `residual` (bound but unread otherwise). x'
// is x as it lies (affine_rows.wgsl) or each row of x layer-normed as it is read
// (affine_norm.wgsl: a pre-norm block's norm and the product after it in one kernel); the
// launcher puts one of the two first, with its `prologue` and `load_x`. One small kernel for
// every product of a streaming step, so a browser compiles a few of them instead of tuning
// Burn's matrix products (several candidate kernels per shape, each compiled).
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/affine/wgpu.rs. Dispatch: (ceil(n / 64), ceil(rows / 64)).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;        // [rows, k]
@group(0) @binding(1) var<storage, read_write> w: array<f32>;        // [k, n]
@group(0) @binding(2) var<storage, read_write> b: array<f32>;        // [n]
@group(0) @binding(3) var<storage, read_write> residual: array<f32>; // [rows, n]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;      // [rows, n]
@group(0) @binding(5) var<storage, read_write> info: array<u32>;     // rows, k, n, epsilon

const EPILOGUE: u32 = {{ epilogue }}u;
// The output tile's side, the staged slice's width, and invocations along each tile axis.
const TILE: u32 = 64u;
const SLICE: u32 = 16u;
const SIDE: u32 = 16u;

var<workgroup> xs: array<f32, 1024>; // [TILE rows][SLICE]
var<workgroup> ws: array<f32, 1024>; // [SLICE][TILE columns]
var<workgroup> shared_k: u32;

// erf by Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7); WGSL has no erf.
fn erf(v: f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
        + t * (-1.453152027 + t * 1.061405429))));
    return sign(v) * (1.0 - poly * exp(-a * a));
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) group: vec3<u32>, @builtin(local_invocation_index) t: u32) {
    if t == 0u {
        shared_k = info[1];
    }
    let k = workgroupUniformLoad(&shared_k);
    let rows = info[0];
    let n = info[2];
    let tx = t % SIDE;
    let ty = t / SIDE;
    let row0 = group.y * TILE;
    let col0 = group.x * TILE;
    prologue(t, row0, rows, k);
    var acc: array<f32, 16>; // [r * 4 + c]: row ty + 16 r, column tx + 16 c
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < k; k0 += SLICE) {
        // 1024 values of each slice, four per invocation; zeros past the edges.
        for (var part = 0u; part < 4u; part++) {
            let e = t + 256u * part;
            let xr = e / SLICE;
            let xk = k0 + e % SLICE;
            var xv = 0.0;
            if row0 + xr < rows && xk < k {
                xv = load_x(row0 + xr, xk, k, xr);
            }
            xs[e] = xv;
            let wk = k0 + e / TILE;
            let wc = col0 + e % TILE;
            var wv = 0.0;
            if wk < k && wc < n {
                wv = w[wk * n + wc];
            }
            ws[e] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < SLICE; kk++) {
            var xa: array<f32, 4>;
            var wa: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                xa[i] = xs[(ty + SIDE * i) * SLICE + kk];
                wa[i] = ws[kk * TILE + tx + SIDE * i];
            }
            for (var r = 0u; r < 4u; r++) {
                for (var c = 0u; c < 4u; c++) {
                    acc[r * 4u + c] += xa[r] * wa[c];
                }
            }
        }
        workgroupBarrier();
    }
    for (var r = 0u; r < 4u; r++) {
        let row = row0 + ty + SIDE * r;
        for (var c = 0u; c < 4u; c++) {
            let col = col0 + tx + SIDE * c;
            if row < rows && col < n {
                var y = acc[r * 4u + c] + b[col];
                if EPILOGUE == 1u {
                    y = 0.5 * y * (1.0 + erf(y * 0.70710678118654752));
                } else if EPILOGUE == 2u {
                    y += residual[row * n + col];
                }
                out[row * n + col] = y;
            }
        }
    }
}
