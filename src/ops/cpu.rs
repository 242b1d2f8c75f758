//! What remem's CPU kernels ([`super::gelu`], [`super::layer_norm`], [`super::softmax`], [`super::matmul`], [`super::attention`]) share: f32
//! views of flex tensors, a loop over chunks on the thread pool, and the arithmetic that makes
//! their loops vectorise.
//!
//! Vector code: the helpers below ([`exp`], [`sum8`], [`max8`], [`map_sum8`]) have no branches
//! or library calls and keep eight partial results, so the compiler turns their loops into
//! vector instructions. remem builds for the baseline x86-64 (SSE2, four lanes); on x86-64 CPUs
//! with AVX2 (nearly all since 2013), [`for_chunks`] runs each chunk through a copy of the
//! kernel compiled for AVX2's eight lanes, chosen at run time. Both copies do the same
//! operations in the same order, so they give the same bits.

use std::mem::MaybeUninit;

use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{Bytes, DType, Shape};

/// Whether the kernels in this crate can take `t`: f32. Other dtypes go to Burn's own ops.
pub(crate) fn is_f32(t: &FlexTensor) -> bool {
    t.dtype() == DType::F32
}

/// The elements of the contiguous f32 tensor `t`, in row-major order.
///
/// # Panics
/// if `t` is not contiguous (call [`FlexTensor::to_contiguous`] first)
pub(crate) fn f32s(t: &FlexTensor) -> &[f32] {
    let (start, end) = t.layout().contiguous_offsets().expect("contiguous tensor");
    &t.storage::<f32>()[start..end]
}

/// `t` as a contiguous f32 tensor whose buffer nothing else holds, starting at element 0, so it
/// can be overwritten: `t` itself when it already is one (as at inference, and for most
/// gradients), else a copy.
pub(crate) fn owned(t: FlexTensor) -> FlexTensor {
    // Checked on `t` itself: `FlexTensor::to_contiguous` borrows, so on a contiguous tensor it
    // returns a second handle to the same buffer, which is then never unique.
    if writable(&t) {
        return t;
    }
    let t = {
        let copy = t.to_contiguous();
        drop(t);
        copy
    };
    if writable(&t) {
        return t;
    }
    new(f32s(&t).to_vec(), &t)
}

/// Whether `t` is contiguous from element 0 and the only handle to its buffer.
fn writable(t: &FlexTensor) -> bool {
    let n = t.layout().num_elements();
    t.is_unique() && t.layout().contiguous_offsets() == Some((0, n))
}

/// The elements of an [`owned`] tensor, to overwrite.
pub(crate) fn f32s_mut(t: &mut FlexTensor) -> &mut [f32] {
    let n = t.layout().num_elements();
    &mut t.storage_mut::<f32>()[..n]
}

/// A contiguous f32 tensor of `values` with the shape of `like`.
pub(crate) fn new(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    with_shape(values, like.layout().shape().clone())
}

/// A contiguous f32 tensor of `values`, row-major in `shape`, without copying them.
pub(crate) fn with_shape(values: Vec<f32>, shape: Shape) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// A pass over chunks of an f32 buffer, as [`for_chunks`] runs it. Implementations mark `run`
/// `#[inline(always)]`: it is then compiled into both the baseline and the AVX2 copy of the
/// loop (a closure would be inlined only when small, so the AVX2 copy would call the baseline
/// code).
pub(crate) trait Kernel: Sync {
    /// What each chunk gives back.
    type Out: Send;
    /// Process `chunk`, whose first element is element `start` of the buffer.
    fn run(&self, start: usize, chunk: &mut [f32]) -> Self::Out;
}

/// `kernel` over the chunks of `out` of `len` elements (the last may be shorter), on the thread
/// pool when there is more than one chunk (always on the calling thread on wasm), compiled for
/// AVX2 where the CPU has it. Returns what each chunk gave back, in chunk order.
pub(crate) fn for_chunks<K: Kernel>(out: &mut [f32], len: usize, kernel: &K) -> Vec<K::Out> {
    let len = len.max(1);
    let run = |(c, chunk): (usize, &mut [f32])| vectorised(kernel, c * len, chunk);
    // One chunk runs on the calling thread: handing it to the pool costs more than it saves.
    #[cfg(not(target_family = "wasm"))]
    if out.len() > len {
        use rayon::prelude::*;
        return out.par_chunks_mut(len).enumerate().map(run).collect();
    }
    out.chunks_mut(len).enumerate().map(run).collect()
}

