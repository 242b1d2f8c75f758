//! Self-attention from one packed `[query | key | value]` projection, as one operation: the CPU's
//! kernels and the GPU's WGSL kernel read the heads where they lie.
//!
//! On wgpu the forward is one dispatch of `shaders/attention.wgsl` ([`wgpu`]): scores, mask,
//! online softmax and the weighted values per block of query rows, instead of some twenty
//! kernels (head copies, two batched products, the scaling, the mask, the softmax's reductions).
//! It runs as one opaque operation in Burn's fusion stream. The backward is two dispatches
//! ([`wgpu::attention_backward`]): per query row the query gradient and the score gradients
//! (`shaders/attention_backward_query.wgsl`), then per key row the key and value gradients
//! (`shaders/attention_backward_key.wgsl`), from the weights the forward kept; some twenty of
//! Burn's kernels before.
//!
//! The general path in [`super::attention`] splits the projections into heads, runs two batched
//! products and a softmax, and merges the heads back: under autodiff that is three projection
//! products instead of one, six tracked operations, copies to merge heads forward and to split
//! their gradients backward, and a hand-off to the thread pool for each. This backend extension
//! takes the packed projection `[batch, seq, 3 · d_model]` and returns the merged context
//! `[batch, seq, d_model]`; its backward returns the packed gradient, so the projections stay one
//! product forward and backward.
//!
//! On the CPU the forward is two passes on the thread pool: per `(batch, head)`, the scores
//! `Q Kᵀ` (one small GEMM reading `Q` and `K` in place inside the packed rows) turned into
//! weights row by row; then per block of rows, `P V` for every head, written straight into the
//! merged context. The backward is two passes the same way: per `(batch, head)`,
//! `dP = dO Vᵀ` and the softmax gradient `dS`; per block of rows, `dQ = dS K`, `dK = dSᵀ Q` and
//! `dV = Pᵀ dO` into the packed gradient. GPU runtimes other than wgpu run the same backward
//! formulas from Burn's ops.
//!
//! The products skip the keys a block of 64 rows cannot see ([`Mask`](crate::nn::Mask)'s blocked
//! positions past each row's last open key, as in RMT's mostly causal mask; see `Reach`): their
//! weights are exactly zero, so leaving them out changes nothing. At `medium`'s sizes that is 40%
//! fewer attention multiply-adds, and the attention layer's forward and backward about 1.25x
//! faster (interleaved in one process); `copy-small`'s 44 rows would skip too little to pay.
//! [`fused_attention`] is the entry point; `tests` check it against those formulas and the
//! gradients against finite differences.
//!
//! The mask bias is a constant: no gradient flows to it (remem's masks do not learn).

mod wgpu;

#[cfg(feature = "train")]
use burn::backend::Autodiff;
#[cfg(feature = "train")]
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{
    Backend, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;

use crate::ops::wgsl::{agrees, check_on, read};
use burn::tensor::Slice;

/// Packed self-attention as a backend operation, so that autodiff records one node.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait FusedAttentionBackend: Backend {
    /// The merged context of `heads`-head attention over the packed projection `qkv`
    /// `[batch, seq, 3 · d]` under the additive `[seq, seq]` `bias`, scores scaled by `scale`.
    #[fusion(dtype = qkv, shape = context_shape(qkv))]
    fn fused_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> FloatTensor<Self> {
        Self::fused_attention_with_weights(qkv, bias, heads, scale).0
    }

    /// The context and the weights `[batch, heads, seq, seq]`, for the visualisation. Under
    /// autodiff this runs as Burn's tracked operations; training calls `fused_attention`.
    #[fusion(meta = context_and_weights)]
    fn fused_attention_with_weights(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        forward_from_ops::<Self>(qkv, bias, heads, scale)
    }

    /// The gradient of `qkv` from the forward's input and mask bias, its weights and the
    /// context's gradient.
    #[fusion(dtype = qkv, shape = qkv)]
    fn fused_attention_backward(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> FloatTensor<Self> {
        // The formulas need no mask: blocked keys have zero weight, so zero gradient.
        let _ = bias;
        backward_from_ops::<Self>(qkv, weights, grad, heads, scale)
    }
}

/// `heads`-head scaled dot-product self-attention over the packed projection `qkv` (query, key
/// and value side by side, each `d_model` wide, heads in order within each), with the additive
/// mask `bias` ([`crate::nn::Mask::bias`]) and scores scaled by `scale`.
///
/// # Shapes
/// - qkv: `[batch, seq, 3 · d_model]`
/// - bias: `[seq, seq]`
/// - output: `[batch, seq, d_model]`, heads merged
pub fn fused_attention(qkv: Tensor<3>, bias: Tensor<2>, heads: usize, scale: f64) -> Tensor<3> {
    check(&qkv, &bias, heads);
    check_kernel(&qkv.device());
    if qkv.is_autodiff() {
        check_backward_kernel(&qkv.device());
    }
    Tensor::from_dispatch(<Dispatch as FusedAttentionBackend>::fused_attention(
        qkv.into_dispatch(),
        bias.into_dispatch(),
        heads,
        scale,
    ))
}

/// `[batch, seq, 3 · d]` -> `[batch, seq, d]`: the context's shape, for the fusion stream.
fn context_shape(qkv: &Shape) -> Shape {
    let [batch, seq, width] = qkv.dims::<3>();
    Shape::new([batch, seq, width / 3])
}

/// The context's and the weights' shapes and type, for the fusion stream.
fn context_and_weights(
    qkv: &TensorSpec,
    _bias: &TensorSpec,
    heads: &usize,
    _scale: &f64,
) -> (TensorSpec, TensorSpec) {
    let [batch, seq, _] = qkv.shape.dims::<3>();
    (
        TensorSpec::new(context_shape(&qkv.shape), qkv.dtype),
        TensorSpec::new(Shape::new([batch, *heads, seq, seq]), qkv.dtype),
    )
}

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]); on other devices nothing. In a browser results cannot be read back
/// synchronously, so there the kernel runs unchecked.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let (data, mask, heads) = check_input();
        let qkv = Tensor::<3>::from_data(data.clone(), device);
        let bias = mask.bias(device);
        let (context, weights) = <Dispatch as FusedAttentionBackend>::fused_attention_with_weights(
            qkv.into_dispatch(),
            bias.into_dispatch(),
            heads,
            0.3,
        );
        // The reference runs on the CPU: on the device it would compile and tune kernels of
        // its own (tens of seconds on a software adapter) only to be thrown away.
        let cpu = Device::flex();
        let (want_context, want_weights) = forward_from_ops::<Dispatch>(
            Tensor::<3>::from_data(data, &cpu).into_dispatch(),
            mask.bias(&cpu).into_dispatch(),
            heads,
            0.3,
        );
        agrees(
            "context",
            &read(Tensor::<3>::from_dispatch(context))?,
            &read(Tensor::<3>::from_dispatch(want_context))?,
        )?;
        agrees(
            "weights",
            &read(Tensor::<4>::from_dispatch(weights))?,
            &read(Tensor::<4>::from_dispatch(want_weights))?,
        )
    });
}

