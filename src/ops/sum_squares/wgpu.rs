//! The wgpu launcher of `shaders/sum_squares.wgsl`: `acc + Σ x²` in one dispatch.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;
use burn::prelude::Shape;

use crate::ops::wgsl::{self, Wgsl};

/// The kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::sum_squares";

/// Whether the kernel serves this call: `f32` tensors on wgpu, `x` no longer than a `u32`
/// counts, and the check on this device passed (or has not run: the check itself calls here).
pub(super) fn serves(x: &CubeTensor, acc: &CubeTensor) -> bool {
    wgsl::serves(x)
        && wgsl::serves(acc)
        && x.shape().num_elements() <= u32::MAX as usize
        && !wgsl::failed(NAME, &x.device)
}

/// `acc + Σ x²`, shaped as `acc` (`[1]`).
pub(super) fn sum_squares_add(acc: CubeTensor, x: CubeTensor) -> CubeTensor {
    let n = x.shape().num_elements();
    let x = burn_cubecl::kernel::into_contiguous(x);
    let acc = burn_cubecl::kernel::into_contiguous(acc);
    let out = wgsl::empty_like(&acc, Shape::new([1]));
    let client = x.client.clone();
    let info = wgsl::info(&client, &[n as u32]);
    let source = format!(
        "{}\n{}",
        include_str!("../../../shaders/workgroup_sum.wgsl"),
        include_str!("../../../shaders/sum_squares.wgsl")
    );
    Wgsl::new(NAME, &source, &[], 64).launch(
        &client,
        CubeCount::Static(1, 1, 1),
        vec![
            x.handle.clone(),
            acc.handle.clone(),
            out.handle.clone(),
            info,
        ],
    );
    out
}
