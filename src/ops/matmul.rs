//! Matrix products, with a CPU path that writes straight into its output.
//!
//! Burn's flex backend runs the same GEMM (the `gemm` crate) but allocates each product's output
//! zero-filled as bytes and then copies it into a buffer of stricter alignment before the GEMM
//! overwrites it: two passes over every output, 6-7% of remem's CPU training time in profiles.
//! This backend extension calls the GEMM on an uninitialised f32 buffer instead, with the same
//! threading policy (large products split across the pool, batches of small ones spread over
//! it). The gradient is two more products through the same path. GPU backends run Burn's
//! matmul. [`matmul`] is the entry point; [`linear`](mod@crate::nn::linear) and attention use
//! it.

#[cfg(feature = "train")]
use burn::backend::Autodiff;
#[cfg(feature = "train")]
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
#[cfg(any(feature = "train", not(target_family = "wasm")))]
use burn::backend::ops::FloatTensorOps;
use burn::backend::{Backend, Cube, Dispatch, Flex, backend_extension, tensor::FloatTensor};
use burn::prelude::*;
#[cfg(not(target_family = "wasm"))]
use {
    super::checked, super::cpu, burn::backend::flex::FlexTensor, gemm::Parallelism,
    rayon::prelude::*,
};

/// The matrix product as a backend operation, so that the CPU can run its own.
#[backend_extension(Flex, Cube, Autodiff: cfg(feature = "train"))]
pub trait MatmulBackend: Backend {
    /// `lhs · rhs` over the last two axes, for every index of the leading (batch) axes.
    fn product(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(lhs, rhs)
    }

    /// `(a · b, c · d)`: two independent products, as a gradient needs. The CPU runs them side
    /// by side, each on its own thread, rather than splitting each across the pool in turn.
    fn product_pair(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        (Self::product(a, b), Self::product(c, d))
    }

    /// Whether [`MatmulBackend::product_pair`] gains from being given both products at once
    /// (the CPU runs them side by side). Elsewhere a gradient makes and registers one product
    /// at a time, so that where a weight's gradient is added to the sum from other segments,
    /// Burn's fusion can fold that addition into the product just made.
    fn pairs_products(_tensor: &FloatTensor<Self>) -> bool {
        false
    }
}

/// `lhs · rhs` over the last two axes, batched over the leading ones (which broadcast as in
/// [`Tensor::matmul`]).
///
/// # Shapes
/// - lhs: `[..., m, k]`
/// - rhs: `[..., k, n]`
/// - output: `[..., m, n]`
pub fn matmul<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as MatmulBackend>::product(
        lhs.into_dispatch(),
        rhs.into_dispatch(),
    ))
}

impl MatmulBackend for Cube {}

#[cfg(target_family = "wasm")]
impl MatmulBackend for Flex {}

#[cfg(not(target_family = "wasm"))]
impl MatmulBackend for Flex {
    fn product(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        match Product::of(&lhs, &rhs) {
            Some(product) => product.run(&lhs, &rhs, true),
            None => Flex::float_matmul(lhs, rhs),
        }
    }

    fn product_pair(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        c: FloatTensor<Self>,
        d: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        match (Product::of(&a, &b), Product::of(&c, &d)) {
            (Some(first), Some(second))
                if first.work() >= SIDE_BY_SIDE && second.work() >= SIDE_BY_SIDE =>
            {
                rayon::join(|| first.run(&a, &b, false), || second.run(&c, &d, false))
            }
            _ => (Self::product(a, b), Self::product(c, d)),
        }
    }

    fn pairs_products(_tensor: &FloatTensor<Self>) -> bool {
        true
    }
}

/// Products of at least this many multiply-adds are split across the thread pool (Burn's flex
/// backend uses the same threshold: below it, the hand-off costs more than it saves).
#[cfg(not(target_family = "wasm"))]
const SPLIT_PRODUCT: usize = 192 * 192 * 192;