/// On wgpu, check the WGSL backward kernels against [`backward_from_ops`] on the CPU once per
/// device, as [`check_kernel`] does for the forward.
fn check_backward_kernel(device: &Device) {
    check_on(wgpu::BACKWARD, device, |device| {
        let (qkv, mask, heads) = check_input();
        let [batch, seq, width] = qkv.shape().dims::<3>();
        let grad: Vec<f32> = (0..batch * seq * width / 3)
            .map(|i| ((i * 104_729) % 997) as f32 / 500.0 - 1.0)
            .collect();
        let grad = TensorData::new(grad, [batch, seq, width / 3]);
        // The weights come from the reference forward, so both sides start from the same ones.
        let cpu = Device::flex();
        let (_, weights) = forward_from_ops::<Dispatch>(
            Tensor::<3>::from_data(qkv.clone(), &cpu).into_dispatch(),
            mask.bias(&cpu).into_dispatch(),
            heads,
            0.3,
        );
        let weights = Tensor::<4>::from_dispatch(weights).into_data();
        let got = <Dispatch as FusedAttentionBackend>::fused_attention_backward(
            Tensor::<3>::from_data(qkv.clone(), device).into_dispatch(),
            mask.bias(device).into_dispatch(),
            Tensor::<4>::from_data(weights.clone(), device).into_dispatch(),
            Tensor::<3>::from_data(grad.clone(), device).into_dispatch(),
            heads,
            0.3,
        );
        let want = backward_from_ops::<Dispatch>(
            Tensor::<3>::from_data(qkv, &cpu).into_dispatch(),
            Tensor::<4>::from_data(weights, &cpu).into_dispatch(),
            Tensor::<3>::from_data(grad, &cpu).into_dispatch(),
            heads,
            0.3,
        );
        agrees(
            "packed gradient",
            &read(Tensor::<3>::from_dispatch(got))?,
            &read(Tensor::<3>::from_dispatch(want))?,
        )
    });
}

/// The checks' input: two sequences of 37 rows (a partial block), 2 heads of 8, and a mask
/// with holes; the packed projection, the mask and the head count.
fn check_input() -> (TensorData, crate::nn::Mask, usize) {
    let (batch, seq, heads, d_head) = (2, 37, 2, 8);
    let width = 3 * heads * d_head;
    let xs: Vec<f32> = (0..batch * seq * width)
        .map(|i| ((i * 7919) % 1013) as f32 / 500.0 - 1.0)
        .collect();
    let mut mask = crate::nn::Mask::blocked(seq, seq);
    for q in 0..seq {
        for k in 0..=q {
            if (q + 2 * k) % 5 != 1 || k == q {
                mask.allow(q, k);
            }
        }
    }
    (TensorData::new(xs, [batch, seq, width]), mask, heads)
}

/// [`fused_attention`] with its weights `[batch, heads, seq, seq]` (for the visualisation; no
/// gradient flows through them).
pub fn fused_attention_with_weights(
    qkv: Tensor<3>,
    bias: Tensor<2>,
    heads: usize,
    scale: f64,
) -> (Tensor<3>, Tensor<4>) {
    check(&qkv, &bias, heads);
    check_kernel(&qkv.device());
    let (context, weights) = <Dispatch as FusedAttentionBackend>::fused_attention_with_weights(
        qkv.into_dispatch(),
        bias.into_dispatch(),
        heads,
        scale,
    );
    (
        Tensor::from_dispatch(context),
        Tensor::from_dispatch(weights),
    )
}

/// The shapes the operation needs, checked before any backend sees them.
fn check(qkv: &Tensor<3>, bias: &Tensor<2>, heads: usize) {
    let [_, seq, width] = qkv.dims();
    assert!(
        heads > 0 && width.is_multiple_of(3 * heads),
        "fused_attention: a packed width of {width} does not split into 3 x {heads} heads"
    );
    assert_eq!(
        bias.dims(),
        [seq, seq],
        "fused_attention: bias must be [seq, seq]"
    );
}

/// The geometry of one call: `batch` sequences of `seq` rows, `heads` heads of `d_head`.
#[derive(Clone, Copy, Debug)]
struct Dims {
    batch: usize,
    seq: usize,
    heads: usize,
    d_head: usize,
}

impl Dims {
    fn of<B: Backend>(qkv: &FloatTensor<B>, heads: usize) -> Self {
        let [batch, seq, width] = qkv.shape().dims::<3>();
        Self {
            batch,
            seq,
            heads,
            d_head: width / (3 * heads),
        }
    }

    fn d_model(&self) -> usize {
        self.heads * self.d_head
    }
}

