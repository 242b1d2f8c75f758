// The workgroup sum shared by the kernels that reduce over a workgroup of 64 invocations; the
// launchers put it in front of each such kernel's source (WGSL has no includes).

const THREADS: u32 = 64u;

var<workgroup> partial: array<f32, 64>;

// The sum over the workgroup of each invocation's `value`; every invocation gets it.
fn workgroup_sum(t: u32, value: f32) -> f32 {
    partial[t] = value;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride / 2u) {
        if t < stride {
            partial[t] += partial[t + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}
