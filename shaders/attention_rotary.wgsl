// Rotary positions for the attention kernels (attention.wgsl, its two backward passes and
// kv_attention.wgsl; their launchers put this file after the kernel). Each head's pairs
// (2j, 2j + 1) turn by the table's angle as Burn's RotaryEncoding turns them, each element with
// its own entry (cos, sin):
//   x'[2j] = x[2j] cos - x[2j + 1] sin,   x'[2j + 1] = x[2j + 1] cos + x[2j] sin.
// The kernel declares D and the binding `rope` ([positions, D, 2]: cos, sin).

// Element d of a head, `x`, turned to position `pos` when `on`; `partner` is the head's element
// d ^ 1 (the other member of the pair).
fn turned(x: f32, partner: f32, pos: u32, d: u32, on: bool) -> f32 {
    if !on {
        return x;
    }
    let e = (pos * D + d) * 2u;
    if d % 2u == 0u {
        return x * rope[e] - partner * rope[e + 1u];
    }
    return x * rope[e] + partner * rope[e + 1u];
}

// The transposed turn at position `pos` of a turned head's gradient, in place: the gradient of
// the head before its turn.
fn unturn(g: ptr<function, array<f32, D>>, pos: u32) {
    for (var d = 0u; d < D; d += 2u) {
        let e = (pos * D + d) * 2u;
        let a = (*g)[d];
        let b = (*g)[d + 1u];
        (*g)[d] = a * rope[e] + b * rope[e + 3u];
        (*g)[d + 1u] = b * rope[e + 2u] - a * rope[e + 1u];
    }
}