/// `[batch, seq, 3 · d]` -> query, key and value, each `[batch, heads, seq, d_head]`.
fn split<B: Backend>(qkv: FloatTensor<B>, dims: Dims) -> [FloatTensor<B>; 3] {
    split_heads::<B, 3>(qkv, dims.heads)
}

/// `N` projections side by side, `[batch, seq, N · heads · d_head]` (heads in order within
/// each), as `N` tensors `[batch, heads, seq, d_head]`: the references of the attention
/// operations read their packed inputs this way.
pub(crate) fn split_heads<B: Backend, const N: usize>(
    x: FloatTensor<B>,
    heads: usize,
) -> [FloatTensor<B>; N] {
    let [batch, seq, width] = x.shape().dims::<3>();
    let d_head = width / (N * heads);
    let x = B::float_reshape(x, Shape::new([batch, seq, N, heads, d_head]));
    let x = B::float_permute(x, &[2, 0, 3, 1, 4]);
    std::array::from_fn(|i| {
        let one = B::float_slice(
            x.clone(),
            &[Slice::new(i as isize, Some(i as isize + 1), 1)],
        );
        B::float_reshape(one, Shape::new([batch, heads, seq, d_head]))
    })
}

/// `[batch, heads, seq, d_head]` -> `[batch, seq, heads · d_head]`.
fn merge<B: Backend>(x: FloatTensor<B>, dims: Dims) -> FloatTensor<B> {
    let x = B::float_swap_dims(x, 1, 2);
    B::float_reshape(x, Shape::new([dims.batch, dims.seq, dims.d_model()]))
}

fn forward_from_ops<B: Backend>(
    qkv: FloatTensor<B>,
    bias: FloatTensor<B>,
    heads: usize,
    scale: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let dims = Dims::of::<B>(&qkv, heads);
    let [q, k, v] = split::<B>(qkv, dims);
    let scores = B::float_mul_scalar(B::float_matmul(q, B::float_transpose(k)), scale.into());
    let bias = B::float_reshape(bias, Shape::new([1, 1, dims.seq, dims.seq]));
    let weights = B::softmax(B::float_add(scores, bias), 3);
    let context = merge::<B>(B::float_matmul(weights.clone(), v), dims);
    (context, weights)
}

fn backward_from_ops<B: Backend>(
    qkv: FloatTensor<B>,
    weights: FloatTensor<B>,
    grad: FloatTensor<B>,
    heads: usize,
    scale: f64,
) -> FloatTensor<B> {
    let dims = Dims::of::<B>(&qkv, heads);
    let Dims {
        batch,
        seq,
        heads,
        d_head,
    } = dims;
    let [q, k, v] = split::<B>(qkv, dims);
    let d_out = B::float_reshape(grad, Shape::new([batch, seq, heads, d_head]));
    let d_out = B::float_swap_dims(d_out, 1, 2);
    let d_v = B::float_matmul(B::float_transpose(weights.clone()), d_out.clone());
    let d_w = B::float_matmul(d_out, B::float_transpose(v));
    let dot = B::float_sum_dim(B::float_mul(d_w.clone(), weights.clone()), 3);
    let d_s = B::float_mul_scalar(B::float_mul(weights, B::float_sub(d_w, dot)), scale.into());
    let d_q = B::float_matmul(d_s.clone(), k);
    let d_k = B::float_matmul(B::float_transpose(d_s), q);
    let one = Shape::new([1, batch, heads, seq, d_head]);
    let parts = [d_q, d_k, d_v].map(|x| B::float_reshape(x, one.clone()));
    let packed = B::float_permute(B::float_cat(parts.into(), 0), &[1, 3, 0, 2, 4]);
    B::float_reshape(packed, Shape::new([batch, seq, 3 * dims.d_model()]))
}

/// The GPU runtimes: on wgpu the WGSL kernel where it serves, Burn's operations elsewhere.
impl FusedAttentionBackend for CubeBackend {
    fn fused_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> FloatTensor<Self> {
        if wgpu::serves(&qkv, heads) {
            wgpu::attention(qkv, bias, heads, scale, false).0
        } else {
            forward_from_ops::<Self>(qkv, bias, heads, scale).0
        }
    }

    fn fused_attention_with_weights(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if wgpu::serves(&qkv, heads) {
            let (context, weights) = wgpu::attention(qkv, bias, heads, scale, true);
            (context, weights.expect("asked for the weights"))
        } else {
            forward_from_ops::<Self>(qkv, bias, heads, scale)
        }
    }

    fn fused_attention_backward(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> FloatTensor<Self> {
        if wgpu::serves_backward(&qkv, heads) {
            wgpu::attention_backward(qkv, weights, grad, heads, scale)
        } else {
            let _ = bias;
            backward_from_ops::<Self>(qkv, weights, grad, heads, scale)
        }
    }
}

#[cfg(target_family = "wasm")]
impl FusedAttentionBackend for Flex {}

#[cfg(not(target_family = "wasm"))]
impl FusedAttentionBackend for Flex {
    fn fused_attention_with_weights(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !cpu::is_f32(&qkv) || !cpu::is_f32(&bias) {
            return forward_from_ops::<Flex>(qkv, bias, heads, scale);
        }
        let dims = Dims::of::<Flex>(&qkv, heads);
        cpu::forward(qkv, bias, dims, scale)
    }

    fn fused_attention_backward(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> FloatTensor<Self> {
        let f32s = [&qkv, &bias, &weights, &grad].into_iter().all(cpu::is_f32);
        if !f32s {
            return backward_from_ops::<Flex>(qkv, weights, grad, heads, scale);
        }
        let dims = Dims::of::<Flex>(&qkv, heads);
        cpu::backward(qkv, bias, weights, grad, dims, scale)
    }
}

/// The CPU kernels.
#[cfg(not(target_family = "wasm"))]
mod cpu {
    use std::mem::MaybeUninit;

