//! The wgpu launchers of `shaders/cross_entropy.wgsl` and `shaders/cross_entropy_backward.wgsl`:
//! each row's weighted cross-entropy, and its gradient, one workgroup per row.

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

/// Whether `kernel` serves these logits: `f32` on wgpu, a non-empty `[rows, vocab]`, and the
/// kernel's check on this device passed (or has not run: the check itself calls here).
pub(super) fn serves(kernel: &'static str, logits: &CubeTensor) -> bool {
    let shape = logits.shape();
    wgsl::serves(logits)
        && shape.num_dims() == 2
        && shape.num_elements() > 0
        && shape.num_elements() <= u32::MAX as usize
        && !wgsl::failed(kernel, &logits.device)
}

/// A kernel's source after the shared workgroup sum and maximum.
fn source(kernel: &str) -> String {
    format!(
        "{}\n{}\n{kernel}",
        include_str!("../../../shaders/workgroup_sum.wgsl"),
        include_str!("../../../shaders/workgroup_max.wgsl")
    )
}

/// Each row's `weights[n] (logsumexp(logits[n]) - logits[n, targets[n]])`, `[rows]`.
pub(super) fn cross_entropy_rows(
    logits: CubeTensor,
    targets: CubeTensor,
    weights: CubeTensor,
) -> CubeTensor {
    let [rows, vocab] = dims(&logits);
    let logits = burn_cubecl::kernel::into_contiguous(logits);
    let targets = burn_cubecl::kernel::into_contiguous(targets);
    let weights = burn_cubecl::kernel::into_contiguous(weights);
    let out = wgsl::empty_like(&logits, Shape::new([rows]));
    let client = logits.client.clone();
    let info = wgsl::info(&client, &[rows as u32, vocab as u32]);
    let kernel = Wgsl::new(
        NAME,
        &source(include_str!("../../../shaders/cross_entropy.wgsl")),
        &[],
        THREADS,
    );
    kernel.launch(
        &client,
        groups(rows),
        vec![
            logits.handle.clone(),
            targets.handle.clone(),
            weights.handle.clone(),
            out.handle.clone(),
            info,
        ],
    );
    out
}

/// The logits' gradient `grad[n] weights[n] (softmax(logits[n]) - onehot(targets[n]))`.
pub(super) fn cross_entropy_rows_backward(
    logits: CubeTensor,
    targets: CubeTensor,
    weights: CubeTensor,
    grad: CubeTensor,
) -> CubeTensor {
    let [rows, vocab] = dims(&logits);
    let logits = burn_cubecl::kernel::into_contiguous(logits);
    let targets = burn_cubecl::kernel::into_contiguous(targets);
    let weights = burn_cubecl::kernel::into_contiguous(weights);
    let grad = burn_cubecl::kernel::into_contiguous(grad);
    let dlogits = wgsl::empty_like(&logits, Shape::new([rows, vocab]));
    let client = logits.client.clone();
    let info = wgsl::info(&client, &[rows as u32, vocab as u32]);
    let kernel = Wgsl::new(
        BACKWARD,
        &source(include_str!("../../../shaders/cross_entropy_backward.wgsl")),
        &[],
        THREADS,
    );
    kernel.launch(
        &client,
        groups(rows),
        vec![
            logits.handle.clone(),
            targets.handle.clone(),
            weights.handle.clone(),
            grad.handle.clone(),
            dlogits.handle.clone(),
            info,
        ],
    );
    dlogits
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