/// Batches of at least this many multiply-adds in all run their products in parallel.
#[cfg(not(target_family = "wasm"))]
const SPLIT_BATCH: usize = 128 * 128 * 128;

/// Two products of at least this many multiply-adds each run side by side in
/// [`MatmulBackend::product_pair`] (below it, the hand-off costs more than it saves).
#[cfg(not(target_family = "wasm"))]
const SIDE_BY_SIDE: usize = 64 * 64 * 64;

/// The geometry of `lhs · rhs` on flex tensors.
#[cfg(not(target_family = "wasm"))]
struct Product {
    m: usize,
    k: usize,
    n: usize,
    /// The output's batch axes.
    batch: Vec<usize>,
    /// Where each batch's matrix starts in `lhs` and `rhs`, in elements.
    lhs_starts: Vec<isize>,
    rhs_starts: Vec<isize>,
}

#[cfg(not(target_family = "wasm"))]
impl Product {
    /// The product's geometry, or `None` for what this path does not take (not f32, ranks or
    /// batch axes that differ): Burn's matmul runs those.
    fn of(lhs: &FlexTensor, rhs: &FlexTensor) -> Option<Self> {
        let (ls, rs) = (lhs.layout().shape(), rhs.layout().shape());
        let rank = ls.num_dims();
        if !cpu::is_f32(lhs) || !cpu::is_f32(rhs) || rank < 2 || rs.num_dims() != rank {
            return None;
        }
        let batch = ls[..rank - 2].to_vec();
        if rs[..rank - 2] != batch[..] || ls[rank - 1] != rs[rank - 2] {
            return None;
        }
        let starts = |t: &FlexTensor| {
            let strides = &t.layout().strides()[..rank - 2];
            let mut starts = Vec::with_capacity(batch.iter().product());
            batch_offsets(
                &batch,
                strides,
                t.layout().start_offset() as isize,
                &mut starts,
            );
            starts
        };
        Some(Self {
            m: ls[rank - 2],
            k: ls[rank - 1],
            n: rs[rank - 1],
            lhs_starts: starts(lhs),
            rhs_starts: starts(rhs),
            batch,
        })
    }

    /// Multiply-adds in all.
    fn work(&self) -> usize {
        self.lhs_starts.len() * self.m * self.k * self.n
    }

    /// The product, into a new contiguous tensor: on the thread pool when `pool` (large
    /// products split, batches spread), else all on the calling thread.
    fn run(&self, lhs: &FlexTensor, rhs: &FlexTensor, pool: bool) -> FlexTensor {
        let (m, k, n) = (self.m, self.k, self.n);
        let count = self.lhs_starts.len();
        let size = m * n;
        let mut out = checked::buffer(count * size);
        if size > 0 {
            let (l, r) = (lhs.storage::<f32>(), rhs.storage::<f32>());
            let [l_rs, l_cs] = last_two(lhs);
            let [r_rs, r_cs] = last_two(rhs);
            let one = |b: usize, dst: &mut [std::mem::MaybeUninit<f32>], threads: Parallelism| {
                checked::invariant(
                    dst.len() == size
                        && (k == 0
                            || checked::matrix_fits(
                                l.len(),
                                self.lhs_starts[b],
                                [m, k],
                                [l_rs, l_cs],
                            ) && checked::matrix_fits(
                                r.len(),
                                self.rhs_starts[b],
                                [k, n],
                                [r_rs, r_cs],
                            )),
                    "a batched product's factors or output lie outside their buffers",
                );
                // SAFETY: the offsets and strides come from the tensors' layouts, so every
                // element the GEMM reads lies in their buffers; `dst` holds exactly the m × n
                // row-major output, which the GEMM writes whole without reading it
                // (`read_dst` false; with k = 0 it writes zeros). Checked above when checks
                // are on.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        dst.as_mut_ptr().cast::<f32>(),
                        1,
                        n as isize,
                        false,
                        l.as_ptr().offset(self.lhs_starts[b]),
                        l_cs,
                        l_rs,
                        r.as_ptr().offset(self.rhs_starts[b]),
                        r_cs,
                        r_rs,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        threads,
                    )
                }
            };
            let each = m * n * k;
            let dst = &mut out.spare_capacity_mut()[..count * size];
            if !pool {
                let alone = |(b, dst)| one(b, dst, Parallelism::None);
                dst.chunks_mut(size).enumerate().for_each(alone);
            } else if count > 1
                && count * each >= SPLIT_BATCH
                && !(each >= SPLIT_PRODUCT && count < 4)
            {
                let per_thread = |(b, dst)| one(b, dst, Parallelism::None);
                dst.par_chunks_mut(size).enumerate().for_each(per_thread);
            } else {
                let threads = if each >= SPLIT_PRODUCT {
                    Parallelism::Rayon(0)
                } else {
                    Parallelism::None
                };
                let split = |(b, dst)| one(b, dst, threads);
                dst.chunks_mut(size).enumerate().for_each(split);
            }
        }
        // The GEMMs above wrote all `count * size` elements.
        checked::set_written(&mut out, count * size);
        let mut shape = self.batch.clone();
        shape.extend([m, n]);
        cpu::with_shape(out, shape.into())
    }
}