    use burn::backend::flex::FlexTensor;
    use rayon::prelude::*;

    use super::Dims;
    use crate::nn::mask::BLOCKED;
    use crate::ops::checked::{all_written, buffer, invariant, set_written};
    pub(super) use crate::ops::cpu::is_f32;
    use crate::ops::cpu::{Kernel, f32s, vectorised, with_shape};
    use crate::ops::matmul::{Strided, product_into};
    use crate::ops::softmax::{softmax_backward_row, softmax_row};

    /// Calls of at least this many multiply-adds per product run their passes on the thread
    /// pool (below it, the hand-offs cost more than they save).
    const PARALLEL: usize = 1 << 21;

    /// Rows per product when the products skip blocked keys: smaller blocks skip more of a
    /// causal mask, larger ones run the GEMM closer to its best speed.
    const ROWS: usize = 64;

    /// The products skip blocked keys only when that leaves out at least this fraction of the
    /// scores: below it, the smaller products cost more than they save (in blocks of 32 rows,
    /// `copy-small`'s 44 would skip 20% and ran slower).
    const WORTH_SKIPPING: f64 = 0.25;

    /// Whether a call of `dims` runs its passes on the thread pool.
    pub(super) fn parallel(dims: Dims) -> bool {
        dims.batch * dims.heads * dims.seq * dims.seq * dims.d_head >= PARALLEL
    }

    /// How far each query row sees into the keys, from the mask bias: the products run only
    /// over the keys a block of rows can see.
    pub(super) struct Reach {
        /// Per query row, one past its last open key (a bias above [`BLOCKED`]); every key for a
        /// row with none open, whose softmax then weighs the blocked keys as the full one does.
        extent: Vec<usize>,
        /// Per key, the first query row that sees it (`seq` for none). Never decreasing: a row
        /// that sees a key sees every key before it.
        first: Vec<usize>,
        /// Rows per product: [`ROWS`], or all of them when skipping would not pay.
        rows: usize,
    }

    impl Reach {
        /// The reach of the `[seq, seq]` bias.
        pub(super) fn of(bias: &[f32], seq: usize) -> Self {
            let extent: Vec<usize> = bias
                .chunks(seq)
                .map(|row| match row.iter().rposition(|&b| b > BLOCKED) {
                    Some(last) => last + 1,
                    None => seq,
                })
                .collect();
            let mut first = vec![seq; seq];
            for (row, &e) in extent.iter().enumerate().rev() {
                first[..e].fill(row);
            }
            let mut reach = Self {
                extent,
                first,
                rows: ROWS,
            };
            let mut computed = 0;
            reach.blocks(0, seq, |i0, i1| computed += (i1 - i0) * reach.keys(i0, i1));
            if (computed as f64) > (1.0 - WORTH_SKIPPING) * (seq * seq) as f64 {
                reach.rows = seq.max(1);
                reach.extent.fill(seq);
                reach.first.fill(0);
            }
            reach
        }

        /// `f(i0, i1)` for each block of rows in `from..to` that runs as one product.
        pub(super) fn blocks(&self, from: usize, to: usize, mut f: impl FnMut(usize, usize)) {
            let mut i0 = from;
            while i0 < to {
                let i1 = to.min(i0 + self.rows);
                f(i0, i1);
                i0 = i1;
            }
        }

        /// The keys rows `i0..i1` see: `0..keys(i0, i1)`.
        pub(super) fn keys(&self, i0: usize, i1: usize) -> usize {
            self.extent[i0..i1].iter().copied().max().unwrap_or(0)
        }

        /// The first query row that sees any of the keys from `key` on: rows before it have
        /// zero weight (and zero score gradient) on all of them.
        pub(super) fn first_row(&self, key: usize) -> usize {
            self.first[key]
        }
    }

    /// `f(index, chunk)` over the chunks of `len` elements of `buf`'s spare capacity (the first
    /// `total` elements), on the thread pool when `parallel`.
    fn chunks(
        buf: &mut Vec<f32>,
        total: usize,
        len: usize,
        parallel: bool,
        f: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync + Send,
    ) {
        let spare = &mut buf.spare_capacity_mut()[..total];
        if parallel && total > len {
            spare
                .par_chunks_mut(len)
                .enumerate()
                .for_each(|(c, x)| f(c, x));
        } else {
            spare
                .chunks_mut(len.max(1))
                .enumerate()
                .for_each(|(c, x)| f(c, x));
        }
    }

    /// The elements `f` initialised, as f32.
    ///
    /// # Safety
    /// every element of `x` must have been written.
    unsafe fn written(x: &mut [MaybeUninit<f32>]) -> &mut [f32] {
        invariant(all_written(x), "rows read before a pass wrote them");
        // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the caller vouches that every
        // element is initialised (checked above when checks are on).
        unsafe { &mut *(x as *mut [MaybeUninit<f32>] as *mut [f32]) }
    }

    /// Rows per block in the row passes: one sequence, or less so that every thread gets one.
    fn rows_per_block(dims: Dims) -> usize {
        let rows = dims.batch * dims.seq;
        dims.seq
            .min(rows.div_ceil(rayon::current_num_threads()))
            .max(1)
    }

    /// `f(b, i0, i1, offset)` for each run of rows `i0..i1` of sequence `b` within the rows
    /// `first..first + count` of the `[batch · seq]` rows; `offset` is the run's first row
    /// relative to `first`.
    pub(super) fn runs(
        dims: Dims,
        first: usize,
        count: usize,
        mut f: impl FnMut(usize, usize, usize, usize),
    ) {
        let mut row = first;
        while row < first + count {
            let (b, i0) = (row / dims.seq, row % dims.seq);
            let i1 = dims.seq.min(i0 + first + count - row);
            f(b, i0, i1, row - first);
            row += i1 - i0;
        }
    }

