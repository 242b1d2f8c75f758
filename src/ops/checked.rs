//! Run-time checks of the CPU kernels' `unsafe` invariants.
//!
//! Every `unsafe` block in remem states its invariant next to it and enforces it here when
//! checks are on: with debug assertions, or with the `checked` feature, which the test suite
//! turns on (the crate's dev-dependency on itself), so `cargo test --release` runs every kernel
//! checked while `cargo run --release` does not pay for it.
//!
//! Buffers the kernels fill without zeroing ([`buffer`]) start, when checks are on, with a
//! marker no arithmetic writes (a NaN with its own payload); [`set_written`] and
//! [`all_written`] then prove that every element was written before it is read.

// The CPU kernels that use these are not built for wasm.
#![cfg_attr(target_family = "wasm", allow(dead_code))]

use std::mem::MaybeUninit;

/// Whether the invariants are checked in this build.
pub(crate) const ON: bool = cfg!(any(debug_assertions, feature = "checked"));

/// The bits of an element no kernel has written yet (a NaN payload arithmetic never produces).
const UNWRITTEN: u32 = 0x7fa5_a5a5;

/// Panic with `what` when checks are on and `ok` is false.
#[track_caller]
pub(crate) fn invariant(ok: bool, what: &str) {
    if ON {
        assert!(ok, "broken invariant: {what}");
    }
}

/// Room for `len` f32s that kernels will write whole before anything reads them; with checks
/// on, every element starts as the unwritten marker.
pub(crate) fn buffer(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    if ON {
        v.spare_capacity_mut()[..len].fill(MaybeUninit::new(f32::from_bits(UNWRITTEN)));
    }
    v
}

/// Whether every element of `x`, from a [`buffer`], was written (always true with checks off).
pub(crate) fn all_written(x: &[MaybeUninit<f32>]) -> bool {
    !ON || x.iter().all(|v| {
        // SAFETY: with checks on, `buffer` initialised every element (with the marker) before
        // any kernel ran; with checks off this is never reached.
        unsafe { v.assume_init() }.to_bits() != UNWRITTEN
    })
}

/// Give `buf` (from [`buffer`]) the length `len` once kernels have written its first `len`
/// elements; with checks on, a kernel that left one unwritten is caught here.
#[track_caller]
pub(crate) fn set_written(buf: &mut Vec<f32>, len: usize) {
    assert!(len <= buf.capacity(), "set_written past the buffer");
    invariant(
        all_written(&buf.spare_capacity_mut()[..len]),
        "a kernel left elements of its output unwritten",
    );
    // SAFETY: `len` is within the capacity (asserted), and the kernels wrote elements `0..len`
    // (checked above when checks are on).
    unsafe { buf.set_len(len) }
}

/// Whether the `rows × cols` matrix at `start` with strides `(row_stride, col_stride)` lies
/// inside a buffer of `len` elements (any sign of stride).
pub(crate) fn matrix_fits(
    len: usize,
    start: isize,
    [rows, cols]: [usize; 2],
    [row_stride, col_stride]: [isize; 2],
) -> bool {
    if rows == 0 || cols == 0 {
        return true;
    }
    let reach = |n: usize, stride: isize| (n as isize - 1) * stride;
    let (r, c) = (reach(rows, row_stride), reach(cols, col_stride));
    let low = start + r.min(0) + c.min(0);
    let high = start + r.max(0) + c.max(0);
    low >= 0 && (high as usize) < len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_are_on_in_the_test_suite() {
        const { assert!(ON, "the test suite must run the kernels checked") };
    }

    #[test]
    fn an_unwritten_element_is_caught() {
        let mut buf = buffer(4);
        for (i, x) in buf.spare_capacity_mut()[..3].iter_mut().enumerate() {
            x.write(i as f32);
        }
        let caught = std::panic::catch_unwind(move || set_written(&mut buf, 4));
        assert!(caught.is_err(), "the fourth element was never written");
    }

    #[test]
    fn matrices_inside_and_outside_their_buffer() {
        assert!(matrix_fits(12, 0, [3, 4], [4, 1]));
        assert!(!matrix_fits(11, 0, [3, 4], [4, 1]));
        assert!(matrix_fits(12, 11, [3, 4], [-4, -1]));
        assert!(!matrix_fits(12, 10, [3, 4], [-4, -1]));
    }
}
