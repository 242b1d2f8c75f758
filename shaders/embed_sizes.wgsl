// What the embedding kernels (embed.wgsl, embed_backward.wgsl) share, put in front of their
// source by the launcher: the sizes in `info` (batch, rows L, width D, memory M, tokens T,
// positions P, vocabulary V, then the strides of the tokens' rows, the memory's batch and the
// memory's rows: the inputs may be views, a segment's slice of the ids, the rows of the
// previous segment's output, a batch broadcast; last the memory rows before the tokens, M for
// RMT's read rows or 0 for ARMT's layout), and a token's id. The kernels declare `info`
// and `tokens`.

struct Sizes {
    batch: u32,
    rows: u32,
    d: u32,
    m: u32,
    n: u32,
    positions: u32,
    vocab: u32,
    token_row: u32,
    memory_batch: u32,
    memory_row: u32,
    lead: u32,
}

fn sizes() -> Sizes {
    return Sizes(info[0], info[1], info[2], info[3], info[4], info[5], info[6], info[7],
        info[8], info[9], info[10]);
}

// The id of token i of batch row b; an id outside the table reads its nearest end (the caller
// checks ids against the vocabulary).
fn token_id(s: Sizes, b: u32, i: u32) -> u32 {
    return u32(clamp(tokens[b * s.token_row + i], 0, i32(s.vocab) - 1));
}