    /// The packed matrix `which` (0 query, 1 key, 2 value) of head `h` in sequence `b`, from
    /// row `i0`: `[seq - i0, d_head]`, rows `3 · d` apart.
    fn packed(qkv: &[f32], dims: Dims, b: usize, which: usize, h: usize, i0: usize) -> Strided<'_> {
        let d = dims.d_model();
        Strided {
            data: qkv,
            start: (b * dims.seq + i0) * 3 * d + which * d + h * dims.d_head,
            row_stride: 3 * d,
            col_stride: 1,
        }
    }

    /// `m` transposed (a view).
    fn t(m: Strided<'_>) -> Strided<'_> {
        Strided {
            row_stride: m.col_stride,
            col_stride: m.row_stride,
            ..m
        }
    }

    /// The `[seq, seq]` matrix of pair `p` in a `[batch, heads, seq, seq]` buffer, from row `i0`
    /// and column `j0`.
    fn square(x: &[f32], seq: usize, p: usize, i0: usize, j0: usize) -> Strided<'_> {
        Strided {
            data: x,
            start: p * seq * seq + i0 * seq + j0,
            row_stride: seq,
            col_stride: 1,
        }
    }

    /// One pair's `[seq, seq]` block `out = lhs · rhsᵀ`, a block of rows at a time over the
    /// keys those rows see (the rest of each row zero), each block of rows then finished in
    /// place by the row kernel `finish(keys)`. `lhs(i0)` is the `[seq - i0, d_head]` left factor
    /// from row `i0`, `rhs` the `[seq, d_head]` right one.
    fn square_by_blocks<'a, K: Kernel>(
        out: &mut [MaybeUninit<f32>],
        reach: &Reach,
        d_head: usize,
        lhs: impl Fn(usize) -> Strided<'a>,
        rhs: Strided<'a>,
        finish: impl Fn(usize) -> K,
    ) {
        let seq = reach.extent.len();
        reach.blocks(0, seq, |i0, i1| {
            let keys = reach.keys(i0, i1);
            for row in out[i0 * seq..i1 * seq].chunks_mut(seq) {
                row[keys..].fill(MaybeUninit::new(0.0));
            }
            product_into(
                &mut out[i0 * seq..],
                seq,
                [i1 - i0, d_head, keys],
                lhs(i0),
                t(rhs),
            );
            // SAFETY: the zeros and the product wrote rows `i0..i1` whole.
            let rows = unsafe { written(&mut out[i0 * seq..i1 * seq]) };
            vectorised(&finish(keys), i0 * seq, rows);
        });
    }

