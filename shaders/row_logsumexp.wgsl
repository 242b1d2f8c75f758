// The logsumexp of one row of `logits`, shared by cross_entropy.wgsl and its backward (the
// launcher puts it after workgroup_sum.wgsl and workgroup_max.wgsl, before the kernel, which
// declares `logits`): the row's maximum first, so no exponential overflows, then
// max + log Σ exp(l - max). Every invocation of the workgroup calls it and gets the result:
// (logsumexp, maximum).

fn row_logsumexp(t: u32, base: u32, vocab: u32) -> vec2<f32> {
    var m = -3.4028235e38;
    for (var i = t; i < vocab; i += THREADS) {
        m = max(m, logits[base + i]);
    }
    let top = workgroup_max(t, m);
    var sum = 0.0;
    for (var i = t; i < vocab; i += THREADS) {
        sum += exp(logits[base + i] - top);
    }
    return vec2<f32>(log(workgroup_sum(t, sum)) + top, top);
}
