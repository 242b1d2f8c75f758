// Each row's weighted cross-entropy, one workgroup per row:
//   out[n] = weights[n] (logsumexp(logits[n]) - logits[n, targets[n]]),
// with the row's logsumexp from row_logsumexp.wgsl.
// The targets are ids stored as f32 (exact below 2^24); an id past the row reads its last
// column rather than another row (the caller checks ids against the vocabulary).
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/cross_entropy/wgpu.rs, which puts workgroup_sum.wgsl, workgroup_max.wgsl,
// row_sizes.wgsl and row_logsumexp.wgsl first.
// Dispatch: (min(rows, 65535), ceil(rows / 65535)).

@group(0) @binding(0) var<storage, read_write> logits: array<f32>;  // [rows, vocab]
@group(0) @binding(1) var<storage, read_write> targets: array<f32>; // [rows]
@group(0) @binding(2) var<storage, read_write> weights: array<f32>; // [rows]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;     // [rows]
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
    let lse = row_logsumexp(t, base, vocab);
    if t == 0u {
        let id = min(u32(targets[row]), vocab - 1u);
        out[row] = (lse - logits[base + id]) * weights[row];
    }
}