    /// Rows of one pair's `[seq, seq]` block finished in place over their first `keys` columns
    /// (the rest are zero already) by `row(x, w, scale)`, `w` being the same row of `with`: of
    /// the mask bias to turn scores into weights ([`softmax_row`]), of the weights to turn their
    /// gradient into the scores' ([`softmax_backward_row`]).
    struct Rows<'a, F> {
        with: &'a [f32],
        seq: usize,
        keys: usize,
        scale: f32,
        row: F,
    }

    impl<F: Fn(&mut [f32], &[f32], f32) + Sync> Kernel for Rows<'_, F> {
        type Out = ();

        #[inline(always)]
        fn run(&self, start: usize, rows: &mut [f32]) {
            let (seq, keys) = (self.seq, self.keys);
            for (r, x) in rows.chunks_mut(seq).enumerate() {
                let with = &self.with[start + r * seq..][..keys];
                (self.row)(&mut x[..keys], with, self.scale);
            }
        }
    }

    /// The forward: the merged context and the weights.
    pub(super) fn forward(
        qkv: FlexTensor,
        bias: FlexTensor,
        dims: Dims,
        scale: f64,
    ) -> (FlexTensor, FlexTensor) {
        let (qkv, bias) = (qkv.to_contiguous(), bias.to_contiguous());
        let (x, bias) = (f32s(&qkv), f32s(&bias));
        let Dims {
            batch,
            seq,
            heads,
            d_head,
        } = dims;
        let d = dims.d_model();
        let reach = Reach::of(bias, seq);

        // Pass 1, per (batch, head): scores Q Kᵀ, then the weights in place.
        let square_len = seq * seq;
        let total = batch * heads * square_len;
        let mut weights = buffer(total);
        chunks(&mut weights, total, square_len, parallel(dims), |p, out| {
            let (b, h) = (p / heads, p % heads);
            let q = |i0| packed(x, dims, b, 0, h, i0);
            let k = packed(x, dims, b, 1, h, 0);
            let softmax = |keys| Rows {
                with: bias,
                seq,
                keys,
                scale: scale as f32,
                row: softmax_row,
            };
            square_by_blocks(out, &reach, d_head, q, k, softmax);
        });
        // Pass 1 wrote every pair's block.
        set_written(&mut weights, total);

        // Pass 2, per block of rows: P V for every head, into the merged rows.
        let block = rows_per_block(dims);
        let total = batch * seq * d;
        let mut context = buffer(total);
        chunks(&mut context, total, block * d, parallel(dims), |c, out| {
            let count = out.len() / d;
            runs(dims, c * block, count, |b, i0, i1, at| {
                reach.blocks(i0, i1, |j0, j1| {
                    let keys = reach.keys(j0, j1);
                    for h in 0..heads {
                        let p = square(&weights, seq, b * heads + h, j0, 0);
                        let v = packed(x, dims, b, 2, h, 0);
                        let dst = &mut out[(at + j0 - i0) * d + h * d_head..];
                        product_into(dst, d, [j1 - j0, keys, d_head], p, v);
                    }
                });
            });
        });
        // Pass 2 wrote every head's columns of every row.
        set_written(&mut context, total);
        (
            with_shape(context, [batch, seq, d].into()),
            with_shape(weights, [batch, heads, seq, seq].into()),
        )
    }

    /// The backward: the packed gradient.
    pub(super) fn backward(
        qkv: FlexTensor,
        bias: FlexTensor,
        weights: FlexTensor,
        grad: FlexTensor,
        dims: Dims,
        scale: f64,
    ) -> FlexTensor {
        let (qkv, bias, weights, grad) = (
            qkv.to_contiguous(),
            bias.to_contiguous(),
            weights.to_contiguous(),
            grad.to_contiguous(),
        );
        let (x, w, g) = (f32s(&qkv), f32s(&weights), f32s(&grad));
        let Dims {
            batch,
            seq,
            heads,
            d_head,
        } = dims;
        let d = dims.d_model();
        let reach = Reach::of(f32s(&bias), seq);
        // The context's gradient for head `h` of sequence `b` from row `i0`: `[seq - i0,
        // d_head]`, rows d apart.
        let d_out = |b: usize, h: usize, i0: usize| Strided {
            data: g,
            start: (b * seq + i0) * d + h * d_head,
            row_stride: d,
            col_stride: 1,
        };

        // Pass A, per (batch, head): dP = dO Vᵀ, then the scores' gradient in place.
        let square_len = seq * seq;
        let total = batch * heads * square_len;
        let mut d_scores = buffer(total);
        chunks(
            &mut d_scores,
            total,
            square_len,
            parallel(dims),
            |p, out| {
                let (b, h) = (p / heads, p % heads);
                let v = packed(x, dims, b, 2, h, 0);
                let softmax = |keys| Rows {
                    with: &w[p * square_len..(p + 1) * square_len],
                    seq,
                    keys,
                    scale: scale as f32,
                    row: softmax_backward_row,
                };
                square_by_blocks(out, &reach, d_head, |i0| d_out(b, h, i0), v, softmax);
            },
        );
        // Pass A wrote every pair's block.
        set_written(&mut d_scores, total);

        // Pass B, per block of rows: dQ = dS K, dK = dSᵀ Q, dV = Pᵀ dO, into the packed rows.
        // Row `i` of dK and dV sums over the query rows that see key `i`: from
        // `reach.first_row(i)` on.
        let block = rows_per_block(dims);
        let total = batch * seq * 3 * d;
        let mut packed_grad = buffer(total);
        chunks(
            &mut packed_grad,
            total,
            block * 3 * d,
            parallel(dims),
            |c, out| {
                let count = out.len() / (3 * d);
                runs(dims, c * block, count, |b, i0, i1, at| {
                    reach.blocks(i0, i1, |j0, j1| {
                        let rows = j1 - j0;
                        let keys = reach.keys(j0, j1);
                        let first = reach.first_row(j0);
                        let seen = seq - first;
                        for h in 0..heads {
                            let p = b * heads + h;
                            let row = (at + j0 - i0) * 3 * d + h * d_head;
                            let d_s = square(&d_scores, seq, p, j0, 0);
                            let k = packed(x, dims, b, 1, h, 0);
                            product_into(&mut out[row..], 3 * d, [rows, keys, d_head], d_s, k);
                            let d_s_t = t(square(&d_scores, seq, p, first, j0));
                            let q = packed(x, dims, b, 0, h, first);
                            let dst = &mut out[row + d..];
                            product_into(dst, 3 * d, [rows, seen, d_head], d_s_t, q);
                            let p_t = t(square(w, seq, p, first, j0));
                            let dst = &mut out[row + 2 * d..];
                            product_into(dst, 3 * d, [rows, seen, d_head], p_t, d_out(b, h, first));
                        }
                    });
                });
            },
        );
        // Pass B wrote the query, key and value columns of every head in every row.
        set_written(&mut packed_grad, total);
        with_shape(packed_grad, [batch, seq, 3 * d].into())
    }
}

