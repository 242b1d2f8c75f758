// One query row's online softmax step over a staged key tile, shared by attention.wgsl and
// kv_attention.wgsl (their launchers put it after the kernel): the first `n` keys of k_tile and
// v_tile (D wide each) folded into the row's running maximum `m`, running sum `l` and weighted
// values `acc`, each score biased by bias[bias_at + jj]. The kernel declares D, bias, k_tile and
// v_tile.

struct Running {
    m: f32,
    l: f32,
}

fn fold_tile(
    q: ptr<function, array<f32, D>>,
    acc: ptr<function, array<f32, D>>,
    run: ptr<function, Running>,
    bias_at: u32,
    n: u32,
) {
    for (var jj = 0u; jj < n; jj++) {
        var s = bias[bias_at + jj];
        for (var d = 0u; d < D; d++) {
            s += (*q)[d] * k_tile[jj * D + d];
        }
        let m_new = max((*run).m, s);
        let c = exp((*run).m - m_new);
        let p = exp(s - m_new);
        (*run).l = (*run).l * c + p;
        for (var d = 0u; d < D; d++) {
            (*acc)[d] = (*acc)[d] * c + p * v_tile[jj * D + d];
        }
        (*run).m = m_new;
    }
}
