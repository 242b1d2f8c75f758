// Rotary positions on rows of heads, split into heads as they are turned, one invocation per
// element: row i of a sequence sits at position start + i, and each head's pairs (2j, 2j + 1)
// turn by the table's angle as Burn's RotaryEncoding turns them, each element with its own
// entry (cos, sin):
//   out[2j] = x[2j] cos - x[2j + 1] sin,  out[2j + 1] = x[2j + 1] cos + x[2j] sin,
// read from rows [batch, seq, heads * D] and written in the heads' layout [batch, heads, seq, D].
// With `transpose` (info[5] == 1) the transposed turn instead, which is the forward's gradient,
// read from the heads' layout and written as rows:
//   out[2j] = x[2j] cos + x[2j + 1] sin',  out[2j + 1] = x[2j + 1] cos - x[2j] sin'
// (sin' the partner's entry). A pair's partner is the next or previous element in both layouts.
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/rotary/wgpu.rs. Dispatch: (min(groups, 65535), ceil(groups / 65535)) of 64.

@group(0) @binding(0) var<storage, read_write> x: array<f32>;     // rows, or heads with transpose
@group(0) @binding(1) var<storage, read_write> rope: array<f32>;  // [positions, D, 2]: cos, sin
@group(0) @binding(2) var<storage, read_write> out: array<f32>;   // heads, or rows with transpose
@group(0) @binding(3) var<storage, read_write> info: array<u32>;  // elements, seq, width, D, start, transpose

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let e = (group.y * groups.x + group.x) * 64u + t;
    if e >= info[0] {
        return;
    }
    let seq = info[1];
    let width = info[2];
    let d_head = info[3];
    let transpose = info[5] == 1u;
    // Element e of the rows is (b, i, h, d); in the heads' layout it sits at `moved`.
    let b = e / (seq * width);
    let i = (e / width) % seq;
    let h = (e % width) / d_head;
    let d = e % d_head;
    let moved = ((b * (width / d_head) + h) * seq + i) * d_head + d;
    let read_at = select(e, moved, transpose);
    let write_at = select(moved, e, transpose);
    let at = ((info[4] + i) * d_head + d) * 2u;
    let c = rope[at];
    if !transpose {
        let s = rope[at + 1u];
        if d % 2u == 0u {
            out[write_at] = x[read_at] * c - x[read_at + 1u] * s;
        } else {
            out[write_at] = x[read_at] * c + x[read_at - 1u] * s;
        }
    } else if d % 2u == 0u {
        out[write_at] = x[read_at] * c + x[read_at + 1u] * rope[at + 3u];
    } else {
        out[write_at] = x[read_at] * c - x[read_at - 1u] * rope[at - 1u];
    }
}
