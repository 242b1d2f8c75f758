// The gradient of the rows' total weighted cross-entropy (cross_entropy.wgsl) with respect to
// the logits, one workgroup per row, recomputing the row's logsumexp:
//   dlogits[n, v] = (exp(logits[n, v] - lse_n) - [v == targets[n]]) grad[0] weights[n].
// grad holds the gradient of the totals [nll, correct]; the count of correct rows has none.
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/cross_entropy/wgpu.rs, which puts workgroup_sum.wgsl, workgroup_max.wgsl,
// row_sizes.wgsl and row_logsumexp.wgsl first.
// Dispatch: (min(rows, 65535), ceil(rows / 65535)).

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;  // [rows, vocab]
@group(0) @binding(1) var<storage, read_write> targets: array<i32>; // [rows]
@group(0) @binding(2) var<storage, read_write> weights: array<f32>; // [rows]
@group(0) @binding(3) var<storage, read_write> grad: array<f32>;    // [2]
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>; // [rows, vocab]
@group(0) @binding(5) var<storage, read_write> info: array<u32>;    // rows, vocab

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let sizes = row_sizes(t);
    let rows = sizes.x;
    let vocab = sizes.y;
    let row = group.y * groups.x + group.x;
    if row >= rows {
        return;
    }
    let base = row * vocab;
    let lse = row_logsumexp(t, base, vocab).x;
    let scale = grad[0] * weights[row];
    let id = u32(clamp(targets[row], 0, i32(vocab) - 1));
    for (var i = t; i < vocab; i += THREADS) {
        let hot = select(0.0, 1.0, i == id);
        dlogits[base + i] = (exp(logits[base + i] - lse) - hot) * scale;
    }
}
