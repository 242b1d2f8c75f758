// Inference's linear layers: out = epilogue(x' w + b), one 16 x 16 tile of the output per
// workgroup, the product's 16-wide slices of x' and w staged in workgroup memory. The epilogue
// is fixed when the kernel is built ({{ epilogue }}): 0 none, 1 GELU, 2 adding `residual`
// (bound but unread otherwise). x' is x as it lies (affine_rows.wgsl) or each row of x layer-
// normed as it is read (affine_norm.wgsl: a pre-norm block's norm and the product after it in
// one kernel); the launcher puts one of the two first, with its `prologue` and `load_x`. One
// small kernel for every product of a streaming step, so a browser compiles a few of them
// instead of tuning Burn's matrix products (several candidate kernels per shape, each compiled).
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/affine/wgpu.rs. Dispatch: (ceil(n / 16), ceil(rows / 16)).

@group(0) @binding(0) var<storage, read_write> x: array<f32>;        // [rows, k]
@group(0) @binding(1) var<storage, read_write> w: array<f32>;        // [k, n]
@group(0) @binding(2) var<storage, read_write> b: array<f32>;        // [n]
@group(0) @binding(3) var<storage, read_write> residual: array<f32>; // [rows, n]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;      // [rows, n]
@group(0) @binding(5) var<storage, read_write> info: array<u32>;     // rows, k, n, epsilon

const EPILOGUE: u32 = {{ epilogue }}u;
const TILE: u32 = 16u;

var<workgroup> xs: array<f32, 256>;
var<workgroup> ws: array<f32, 256>;
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
    let tx = t % TILE;
    let ty = t / TILE;
    let row = group.y * TILE + ty;
    let col = group.x * TILE + tx;
    prologue(t, row, rows, k);
    var acc = 0.0;
    for (var k0 = 0u; k0 < k; k0 += TILE) {
        var xv = 0.0;
        if row < rows && k0 + tx < k {
            xv = load_x(row, k0 + tx, k, ty);
        }
        var wv = 0.0;
        if k0 + ty < k && col < n {
            wv = w[(k0 + ty) * n + col];
        }
        xs[t] = xv;
        ws[t] = wv;
        workgroupBarrier();
        for (var kk = 0u; kk < TILE; kk++) {
            acc += xs[ty * TILE + kk] * ws[kk * TILE + tx];
        }
        workgroupBarrier();
    }
    if row >= rows || col >= n {
        return;
    }
    var y = acc + b[col];
    if EPILOGUE == 1u {
        y = 0.5 * y * (1.0 + erf(y * 0.70710678118654752));
    } else if EPILOGUE == 2u {
        y += residual[row * n + col];
    }
    out[row * n + col] = y;
}
