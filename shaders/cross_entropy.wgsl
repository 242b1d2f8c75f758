// Each row's weighted cross-entropy and whether its arg-max is the target, one workgroup per
// row:
//   out[n, 0] = weights[n] (logsumexp(logits[n]) - logits[n, targets[n]]),
//   out[n, 1] = weights[n] [argmax(logits[n]) == targets[n]],
// with the row's logsumexp and maximum from row_logsumexp.wgsl and the arg-max the first
// column holding the maximum (as Burn's argmax). The launcher sums the rows.
// An id outside the row reads its nearest end rather than another row (the caller checks ids
// against the vocabulary).
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/cross_entropy/wgpu.rs, which puts workgroup_sum.wgsl, workgroup_max.wgsl,
// row_sizes.wgsl and row_logsumexp.wgsl first.
// Dispatch: (min(rows, 65535), ceil(rows / 65535)).

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;  // [rows, vocab]
@group(0) @binding(1) var<storage, read_write> targets: array<i32>; // [rows]
@group(0) @binding(2) var<storage, read_write> weights: array<f32>; // [rows]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;     // [rows, 2]
@group(0) @binding(4) var<storage, read_write> info: array<u32>;    // rows, vocab

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
    let lse_max = row_logsumexp(t, base, vocab);
    // The first column holding the maximum: the workgroup's largest negated column (exact in
    // f32 below 2^24 columns; the launcher checks).
    var first = -3.4028235e38;
    for (var i = t; i < vocab; i += THREADS) {
        if logits[base + i] == lse_max.y {
            first = -f32(i);
            break;
        }
    }
    let argmax = u32(-workgroup_max(t, first));
    if t == 0u {
        let id = u32(clamp(targets[row], 0, i32(vocab) - 1));
        let w = weights[row];
        out[2u * row] = (lse_max.x - logits[base + id]) * w;
        out[2u * row + 1u] = select(0.0, w, argmax == id);
    }
}
