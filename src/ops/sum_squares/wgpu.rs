//! The wgpu launcher of `shaders/sum_squares.wgsl`: the sum of the squares of seven tensors
//! (or six and the running total) in one dispatch, their layouts compiled into the kernel.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;
use burn::prelude::Shape;

use super::INPUTS;
use crate::ops::wgsl::{self, Wgsl};

/// The kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::sum_squares";

/// The placeholders of input k's layout: its element count, columns and two strides.
const KEYS: [[&str; 4]; INPUTS] = [
    ["n0", "cols0", "s00", "s10"],
    ["n1", "cols1", "s01", "s11"],
    ["n2", "cols2", "s02", "s12"],
    ["n3", "cols3", "s03", "s13"],
    ["n4", "cols4", "s04", "s14"],
    ["n5", "cols5", "s05", "s15"],
    ["n6", "cols6", "s06", "s16"],
];

/// Whether the kernel serves this call: `f32` tensors on wgpu, each no longer than a `u32`
/// counts, and the check on this device passed (or has not run: the check itself calls here).
pub(super) fn serves(xs: &[CubeTensor]) -> bool {
    xs.iter()
        .all(|x| wgsl::serves(x) && x.shape().num_elements() <= u32::MAX as usize)
        && !wgsl::failed(NAME, &xs[0].device)
}

/// `Σ x²` over the seven `xs`, the last one added as it is when `carried`: `[1]`.
pub(super) fn sum_squares(xs: [CubeTensor; INPUTS], carried: bool) -> CubeTensor {
    let out = wgsl::empty_like(&xs[0], Shape::new([1]));
    let client = out.client.clone();
    let mut values = vec![("carried", usize::from(carried))];
    let mut buffers = Vec::with_capacity(INPUTS + 1);
    for (x, keys) in xs.into_iter().zip(KEYS) {
        let (x, layout) = view(x);
        values.extend(keys.into_iter().zip(layout));
        buffers.push(x.handle);
    }
    buffers.push(out.handle.clone());
    Wgsl::new(
        NAME,
        &[
            include_str!("../../../shaders/workgroup_sum.wgsl"),
            include_str!("../../../shaders/sum_squares.wgsl"),
        ],
        &values,
        64,
    )
    .launch(&client, CubeCount::Static(1, 1, 1), buffers);
    out
}

/// `x` and how the kernel reads it: `[size, cols, s0, s1]`, element `i` at
/// `(i / cols) s0 + (i % cols) s1`. A buffer that holds exactly `x`'s elements, each once, is
/// read in its own order (a sum of squares does not depend on it); a two-axis view (a slice
/// of a packed gradient, a transposed one) through its strides; anything else is copied.
fn view(x: CubeTensor) -> (CubeTensor, [usize; 4]) {
    let n = x.shape().num_elements();
    if x.is_contiguous_buffer() && x.is_nonoverlapping() {
        return (x, [n, n.max(1), 0, 1]);
    }
    if let ([_, cols], [s0, s1]) = (x.meta.shape().as_slice(), &x.meta.strides()[..]) {
        let layout = [n, (*cols).max(1), *s0, *s1];
        return (x, layout);
    }
    let x = burn_cubecl::kernel::into_contiguous(x);
    (x, [n, n.max(1), 0, 1])
}
