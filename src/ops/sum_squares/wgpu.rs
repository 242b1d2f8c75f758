//! The wgpu launcher of `shaders/sum_squares.wgsl`: `acc + Σ x²` over five tensors in one
//! dispatch.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;
use burn::prelude::Shape;

use crate::ops::wgsl::{self, Wgsl};

/// The kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::sum_squares";

/// Whether the kernel serves this call: `f32` tensors on wgpu, each `x` no longer than a `u32`
/// counts, and the check on this device passed (or has not run: the check itself calls here).
pub(super) fn serves(xs: &[CubeTensor], acc: &CubeTensor) -> bool {
    xs.iter()
        .all(|x| wgsl::serves(x) && x.shape().num_elements() <= u32::MAX as usize)
        && wgsl::serves(acc)
        && !wgsl::failed(NAME, &acc.device)
}

/// `acc + Σ x²` over the five `xs`, shaped as `acc` (`[1]`).
pub(super) fn sum_squares_add(acc: CubeTensor, xs: [CubeTensor; 5]) -> CubeTensor {
    let acc = burn_cubecl::kernel::into_contiguous(acc);
    let out = wgsl::empty_like(&acc, Shape::new([1]));
    let client = acc.client.clone();
    let (xs, layouts): (Vec<_>, Vec<_>) = xs.into_iter().map(view).unzip();
    let info = wgsl::info(&client, &layouts.concat());
    let mut buffers: Vec<_> = xs.iter().map(|x| x.handle.clone()).collect();
    buffers.extend([acc.handle.clone(), out.handle.clone(), info]);
    Wgsl::new(
        NAME,
        &[
            include_str!("../../../shaders/workgroup_sum.wgsl"),
            include_str!("../../../shaders/sum_squares.wgsl"),
        ],
        &[],
        64,
    )
    .launch(&client, CubeCount::Static(1, 1, 1), buffers);
    out
}

/// `x` and how the kernel reads it: `[size, cols, s0, s1]`, element `i` at
/// `(i / cols) s0 + (i % cols) s1`. A buffer that holds exactly `x`'s elements, each once, is
/// read in its own order (a sum of squares does not depend on it); a two-axis view (a slice
/// of a packed gradient, a transposed one) through its strides; anything else is copied.
fn view(x: CubeTensor) -> (CubeTensor, [u32; 4]) {
    let n = x.shape().num_elements() as u32;
    if x.is_contiguous_buffer() && x.is_nonoverlapping() {
        return (x, [n, n, 0, 1]);
    }
    if let ([_, cols], [s0, s1]) = (x.meta.shape().as_slice(), &x.meta.strides()[..]) {
        let layout = [n, *cols as u32, *s0 as u32, *s1 as u32];
        return (x, layout);
    }
    let x = burn_cubecl::kernel::into_contiguous(x);
    (x, [n, n, 0, 1])
}
