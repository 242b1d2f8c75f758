// A segment's layout rows: the memory rows and the tokens' embeddings, each plus its learned
// position, one invocation per output element:
//   row r <  M          : memory[b, r]          + positions[r]
//   row r <  M + T      : table[tokens[b, r - M]] + positions[r]
//   row r >= M + T      : memory[b, r - M - T]  + positions[P - M + (r - M - T)]
// (the last M rows, the decoder's write memory, exist only when `write` is 1; their positions
// are the table's last M rows, where they sit for a whole segment). A token id past the
// table reads its last row (the caller checks ids against the vocabulary).
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/embed/wgpu.rs. Dispatch: ceil(B L D / 64) invocations over the first two axes.

@group(0) @binding(0) var<storage, read_write> table: array<f32>;     // [V, D]
@group(0) @binding(1) var<storage, read_write> tokens: array<i32>;    // [B, T], strided
@group(0) @binding(2) var<storage, read_write> memory: array<f32>;    // [B, M, D], strided
@group(0) @binding(3) var<storage, read_write> positions: array<f32>; // [P, D]
@group(0) @binding(4) var<storage, read_write> out: array<f32>;       // [B, L, D]
// batch, rows L, width D, memory M, tokens T, positions P, vocabulary V, then the strides of
// the tokens' rows, the memory's batch and the memory's rows (the inputs may be views: a
// segment's slice of the ids, the rows of the previous segment's output, a batch broadcast)
@group(0) @binding(5) var<storage, read_write> info: array<u32>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let rows = info[1];
    let d = info[2];
    let m = info[3];
    let n = info[4];
    let p_len = info[5];
    let vocab = info[6];
    let token_row = info[7];
    let memory_batch = info[8];
    let memory_row = info[9];
    let idx = (group.y * groups.x + group.x) * 64u + t;
    if idx >= info[0] * rows * d {
        return;
    }
    let j = idx % d;
    let r = (idx / d) % rows;
    let b = idx / (d * rows);
    var value: f32;
    var p = r;
    if r < m {
        value = memory[b * memory_batch + r * memory_row + j];
    } else if r < m + n {
        let id = u32(clamp(tokens[b * token_row + r - m], 0, i32(vocab) - 1));
        value = table[id * d + j];
    } else {
        let k = r - m - n;
        value = memory[b * memory_batch + k * memory_row + j];
        p = p_len - m + k;
    }
    out[idx] = value + positions[p * d + j];
}