/// A matrix inside an f32 buffer: element `(i, j)` at `start + i · row_stride + j · col_stride`.
#[cfg(not(target_family = "wasm"))]
#[derive(Clone, Copy)]
pub(crate) struct Strided<'a> {
    pub data: &'a [f32],
    pub start: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

#[cfg(not(target_family = "wasm"))]
impl Strided<'_> {
    /// Whether a `rows × cols` matrix from here lies inside `data`.
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || self.start + (rows - 1) * self.row_stride + (cols - 1) * self.col_stride
                < self.data.len()
    }
}

/// `dst = lhs · rhs` on the calling thread, for kernels that run many small products in
/// parallel themselves: `lhs` is `m × k`, `rhs` `k × n`, and `dst` receives the `m × n` result
/// row by row from element 0, rows `dst_row_stride` apart (what lies between is left as it was).
///
/// # Panics
/// if a matrix does not fit in its buffer
#[cfg(not(target_family = "wasm"))]
pub(crate) fn product_into(
    dst: &mut [std::mem::MaybeUninit<f32>],
    dst_row_stride: usize,
    [m, k, n]: [usize; 3],
    lhs: Strided<'_>,
    rhs: Strided<'_>,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * dst_row_stride + n <= dst.len() && lhs.fits(m, k) && rhs.fits(k, n),
        "product_into: a {m}x{k}x{n} product does not fit its buffers"
    );
    if k == 0 {
        // An empty sum; the factors' starts may lie past their buffers, so the GEMM is not
        // given them.
        for i in 0..m {
            dst[i * dst_row_stride..][..n].fill(std::mem::MaybeUninit::new(0.0));
        }
        return;
    }
    // SAFETY: the assertion above keeps every element the GEMM reads inside `lhs.data` and
    // `rhs.data`, and every element it writes inside `dst`; it writes without reading
    // (`read_dst` false).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr().cast::<f32>(),
            1,
            dst_row_stride as isize,
            false,
            lhs.data.as_ptr().add(lhs.start),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr().add(rhs.start),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// The row and column strides of the matrices in `t`.
#[cfg(not(target_family = "wasm"))]
fn last_two(t: &FlexTensor) -> [isize; 2] {
    let s = t.layout().strides();
    [s[s.len() - 2], s[s.len() - 1]]
}

/// Appends to `out` the start of every matrix of a tensor with batch axes `batch` of strides
/// `strides`, in row-major order of the batch index, from `start`.
#[cfg(not(target_family = "wasm"))]
fn batch_offsets(batch: &[usize], strides: &[isize], start: isize, out: &mut Vec<isize>) {
    match batch.split_first() {
        None => out.push(start),
        Some((&len, rest)) => {
            for i in 0..len {
                batch_offsets(rest, &strides[1..], start + i as isize * strides[0], out);
            }
        }
    }
}