/// A pass that rewrites one f32 buffer in place and fills a second, uninitialised one of the same
/// length, chunk by chunk, as [`for_chunk_pairs`] runs it; `run` is `#[inline(always)]` for the
/// reason [`Kernel`] gives.
pub(crate) trait PairKernel: Sync {
    /// Rewrite `a` and write every element of `b`; their first elements are element `start` of
    /// their buffers.
    fn run(&self, start: usize, a: &mut [f32], b: &mut [MaybeUninit<f32>]);
}

/// `kernel` over the chunks of `a` and `b` (the same length) of `len` elements side by side, as
/// [`for_chunks`] runs a [`Kernel`].
pub(crate) fn for_chunk_pairs<K: PairKernel>(
    a: &mut [f32],
    b: &mut [MaybeUninit<f32>],
    len: usize,
    kernel: &K,
) {
    assert_eq!(a.len(), b.len(), "paired buffers differ in length");
    let len = len.max(1);
    let run = |(c, (a, b)): (usize, (&mut [f32], &mut [MaybeUninit<f32>]))| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, the only feature `avx2_pair` is compiled for.
            return unsafe { avx2_pair(kernel, c * len, a, b) };
        }
        kernel.run(c * len, a, b)
    };
    #[cfg(not(target_family = "wasm"))]
    if a.len() > len {
        use rayon::prelude::*;
        let pairs = a.par_chunks_mut(len).zip(b.par_chunks_mut(len));
        return pairs.enumerate().for_each(run);
    }
    a.chunks_mut(len)
        .zip(b.chunks_mut(len))
        .enumerate()
        .for_each(run)
}

/// `kernel.run(start, a, b)` compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_pair<K: PairKernel>(
    kernel: &K,
    start: usize,
    a: &mut [f32],
    b: &mut [MaybeUninit<f32>],
) {
    kernel.run(start, a, b)
}

/// `kernel.run(start, chunk)`, through [`avx2`] when the CPU has AVX2.
#[inline]
pub(crate) fn vectorised<K: Kernel>(kernel: &K, start: usize, chunk: &mut [f32]) -> K::Out {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, the only feature `avx2` is compiled for.
        return unsafe { avx2(kernel, start, chunk) };
    }
    kernel.run(start, chunk)
}

/// `kernel.run(start, chunk)` compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2<K: Kernel>(kernel: &K, start: usize, chunk: &mut [f32]) -> K::Out {
    kernel.run(start, chunk)
}

/// Elements per task on the thread pool: smaller chunks cost more in hand-offs than they gain.
pub(crate) const CHUNK: usize = 1 << 14;

/// A chunk length for [`for_chunks`] that holds whole rows of `row_len` and about [`CHUNK`]
/// elements.
pub(crate) fn rows_chunk(row_len: usize) -> usize {
    row_len.max(1) * (CHUNK / row_len.max(1)).max(1)
}

/// `Σ f(x)` over `xs`: element `c` into partial sum `c % 8`, the eight then summed in order. A
/// loop the compiler vectorises, and the same bits on every machine.
#[inline(always)]
pub(crate) fn sum8(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut blocks = xs.chunks_exact(8);
    for block in &mut blocks {
        for i in 0..8 {
            acc[i] += f(block[i]);
        }
    }
    for (i, &x) in blocks.remainder().iter().enumerate() {
        acc[i] += f(x);
    }
    acc.iter().sum()
}

/// `Σ f(a_i, b_i)` over the pairs of `a` and `b`, added up as [`sum8`] does.
#[inline(always)]
pub(crate) fn sum8_zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let (mut blocks_a, mut blocks_b) = (a.chunks_exact(8), b.chunks_exact(8));
    for (x, y) in (&mut blocks_a).zip(&mut blocks_b) {
        for i in 0..8 {
            acc[i] += f(x[i], y[i]);
        }
    }
    let rest = blocks_a.remainder().iter().zip(blocks_b.remainder());
    for (i, (&x, &y)) in rest.enumerate() {
        acc[i] += f(x, y);
    }
    acc.iter().sum()
}

