// The workgroup maximum, for the kernels that also use workgroup_sum.wgsl (whose `partial`
// array and THREADS it shares); the launchers put both in front of the kernel's source.

// The maximum over the workgroup of each invocation's `value`; every invocation gets it.
fn workgroup_max(t: u32, value: f32) -> f32 {
    partial[t] = value;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride / 2u) {
        if t < stride {
            partial[t] = max(partial[t], partial[t + stride]);
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