#[cfg(feature = "train")]
impl<B: Backend + MatmulBackend, C: CheckpointStrategy> MatmulBackend for Autodiff<B, C> {
    fn product(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        use burn::backend::TensorMetadata;

        #[derive(Debug)]
        struct ProductBackward;

        impl<B: Backend + MatmulBackend> Backward<B, 2> for ProductBackward {
            /// The two factors.
            type State = (FloatTensor<B>, FloatTensor<B>);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [lhs_node, rhs_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (lhs, rhs) = ops.state;
                // d(lhs) = grad · rhsᵀ, d(rhs) = lhsᵀ · grad, matrix by matrix.
                if let (Some(lhs_node), Some(rhs_node)) = (&lhs_node, &rhs_node)
                    && B::pairs_products(&grad)
                {
                    let (d_lhs, d_rhs) = B::product_pair(
                        grad.clone(),
                        B::float_transpose(rhs),
                        B::float_transpose(lhs),
                        grad,
                    );
                    grads.register::<B>(lhs_node.id, d_lhs);
                    grads.register::<B>(rhs_node.id, d_rhs);
                    return;
                }
                // One product at a time, each registered as soon as it is made, the right
                // factor's first: a weight used by several segments has its gradient added to
                // the sum so far, and on GPUs Burn's fusion folds that addition into the
                // product (one kernel instead of two, twice per weight in a three-segment step).
                if let Some(node) = rhs_node {
                    grads.register::<B>(node.id, B::product(B::float_transpose(lhs), grad.clone()));
                }
                if let Some(node) = lhs_node {
                    grads.register::<B>(node.id, B::product(grad, B::float_transpose(rhs)));
                }
            }
        }

        // Batch axes that broadcast need their gradients summed: Burn's matmul does that.
        let (ls, rs) = (lhs.primitive().shape(), rhs.primitive().shape());
        let rank = ls.num_dims();
        if rank < 2 || rs.num_dims() != rank || ls[..rank - 2] != rs[..rank - 2] {
            return Self::float_matmul(lhs, rhs);
        }
        match ProductBackward
            .prepare::<C>([lhs.node(), rhs.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (l, r) = (lhs.primitive().clone(), rhs.primitive().clone());
                prep.finish((l.clone(), r.clone()), B::product(l, r))
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::product(lhs.into_primitive(), rhs.into_primitive()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::tests::{max_diff, values};

    /// `[batch..., m, k]` values with a spread of signs and magnitudes.
    fn filled<const D: usize>(dims: [usize; D], seed: usize, device: &Device) -> Tensor<D> {
        let n = dims.iter().product::<usize>();
        let xs = (0..n)
            .map(|i| (((i + seed) * 7919) % 1009) as f32 / 400.0 - 1.25)
            .collect::<Vec<_>>();
        Tensor::from_data(TensorData::new(xs, dims), device)
    }

    /// `a · b` matrix by matrix in f64 plain loops; `a`: `[count, m, k]`, `b`: `[count, k, n]`.
    fn reference(a: &[f32], b: &[f32], count: usize, [m, k, n]: [usize; 3]) -> Vec<f32> {
        let mut out = vec![0.0; count * m * n];
        for c in 0..count {
            for i in 0..m {
                for j in 0..n {
                    out[(c * m + i) * n + j] = (0..k)
                        .map(|p| a[(c * m + i) * k + p] as f64 * b[(c * k + p) * n + j] as f64)
                        .sum::<f64>() as f32;
                }
            }
        }
        out
    }

    /// Products on each path of the CPU code (one small product, one split across the pool, a
    /// batch run one product at a time, a batch spread over the pool) from strided views (a
    /// transposed left factor, batch axes swapped on the right), against plain loops.
    #[test]
    fn matches_plain_loops_on_strided_and_batched_inputs() {
        let device = Device::flex();
        for (batch, [m, k, n]) in [
            ([1, 1], [7, 5, 3]),
            ([1, 1], [200, 210, 190]),
            ([2, 1], [9, 4, 6]),
            ([2, 4], [70, 64, 66]),
        ] {
            let a = filled([batch[0], batch[1], k, m], 1, &device).swap_dims(2, 3);
            let b = filled([batch[1], batch[0], k, n], 2, &device).swap_dims(0, 1);
            let count = batch[0] * batch[1];
            let expected = reference(&values(a.clone()), &values(b.clone()), count, [m, k, n]);
            let ours = matmul(a, b);
            assert_eq!(ours.dims(), [batch[0], batch[1], m, n]);
            let diff = max_diff(&values(ours), &expected);
            assert!(diff < 1e-4, "{batch:?} × {m}x{k}x{n}: off by {diff}");
        }
    }

    #[test]
    fn broadcast_batch_axes_go_to_burns_matmul() {
        let device = Device::flex();
        let a = filled([3, 4, 5], 3, &device);
        let b = filled([1, 5, 2], 4, &device);
        let ours = values(matmul(a.clone(), b.clone()));
        let expected = values(a.matmul(b));
        assert_eq!(ours.len(), 3 * 4 * 2);
        assert!(max_diff(&ours, &expected) < 1e-5);
    }

    /// The loss `Σ (a · b) ∘ w` has gradients `w · bᵀ` for `a` and `aᵀ · w` for `b`, computed
    /// here with plain loops; the factors are strided views, as attention's are. Small products
    /// run one after the other, large ones side by side ([`MatmulBackend::product_pair`]).
    #[cfg(feature = "train")]
    #[test]
    fn gradients_are_the_transposed_products() {
        gradients_of([3, 6, 5, 4]);
        let large = [2, 72, 70, 66];
        assert!(large.iter().product::<usize>() >= SIDE_BY_SIDE);
        gradients_of(large);
    }

    #[cfg(feature = "train")]
    fn gradients_of([count, m, k, n]: [usize; 4]) {
        let device = Device::flex().autodiff();
        let a = filled([count, k, m], 5, &device).require_grad();
        let b = filled([count, k, n], 6, &device).require_grad();
        let w = filled([count, m, n], 7, &device);
        let grads = (matmul(a.clone().swap_dims(1, 2), b.clone()) * w.clone())
            .sum()
            .backward();

        let at = values(a.clone().swap_dims(1, 2));
        let (bv, wv) = (values(b.clone()), values(w));
        let transpose = |x: &[f32], rows: usize, cols: usize| {
            let mut t = vec![0.0; x.len()];
            for c in 0..count {
                for i in 0..rows {
                    for j in 0..cols {
                        t[(c * cols + j) * rows + i] = x[(c * rows + i) * cols + j];
                    }
                }
            }
            t
        };
        // d(aᵀ) = w · bᵀ, so d(a) is its transpose; d(b) = (aᵀ)ᵀ · w.
        let d_at = reference(&wv, &transpose(&bv, k, n), count, [m, n, k]);
        let d_b = reference(&transpose(&at, m, k), &wv, count, [k, m, n]);
        let ours_a = values(a.grad(&grads).unwrap());
        let ours_b = values(b.grad(&grads).unwrap());
        let diff_a = max_diff(&ours_a, &transpose(&d_at, m, k));
        let diff_b = max_diff(&ours_b, &d_b);
        assert!(
            diff_a < 1e-3 && diff_b < 1e-3,
            "{m}x{k}x{n}: off by {diff_a}, {diff_b}"
        );
        assert!(
            ours_a.iter().any(|g| g.abs() > 0.5),
            "gradient trivially small"
        );
    }
}
