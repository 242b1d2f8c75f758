// One query row's online softmax step over a staged key tile, shared by attention.wgsl and
// kv_attention.wgsl (their launchers put it after the kernel): the first `n` keys of k_tile and
// v_tile (D wide each) folded into the row's running maximum `m`, running sum `l` and weighted
// values `acc`, each score biased by bias[bias_at + jj]. The kernel declares D, KEYS, bias,
// k_tile and v_tile.
//
// A whole tile at a time, as flash attention does: the tile's KEYS scores first, the dimension
// outermost so the KEYS dot products advance side by side (independent chains, where one key
// at a time is one chain of D dependent additions), then one rescale of `acc` per tile rather
// than per key, and the weighted values with the keys innermost, again side by side.

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
    var s = tile_scores(q, bias_at, n);
    fold_scores(&s, acc, run, n);
}

// The tile's KEYS biased scores q · k_jj + bias[bias_at + jj]; past `n` (the last tile's
// padding) the bias is not read and the score is not used.
fn tile_scores(q: ptr<function, array<f32, D>>, bias_at: u32, n: u32) -> array<f32, KEYS> {
    var s: array<f32, KEYS>;
    for (var jj = 0u; jj < KEYS; jj++) {
        s[jj] = 0.0;
    }
    for (var d = 0u; d < D; d++) {
        let qd = (*q)[d];
        for (var jj = 0u; jj < KEYS; jj++) {
            s[jj] += qd * k_tile[jj * D + d];
        }
    }
    for (var jj = 0u; jj < n; jj++) {
        s[jj] += bias[bias_at + jj];
    }
    return s;
}

// The first `n` of the tile's scores `s` folded into the running maximum, sum and weighted
// values (`s` is spent: it holds the tile's unnormalised weights afterwards).
fn fold_scores(
    s: ptr<function, array<f32, KEYS>>,
    acc: ptr<function, array<f32, D>>,
    run: ptr<function, Running>,
    n: u32,
) {
    var m_new = (*run).m;
    for (var jj = 0u; jj < n; jj++) {
        m_new = max(m_new, (*s)[jj]);
    }
    // Keys past `n` weigh nothing.
    var l = 0.0;
    for (var jj = 0u; jj < KEYS; jj++) {
        var p = 0.0;
        if jj < n {
            p = exp((*s)[jj] - m_new);
        }
        (*s)[jj] = p;
        l += p;
    }
    let c = exp((*run).m - m_new);
    (*run).l = (*run).l * c + l;
    (*run).m = m_new;
    for (var d = 0u; d < D; d++) {
        var a = (*acc)[d] * c;
        for (var jj = 0u; jj < KEYS; jj++) {
            a += (*s)[jj] * v_tile[jj * D + d];
        }
        (*acc)[d] = a;
    }
}
