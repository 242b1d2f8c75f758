//! The wgpu launchers of `shaders/cross_entropy.wgsl` and `shaders/cross_entropy_backward.wgsl`:
//! each row's weighted cross-entropy and arg-max hit, and the rows' gradient, one workgroup
//! per row.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;
use burn::prelude::Shape;

use crate::ops::wgsl::{self, Wgsl};

/// Invocations per workgroup (the shaders' `THREADS`).
const THREADS: u32 = 64;
/// Workgroups along one dispatch axis at most (WebGPU's guaranteed limit).
const MAX_GROUPS: usize = 65_535;

/// The forward kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::cross_entropy";
/// The backward kernel's name.
pub(super) const BACKWARD: &str = "remem::cross_entropy_backward";

/// Whether `kernel` serves these logits: `f32` on wgpu, a non-empty `[rows, vocab]` with
/// fewer than 2^24 columns (the arg-max travels as `f32`), `i32` targets, and the kernel's
/// check on this device passed (or has not run: the check itself calls here).
pub(super) fn serves(kernel: &'static str, logits: &CubeTensor, targets: &CubeTensor) -> bool {
    let shape = logits.shape();
    wgsl::serves(logits)
        && targets.dtype == burn::tensor::DType::I32
        && shape.num_dims() == 2
        && shape.num_elements() > 0
        && shape.num_elements() <= u32::MAX as usize
        && shape[1] < 1 << 24
        && !wgsl::failed(kernel, &logits.device)
}

/// Each row's `weights[n] (logsumexp(logits[n]) - logits[n, targets[n]])` and
/// `weights[n] [argmax(logits[n]) == targets[n]]`, `[rows, 2]`.
pub(super) fn cross_entropy_rows(
    logits: CubeTensor,
    targets: CubeTensor,
    weights: CubeTensor,
) -> CubeTensor {
    let [rows, _] = dims(&logits);
    launch(
        NAME,
        include_str!("../../../shaders/cross_entropy.wgsl"),
        [logits, targets, weights].into(),
        Shape::new([rows, 2]),
    )
}

/// The logits' gradient `grad[0] weights[n] (softmax(logits[n]) - onehot(targets[n]))` from
/// the totals' gradient `grad` (`[2]`).
pub(super) fn cross_entropy_totals_backward(
    logits: CubeTensor,
    targets: CubeTensor,
    weights: CubeTensor,
    grad: CubeTensor,
) -> CubeTensor {
    let shape = logits.shape();
    launch(
        BACKWARD,
        include_str!("../../../shaders/cross_entropy_backward.wgsl"),
        [logits, targets, weights, grad].into(),
        shape,
    )
}

/// One dispatch of `kernel` (its source after the shared workgroup sum, maximum, row sizes
/// and row logsumexp), one workgroup per row of `inputs[0]` (the logits), with `inputs` bound
/// in order, then a new output of `out_shape`, then the sizes.
fn launch(
    name: &'static str,
    kernel: &'static str,
    inputs: Vec<CubeTensor>,
    out_shape: Shape,
) -> CubeTensor {
    let [rows, vocab] = dims(&inputs[0]);
    let inputs: Vec<CubeTensor> = inputs
        .into_iter()
        .map(burn_cubecl::kernel::into_contiguous)
        .collect();
    let out = wgsl::empty_like(&inputs[0], out_shape);
    let client = inputs[0].client.clone();
    let info = wgsl::info(&client, &[rows as u32, vocab as u32]);
    let mut buffers: Vec<_> = inputs.iter().map(|t| t.handle.clone()).collect();
    buffers.extend([out.handle.clone(), info]);
    let parts = [
        include_str!("../../../shaders/workgroup_sum.wgsl"),
        include_str!("../../../shaders/workgroup_max.wgsl"),
        include_str!("../../../shaders/row_sizes.wgsl"),
        include_str!("../../../shaders/row_logsumexp.wgsl"),
        kernel,
    ];
    Wgsl::new(name, &parts, &[], THREADS).launch(&client, groups(rows), buffers);
    out
}

/// `[rows, vocab]` of a 2-d tensor.
fn dims(logits: &CubeTensor) -> [usize; 2] {
    let shape = logits.shape();
    [shape[0], shape[1]]
}

/// `n` workgroups spread over the dispatch's first two axes.
fn groups(n: usize) -> CubeCount {
    CubeCount::Static(n.min(MAX_GROUPS) as u32, n.div_ceil(MAX_GROUPS) as u32, 1)
}