#[cfg(feature = "train")]
impl<B: Backend + FusedAttentionBackend, C: CheckpointStrategy> FusedAttentionBackend
    for Autodiff<B, C>
{
    fn fused_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct FusedAttentionBackward;

        impl<B: Backend + FusedAttentionBackend> Backward<B, 1> for FusedAttentionBackward {
            /// The packed input, the mask bias, the weights, the head count and the scale.
            type State = (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>, usize, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [qkv_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (qkv, bias, weights, heads, scale) = ops.state;
                if let Some(node) = qkv_node {
                    let d_qkv = B::fused_attention_backward(qkv, bias, weights, grad, heads, scale);
                    grads.register::<B>(node.id, d_qkv);
                }
            }
        }

        let bias = bias.into_primitive();
        match FusedAttentionBackward
            .prepare::<C>([qkv.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let qkv = qkv.into_primitive();
                let (context, weights) =
                    B::fused_attention_with_weights(qkv.clone(), bias.clone(), heads, scale);
                prep.finish((qkv, bias, weights, heads, scale), context)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::fused_attention(qkv.into_primitive(), bias, heads, scale))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cpu::tests::{max_diff, values};

    /// Packed projections `[batch, seq, 3 · heads · d_head]` with a spread of magnitudes, and a
    /// causal-style bias whose first row leaves one key open.
    fn inputs(dims: [usize; 4], device: &Device) -> (Tensor<3>, Tensor<2>) {
        inputs_with(dims, device, |q, k| {
            if k > q { -1e9 } else { (k as f32 / 5.0).sin() }
        })
    }

    /// [`inputs`] with the bias `bias(query, key)`.
    fn inputs_with(
        dims: [usize; 4],
        device: &Device,
        bias: impl Fn(usize, usize) -> f32,
    ) -> (Tensor<3>, Tensor<2>) {
        let [batch, seq, heads, d_head] = dims;
        let width = 3 * heads * d_head;
        let xs: Vec<f32> = (0..batch * seq * width)
            .map(|i| ((i * 7919) % 1013) as f32 / 300.0 - 1.7)
            .collect();
        let bias: Vec<f32> = (0..seq * seq).map(|i| bias(i / seq, i % seq)).collect();
        (
            Tensor::from_data(TensorData::new(xs, [batch, seq, width]), device),
            Tensor::from_data(TensorData::new(bias, [seq, seq]), device),
        )
    }

    /// The same attention from Burn's tensor operations: split, products, softmax, merge.
    fn burns(qkv: Tensor<3>, bias: Tensor<2>, heads: usize, scale: f64) -> (Tensor<3>, Tensor<4>) {
        let [batch, seq, width] = qkv.dims();
        let d = width / 3;
        let part = |i: usize| {
            qkv.clone()
                .slice(s![.., .., i * d..(i + 1) * d])
                .reshape([batch, seq, heads, d / heads])
                .swap_dims(1, 2)
        };
        let scores = part(0).matmul(part(1).swap_dims(2, 3)).mul_scalar(scale);
        let weights = burn::tensor::activation::softmax(scores + bias.unsqueeze::<4>(), 3);
        let context = weights.clone().matmul(part(2)).swap_dims(1, 2);
        (context.reshape([batch, seq, d]), weights)
    }

    /// One call of the CPU kernels on the calling thread, one on the thread pool.
    const SHAPES: [[usize; 4]; 2] = [[2, 7, 2, 3], [3, 96, 4, 32]];

    #[test]
    fn the_shapes_take_both_paths() {
        let dims = |[batch, seq, heads, d_head]: [usize; 4]| Dims {
            batch,
            seq,
            heads,
            d_head,
        };
        assert!(!cpu::parallel(dims(SHAPES[0])));
        assert!(cpu::parallel(dims(SHAPES[1])));
    }

    #[test]
    fn context_and_weights_match_burns_attention_on_flex() {
        let device = Device::flex();
        for shape in SHAPES {
            let (qkv, bias) = inputs(shape, &device);
            let scale = 1.0 / (shape[3] as f64).sqrt();
            let (context, weights) =
                fused_attention_with_weights(qkv.clone(), bias.clone(), shape[2], scale);
            let (expected_context, expected_weights) =
                burns(qkv.clone(), bias.clone(), shape[2], scale);
            let diff = max_diff(&values(weights), &values(expected_weights));
            assert!(diff < 1e-6, "{shape:?}: weights off by {diff}");
            let expected = values(expected_context);
            let diff = max_diff(&values(context), &expected);
            assert!(diff < 1e-5, "{shape:?}: context off by {diff}");
            let alone = values(fused_attention(qkv, bias, shape[2], scale));
            assert!(max_diff(&alone, &expected) < 1e-5);
        }
    }

    #[cfg(feature = "train")]
    #[test]
    fn gradients_match_burns_attention_on_flex() {
        let device = Device::flex().autodiff();
        for shape in SHAPES {
            let (qkv0, bias) = inputs(shape, &device);
            let scale = 1.0 / (shape[3] as f64).sqrt();
            let heads = shape[2];
            let grad_of = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
                let qkv = qkv0.clone().require_grad();
                let out = f(qkv.clone());
                let loss = (out.clone() * out.cos()).sum();
                values(qkv.grad(&loss.backward()).expect("qkv gradient"))
            };
            let ours = grad_of(&|x| fused_attention(x, bias.clone(), heads, scale));
            let theirs = grad_of(&|x| burns(x, bias.clone(), heads, scale).0);
            let diff = max_diff(&ours, &theirs);
            assert!(diff < 1e-4, "{shape:?}: gradient off by {diff}");
            // Query, key and value each get a gradient.
            let width = 3 * heads * shape[3];
            for part in 0..3 {
                let third = ours
                    .chunks(width / 3)
                    .skip(part)
                    .step_by(3)
                    .flatten()
                    .fold(0.0f32, |m, g| m.max(g.abs()));
                assert!(third > 1e-3, "{shape:?}: part {part} has no gradient");
            }
        }
    }

    /// The loss `Σ context ∘ w` in f64 plain loops, for one sequence and one head.
    fn loss_f64(qkv: &[f64], bias: &[f64], w: &[f64], seq: usize, d: usize, scale: f64) -> f64 {
        let at = |i: usize, part: usize, c: usize| qkv[i * 3 * d + part * d + c];
        let mut loss = 0.0;
        for i in 0..seq {
            let z: Vec<f64> = (0..seq)
                .map(|j| (0..d).map(|c| at(i, 0, c) * at(j, 1, c)).sum::<f64>() * scale)
                .zip(&bias[i * seq..(i + 1) * seq])
                .map(|(s, b)| s + b)
                .collect();
            let m = z.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            for c in 0..d {
                let ctx: f64 = (0..seq).map(|j| e[j] / sum * at(j, 2, c)).sum();
                loss += ctx * w[i * d + c];
            }
        }
        loss
    }

    /// The gradient of the CPU kernels against central finite differences of the same loss in
    /// f64: the check that does not lean on Burn's attention.
    #[cfg(feature = "train")]
    #[test]
    fn gradient_matches_finite_differences() {
        let device = Device::flex().autodiff();
        let (seq, d, scale) = (3, 2, 0.7);
        let qkv: Vec<f64> = (0..seq * 3 * d)
            .map(|i| ((i * 5) % 7) as f64 / 3.0 - 1.0)
            .collect();
        let bias = [0.0, -1e9, -1e9, 0.3, 0.0, -1e9, 0.0, -0.2, 0.0];
        let w: Vec<f64> = (0..seq * d).map(|i| (i as f64 * 0.9).sin()).collect();
        let f32s = |v: &[f64], dims: Vec<usize>| {
            TensorData::new(v.iter().map(|&v| v as f32).collect(), dims)
        };
        let x = Tensor::<3>::from_data(f32s(&qkv, vec![1, seq, 3 * d]), &device).require_grad();
        let b = Tensor::<2>::from_data(f32s(&bias, vec![seq, seq]), &device);
        let wt = Tensor::<3>::from_data(f32s(&w, vec![1, seq, d]), &device);
        let loss = (fused_attention(x.clone(), b, 1, scale) * wt).sum();
        let grad = values(x.grad(&loss.backward()).unwrap());
        for (i, g) in grad.iter().enumerate() {
            let (mut hi, mut lo) = (qkv.clone(), qkv.clone());
            hi[i] += 1e-4;
            lo[i] -= 1e-4;
            let numeric = (loss_f64(&hi, &bias, &w, seq, d, scale)
                - loss_f64(&lo, &bias, &w, seq, d, scale))
                / 2e-4;
            assert!(
                (*g as f64 - numeric).abs() < 1e-4,
                "d loss / d qkv[{i}]: autodiff {g} vs finite difference {numeric}"
            );
        }
        assert!(grad.iter().filter(|g| g.abs() > 1e-2).count() >= seq * d);
    }

    /// A mask over 192 positions whose rows see up to 8 keys past themselves but none past key
    /// 127, with holes: the products skip whole blocks of keys, the first row to see a key comes
    /// before it, and keys 128.. are seen by no row at all.
    fn holey(q: usize, k: usize) -> f32 {
        let open = k <= (q + 8).min(127) && (k == 0 || !(q + k).is_multiple_of(5));
        if open { 0.1 * (k % 3) as f32 } else { -1e9 }
    }

    #[test]
    fn skipping_blocked_keys_changes_nothing() {
        let device = Device::flex();
        let shape = [2, 192, 2, 16];
        let (qkv, bias) = inputs_with(shape, &device, holey);
        let (context, weights) = fused_attention_with_weights(qkv.clone(), bias.clone(), 2, 0.25);
        let (expected_context, expected_weights) = burns(qkv, bias, 2, 0.25);
        let diff = max_diff(&values(weights), &values(expected_weights));
        assert!(diff < 1e-6, "weights off by {diff}");
        let diff = max_diff(&values(context), &values(expected_context));
        assert!(diff < 1e-5, "context off by {diff}");
    }

    #[cfg(feature = "train")]
    #[test]
    fn gradients_skipping_blocked_keys_match_burns() {
        let device = Device::flex().autodiff();
        let shape = [2, 192, 2, 16];
        let (qkv0, bias) = inputs_with(shape, &device, holey);
        let grad_of = |f: &dyn Fn(Tensor<3>) -> Tensor<3>| {
            let qkv = qkv0.clone().require_grad();
            let out = f(qkv.clone());
            let loss = (out.clone() * out.cos()).sum();
            values(qkv.grad(&loss.backward()).expect("qkv gradient"))
        };
        let ours = grad_of(&|x| fused_attention(x, bias.clone(), 2, 0.25));
        let theirs = grad_of(&|x| burns(x, bias.clone(), 2, 0.25).0);
        let diff = max_diff(&ours, &theirs);
        assert!(diff < 1e-4, "gradient off by {diff}");
        // The keys and values no row sees get exactly zero gradient.
        let width = 3 * 2 * 16;
        for row in 128..192 {
            let grads = &ours[row * width + width / 3..(row + 1) * width];
            assert!(grads.iter().all(|&g| g == 0.0), "row {row}: {grads:?}");
        }
    }

    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn reach_follows_the_mask() {
        use crate::model::{Layout, rmt::attention_mask};
        let bias = |mask: crate::nn::Mask| values(mask.bias(&Device::flex()));
        // RMT's decoder mask, `medium`'s sizes: read rows see the 16 read keys, segment rows
        // the keys up to themselves, write rows all.
        let reach = cpu::Reach::of(&bias(attention_mask(Layout::Decoder, 16, 256)), 288);
        assert_eq!(reach.keys(0, 16), 16);
        assert_eq!(reach.keys(16, 32), 32);
        assert_eq!(reach.keys(100, 101), 101);
        assert_eq!(reach.keys(260, 280), 288);
        assert_eq!(reach.first_row(0), 0);
        assert_eq!(reach.first_row(16), 16);
        assert_eq!(reach.first_row(200), 200);
        assert_eq!(reach.first_row(280), 272);
        let mut sizes = Vec::new();
        reach.blocks(0, 288, |i0, i1| sizes.push(i1 - i0));
        assert!(sizes.len() > 1 && sizes.iter().sum::<usize>() == 288);
        // `copy-small`'s: too little to skip, so one product over every key.
        let reach = cpu::Reach::of(&bias(attention_mask(Layout::Decoder, 10, 24)), 44);
        assert_eq!(reach.keys(0, 1), 44);
        let mut sizes = Vec::new();
        reach.blocks(0, 44, |i0, i1| sizes.push(i1 - i0));
        assert_eq!(sizes, [44]);
        // A row with every key blocked weighs them all, as the softmax over all of them does.
        let mut mask = crate::nn::Mask::blocked(256, 256);
        for q in (0..256).filter(|&q| q != 140) {
            (0..=q).for_each(|k| mask.allow(q, k));
        }
        let reach = cpu::Reach::of(&bias(mask), 256);
        assert_eq!(reach.keys(139, 140), 140);
        assert_eq!(reach.keys(140, 141), 256);
        assert_eq!(reach.first_row(255), 140);
    }

    #[cfg(not(target_family = "wasm"))]
    #[test]
    fn row_blocks_split_at_sequence_boundaries() {
        let dims = Dims {
            batch: 3,
            seq: 5,
            heads: 1,
            d_head: 1,
        };
        let mut seen = Vec::new();
        cpu::runs(dims, 3, 8, |b, i0, i1, at| seen.push((b, i0, i1, at)));
        assert_eq!(seen, [(0, 3, 5, 0), (1, 0, 5, 2), (2, 0, 1, 7)]);
    }
}
