// A segment's layout rows: the memory rows and the tokens' embeddings, each plus its learned
// position, one invocation per output element, with R the read rows before the tokens (M for
// RMT, 0 for ARMT):
//   row r <  R          : memory[b, r]          + positions[r]
//   row r <  R + T      : table[tokens[b, r - R]] + positions[r]
//   row r >= R + T      : memory[b, r - R - T]  + positions[P - M + (r - R - T)]
// (the last M rows, the write memory, exist only when the layout writes; their positions are
// the table's last M rows, where they sit for a whole segment).
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/embed/wgpu.rs, which puts embed_sizes.wgsl first. Dispatch: ceil(B L D / 64) invocations over the first two axes.

@group(0) @binding(0) var<storage, read_write> table: array<f32>;     // [V, D]
@group(0) @binding(1) var<storage, read_write> tokens: array<i32>;    // [B, T], strided
@group(0) @binding(2) var<storage, read_write> memory: array<f32>;    // [B, M, D], strided
@group(0) @binding(3) var<storage, read_write> positions: array<f32>; // [P, D]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;       // [B, L, D]
@group(0) @binding(5) var<storage, read_write> info: array<u32>;      // see embed_sizes.wgsl

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let s = sizes();
    let rows = s.rows;
    let d = s.d;
    let m = s.m;
    let lead = s.lead;
    let n = s.n;
    let idx = (group.y * groups.x + group.x) * 64u + t;
    if idx >= s.batch * rows * d {
        return;
    }
    let j = idx % d;
    let r = (idx / d) % rows;
    let b = idx / (d * rows);
    var value: f32;
    var p = r;
    if r < lead {
        value = memory[b * s.memory_batch + r * s.memory_row + j];
    } else if r < lead + n {
        value = table[token_id(s, b, r - lead) * d + j];
    } else {
        let k = r - lead - n;
        value = memory[b * s.memory_batch + k * s.memory_row + j];
        p = s.positions - m + k;
    }
    out[idx] = value + positions[p * d + j];
}
