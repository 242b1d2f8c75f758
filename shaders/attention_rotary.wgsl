// Rotary positions for the packed attention kernels (attention.wgsl and its two backward passes;
// their launchers put this file after the kernel). Each head's pairs (2j, 2j + 1) turn by the
// table's angle as Burn's RotaryEncoding turns them, each element with its own entry (cos, sin):
//   x'[2j] = x[2j] cos - x[2j + 1] sin,   x'[2j + 1] = x[2j + 1] cos + x[2j] sin.
// The kernel declares D and the bindings `qkv` and `rope` ([positions, D, 2]: cos, sin).

// Element d of the head that starts at qkv[at], turned to position `pos` when `on`.
fn turned(at: u32, pos: u32, d: u32, on: bool) -> f32 {
    let x = qkv[at + d];
    if !on {
        return x;
    }
    let e = (pos * D + d) * 2u;
    if d % 2u == 0u {
        return x * rope[e] - qkv[at + d + 1u] * rope[e + 1u];
    }
    return x * rope[e] + qkv[at + d - 1u] * rope[e + 1u];
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