/// The largest element of `xs` (-inf when empty), in eight lanes.
#[inline(always)]
pub(crate) fn max8(xs: &[f32]) -> f32 {
    let mut m = [f32::NEG_INFINITY; 8];
    let mut blocks = xs.chunks_exact(8);
    for block in &mut blocks {
        for i in 0..8 {
            m[i] = m[i].max(block[i]);
        }
    }
    for (i, &x) in blocks.remainder().iter().enumerate() {
        m[i] = m[i].max(x);
    }
    m.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// `e^x` in f32 without branches or library calls, so that loops over it vectorise: `2^n e^r`
/// with `n = round(x / ln 2)`, `|r| <= ln 2 / 2`, and Cephes' degree-6 polynomial for `e^r`
/// (within 2 ulp of `f32::exp`). Below -87.3 (the smallest normal result) it returns exactly 0,
/// as masked attention scores need.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 · 2^23 rounds to the nearest integer n, which then sits in the low bits of
    // the sum's mantissa; subtracting it again gives n as a float.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.clamp(-87.3, 88.7);
    let shifted = clamped * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_2e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // 2^n from the bits of n in `shifted` (shifted into the exponent field, the rest shifted
    // out), without a float-to-integer conversion: Rust's saturating `as i32` does not
    // vectorise, and took each lane apart (half of GELU's time).
    let two_n = f32::from_bits((shifted.to_bits() << 23).wrapping_add(127 << 23));
    if x < -87.3 { 0.0 } else { e_r * two_n }
}

/// What the kernels' tests share.
#[cfg(test)]
pub(crate) mod tests {
    use burn::prelude::*;

    /// The elements of `t` as f32.
    pub(crate) fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec().unwrap()
    }

    #[test]
    fn owned_reuses_a_sole_contiguous_buffer_and_copies_a_shared_one() {
        use super::{FlexTensor, Layout, f32s, f32s_mut, owned};
        use burn::tensor::{Bytes, DType, Shape};
        let tensor = || {
            FlexTensor::new(
                Bytes::from_elems(vec![1.0f32, 2.0, 3.0, 4.0]),
                Layout::contiguous(Shape::new([2, 2])),
                DType::F32,
            )
        };
        let sole = tensor();
        let at = f32s(&sole).as_ptr();
        assert_eq!(f32s(&owned(sole)).as_ptr(), at, "a sole buffer is reused");

        let shared = tensor();
        let mut mine = owned(shared.clone());
        assert_ne!(f32s(&mine).as_ptr(), f32s(&shared).as_ptr());
        f32s_mut(&mut mine)[0] = 9.0;
        assert_eq!(
            f32s(&shared),
            [1.0, 2.0, 3.0, 4.0],
            "the other handle is untouched"
        );
    }

    #[test]
    fn exp_is_within_two_ulp_and_zero_below_the_normal_range() {
        for i in 0..=175_000 {
            let x = -87.0 + i as f32 / 1000.0;
            let (ours, libm) = (super::exp(x), x.exp());
            assert!(
                ((ours - libm) / libm).abs() <= 2.5e-7,
                "exp({x}) = {ours}, libm {libm}"
            );
        }
        assert_eq!(super::exp(0.0), 1.0);
        assert_eq!(super::exp(-88.0), 0.0);
        assert_eq!(super::exp(-1e9), 0.0);
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn lane_sums_and_max_agree_with_plain_loops() {
        // 8 full blocks and a remainder of 5, values spread over magnitudes.
        let xs: Vec<f32> = (0..69).map(|i| ((i * 37) % 23) as f32 - 11.5).collect();
        let ys: Vec<f32> = (0..69).map(|i| (i as f32 / 7.0).sin()).collect();
        let plain: f64 = xs.iter().map(|&x| x as f64).sum();
        assert!((super::sum8(&xs, |x| x) as f64 - plain).abs() < 1e-4);
        let dot: f64 = xs.iter().zip(&ys).map(|(&x, &y)| x as f64 * y as f64).sum();
        assert!((super::sum8_zip(&xs, &ys, |x, y| x * y) as f64 - dot).abs() < 1e-4);
        assert_eq!(
            super::sum8_zip(&xs, &ys[..5], |x, _| x),
            xs[..5].iter().sum::<f32>()
        );
        assert_eq!(super::max8(&xs), 10.5);
        assert_eq!(
            super::max8(&xs[..3]),
            xs[..3].iter().cloned().fold(f32::MIN, f32::max)
        );
        assert_eq!(super::max8(&[]), f32::NEG_INFINITY);
    }

    /// The largest elementwise difference of `a` and `b`.
    pub(crate) fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }
}
