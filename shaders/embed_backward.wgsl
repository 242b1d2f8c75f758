// The gradients of embed.wgsl's table, memory and positions from the rows' gradient, in one
// dispatch: invocations [0, V D) write the table's, the next B M D the memory's, the next P D
// the positions', each one element summing what reached it in a fixed order:
//   dtable[v, j]    = Σ_b Σ_i [tokens[b, i] == v] grad[b, R + i, j]
//   dmemory[b, k, j] = grad[b, k, j] + grad[b, R + T + k, j]  (each term where its rows exist)
//   dpositions[p, j] = Σ_b grad[b, row(p), j], row(p) the layout row at position p, if any,
// with R the read rows before the tokens (M for RMT, 0 for ARMT).
//
// Every binding is read_write, inputs too (see attention.wgsl). Launched by
// src/ops/embed/wgpu.rs, which puts embed_sizes.wgsl first. Dispatch: ceil((V D + B M D + P D) / 64) invocations over the first
// two axes.

@group(0) @binding(0) var<storage, read_write> grad: array<f32>;       // [B, L, D]
@group(0) @binding(1) var<storage, read_write> tokens: array<i32>;     // [B, T], strided
@group(0) @binding(2) var<storage, read_write> dtable: array<f32>;     // [V, D]
@group(0) @binding(3) var<storage, read_write> dmemory: array<f32>;    // [B, M, D]
@group(0) @binding(4) var<storage, read_write> dpositions: array<f32>; // [P, D]
@group(0) @binding(5) var<storage, read_write> info: array<u32>;       // see embed_sizes.wgsl

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(num_workgroups) groups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let s = sizes();
    let batch = s.batch;
    let rows = s.rows;
    let d = s.d;
    let m = s.m;
    let lead = s.lead;
    let n = s.n;
    let p_len = s.positions;
    let vocab = s.vocab;
    let write = rows > lead + n;
    var idx = (group.y * groups.x + group.x) * 64u + t;
    if idx < vocab * d {
        let v = idx / d;
        let j = idx % d;
        var sum = 0.0;
        for (var b = 0u; b < batch; b++) {
            for (var i = 0u; i < n; i++) {
                if token_id(s, b, i) == v {
                    sum += grad[(b * rows + lead + i) * d + j];
                }
            }
        }
        dtable[idx] = sum;
        return;
    }
    idx -= vocab * d;
    if idx < batch * m * d {
        let j = idx % d;
        let k = (idx / d) % m;
        let b = idx / (d * m);
        var sum = 0.0;
        if lead > 0u {
            sum += grad[(b * rows + k) * d + j];
        }
        if write {
            sum += grad[(b * rows + lead + n + k) * d + j];
        }
        dmemory[idx] = sum;
        return;
    }
    idx -= batch * m * d;
    if idx < p_len * d {
        let j = idx % d;
        let p = idx / d;
        // The layout row at position p: the read memory and the tokens at their own index,
        // the write memory at the table's last M rows; none for the rest.
        var r = rows;
        if p < lead + n {
            r = p;
        } else if write && p >= p_len - m {
            r = lead + n + (p - (p_len - m));
        }
        var sum = 0.0;
        if r < rows {
            for (var b = 0u; b < batch; b++) {
                sum += grad[(b * rows + r) * d + j];
            }
        }
        dpositions[idx] = sum;
    }
}
