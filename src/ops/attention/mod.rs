//! Attention from one packed `[query | key | value]` projection, as one operation: the CPU's
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
//! Every row of the projection is a key and a value; the queries are the rows from `first` on:
//! all of them for self-attention, the segment's rows of `[cache | segment]` for
//! Transformer-XL, whose cached rows are keys only. With rotary positions the kernels turn each
//! query and key to its row's position as they read it, and turn the gradients back.
//!
//! The general path in [`super::attention`] splits the projections into heads, runs two batched
//! products and a softmax, and merges the heads back: under autodiff that is three projection
//! products instead of one, six tracked operations, copies to merge heads forward and to split
//! their gradients backward, and a hand-off to the thread pool for each. This backend extension
//! takes the packed projection `[batch, seq, 3 · d_model]` and returns the merged context
//! `[batch, seq - first, d_model]`; its backward returns the packed gradient, so the projections
//! stay one product forward and backward.
//!
//! On the CPU self-attention without rotary positions runs on remem's kernels; the forward is
//! two passes on the thread pool: per `(batch, head)`, the scores `Q Kᵀ` (one small GEMM
//! reading `Q` and `K` in place inside the packed rows) turned into weights row by row; then per
//! block of rows, `P V` for every head, written straight into the merged context. The backward
//! is two passes the same way: per `(batch, head)`, `dP = dO Vᵀ` and the softmax gradient `dS`;
//! per block of rows, `dQ = dS K`, `dK = dSᵀ Q` and `dV = Pᵀ dO` into the packed gradient. GPU
//! runtimes other than wgpu, and the CPU with rotary positions or cached rows (which the models
//! do not send it: on the CPU they take the general path), run the same formulas from Burn's
//! ops.
//!
//! The products skip the keys a block of 64 rows cannot see ([`Mask`](crate::nn::Mask)'s blocked
//! positions past each row's last open key, as in RMT's mostly causal mask; see `Reach`): their
//! weights are exactly zero, so leaving them out changes nothing. At `medium`'s sizes that is 40%
//! fewer attention multiply-adds, and the attention layer's forward and backward about 1.25x
//! faster (interleaved in one process); `copy-small`'s 44 rows would skip too little to pay.
//! [`fused_attention`] and [`fused_attention_over`] are the entry points; `tests` check them
//! against those formulas and the gradients against finite differences.
//!
//! The mask bias and the rotary table are constants: no gradient flows to them.

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

use crate::ops::rotary::{turn_heads, unturn_heads};
use crate::ops::wgsl::{agrees, check_on, read};
use burn::tensor::Slice;

/// Packed attention as a backend operation, so that autodiff records one node.
///
/// Every row of `qkv` `[batch, seq, 3 · d]` is a key and a value, the rows from `first` on are
/// the queries; `bias` `[seq - first, seq]` is the additive mask and `scale` scales the scores.
/// With `rotary`, queries and keys turn by `rope` `[positions, d_head, 2]` (cos, sin) to their
/// rows' positions `0..seq`; without, `rope` is not read.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait FusedAttentionBackend: Backend {
    /// The merged context `[batch, seq - first, d]`.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = context_meta)]
    fn fused_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        rope: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        rotary: bool,
        first: usize,
    ) -> FloatTensor<Self> {
        Self::fused_attention_with_weights(qkv, bias, rope, heads, scale, rotary, first).0
    }

    /// The context and the weights `[batch, heads, seq - first, seq]`, for the visualisation
    /// and the backward. Under autodiff this runs as Burn's tracked operations; training calls
    /// `fused_attention`.
    #[allow(clippy::too_many_arguments)]
    #[fusion(meta = context_and_weights)]
    fn fused_attention_with_weights(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        rope: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        rotary: bool,
        first: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        forward_from_ops::<Self>(qkv, bias, rotary.then_some(rope), first, heads, scale)
    }

    /// The gradient of `qkv` from the forward's inputs, its weights and the context's gradient.
    #[allow(clippy::too_many_arguments)]
    #[fusion(dtype = qkv, shape = qkv)]
    fn fused_attention_backward(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        rope: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        rotary: bool,
        first: usize,
    ) -> FloatTensor<Self> {
        // The formulas need no mask: blocked keys have zero weight, so zero gradient.
        let _ = bias;
        let rope = rotary.then_some(rope);
        backward_from_ops::<Self>(qkv, rope, first, weights, grad, heads, scale)
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
    fused_attention_over(qkv, bias, None, 0, heads, scale)
}

/// [`fused_attention`] with the queries from row `first` on (every row is still a key and a
/// value: Transformer-XL's `[cache | segment]`, whose cached rows ask nothing), and with
/// rotary positions when `rope` is given: queries and keys turn as Burn's
/// `RotaryEncoding::apply` turns them, each row at its own position `0..seq`; `rope` is the
/// encoding's `freq_complex`.
///
/// # Shapes
/// - qkv: `[batch, seq, 3 · d_model]`
/// - bias: `[seq - first, seq]`
/// - rope: `[positions, d_head, 2]`, `positions >= seq`
/// - output: `[batch, seq - first, d_model]`, heads merged
pub fn fused_attention_over(
    qkv: Tensor<3>,
    bias: Tensor<2>,
    rope: Option<Tensor<3>>,
    first: usize,
    heads: usize,
    scale: f64,
) -> Tensor<3> {
    check(&qkv, &bias, rope.as_ref(), first, heads);
    check_kernel(&qkv.device());
    if qkv.is_autodiff() {
        check_backward_kernel(&qkv.device());
    }
    let (rope, rotary) = table_or_stand_in(rope, &bias);
    Tensor::from_dispatch(<Dispatch as FusedAttentionBackend>::fused_attention(
        qkv.into_dispatch(),
        bias.into_dispatch(),
        rope.into_dispatch(),
        heads,
        scale,
        rotary,
        first,
    ))
}

/// The rotary table and `true`, or without one a stand-in (not read) and `false`.
fn table_or_stand_in(rope: Option<Tensor<3>>, bias: &Tensor<2>) -> (Tensor<3>, bool) {
    match rope {
        Some(table) => (table, true),
        None => (bias.clone().unsqueeze::<3>(), false),
    }
}

/// `[batch, seq, 3 · d]` and the first query row -> `[batch, seq - first, d]`: the context's
/// shape.
fn context_shape(qkv: &Shape, first: usize) -> Shape {
    let [batch, seq, width] = qkv.dims::<3>();
    Shape::new([batch, seq - first, width / 3])
}

/// The context's shape and type, for the fusion stream.
fn context_meta(
    qkv: &TensorSpec,
    _bias: &TensorSpec,
    _rope: &TensorSpec,
    _heads: &usize,
    _scale: &f64,
    _rotary: &bool,
    first: &usize,
) -> TensorSpec {
    TensorSpec::new(context_shape(&qkv.shape, *first), qkv.dtype)
}

/// The context's and the weights' shapes and type, for the fusion stream.
fn context_and_weights(
    qkv: &TensorSpec,
    _bias: &TensorSpec,
    _rope: &TensorSpec,
    heads: &usize,
    _scale: &f64,
    _rotary: &bool,
    first: &usize,
) -> (TensorSpec, TensorSpec) {
    let [batch, seq, _] = qkv.shape.dims::<3>();
    (
        TensorSpec::new(context_shape(&qkv.shape, *first), qkv.dtype),
        TensorSpec::new(Shape::new([batch, *heads, seq - first, seq]), qkv.dtype),
    )
}

/// One case of the kernels' checks: the queries' first row and whether positions are rotary.
const CHECKED: [(usize, bool); 3] = [(0, false), (0, true), (11, true)];

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]): self-attention without and with rotary positions, and queries from a
/// later row; on other devices nothing. In a browser results cannot be read back
/// synchronously, so there the kernel runs unchecked.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let (data, heads, table) = check_input();
        // The reference runs on the CPU: on the device it would compile and tune kernels of
        // its own (tens of seconds on a software adapter) only to be thrown away.
        let cpu = Device::flex();
        for (first, rotary) in CHECKED {
            let run = |device: &Device, reference: bool| {
                let qkv = Tensor::<3>::from_data(data.clone(), device).into_dispatch();
                let bias = check_mask(data.shape()[1], first).bias(device);
                let rope = Tensor::<3>::from_data(table.clone(), device);
                let (context, weights) = if reference {
                    let rope = rotary.then(|| rope.into_dispatch());
                    forward_from_ops::<Dispatch>(qkv, bias.into_dispatch(), rope, first, heads, 0.3)
                } else {
                    <Dispatch as FusedAttentionBackend>::fused_attention_with_weights(
                        qkv,
                        bias.into_dispatch(),
                        rope.into_dispatch(),
                        heads,
                        0.3,
                        rotary,
                        first,
                    )
                };
                Ok::<_, String>((
                    read(Tensor::<3>::from_dispatch(context))?,
                    read(Tensor::<4>::from_dispatch(weights))?,
                ))
            };
            let (context, weights) = run(device, false)?;
            let (want_context, want_weights) = run(&cpu, true)?;
            agrees("context", &context, &want_context)?;
            agrees("weights", &weights, &want_weights)?;
        }
        Ok(())
    });
}

/// On wgpu, check the WGSL backward kernels against [`backward_from_ops`] on the CPU once per
/// device, as [`check_kernel`] does for the forward.
fn check_backward_kernel(device: &Device) {
    check_on(wgpu::BACKWARD, device, |device| {
        let (qkv, heads, table) = check_input();
        let [batch, seq, width] = qkv.shape().dims::<3>();
        let cpu = Device::flex();
        for (first, rotary) in CHECKED {
            let grad: Vec<f32> = (0..batch * (seq - first) * width / 3)
                .map(|i| ((i * 104_729) % 997) as f32 / 500.0 - 1.0)
                .collect();
            let grad = TensorData::new(grad, [batch, seq - first, width / 3]);
            let tensor = |data: &TensorData, device: &Device| {
                Tensor::<3>::from_data(data.clone(), device).into_dispatch()
            };
            let rope = |device: &Device| rotary.then(|| tensor(&table, device));
            let mask = check_mask(seq, first);
            // The weights come from the reference forward, so both sides start from the same
            // ones.
            let (_, weights) = forward_from_ops::<Dispatch>(
                tensor(&qkv, &cpu),
                mask.bias(&cpu).into_dispatch(),
                rope(&cpu),
                first,
                heads,
                0.3,
            );
            let weights = Tensor::<4>::from_dispatch(weights).into_data();
            let got = <Dispatch as FusedAttentionBackend>::fused_attention_backward(
                tensor(&qkv, device),
                mask.bias(device).into_dispatch(),
                tensor(&table, device),
                Tensor::<4>::from_data(weights.clone(), device).into_dispatch(),
                tensor(&grad, device),
                heads,
                0.3,
                rotary,
                first,
            );
            let want = backward_from_ops::<Dispatch>(
                tensor(&qkv, &cpu),
                rope(&cpu),
                first,
                Tensor::<4>::from_data(weights, &cpu).into_dispatch(),
                tensor(&grad, &cpu),
                heads,
                0.3,
            );
            agrees(
                "packed gradient",
                &read(Tensor::<3>::from_dispatch(got))?,
                &read(Tensor::<3>::from_dispatch(want))?,
            )?;
        }
        Ok(())
    });
}

/// The checks' input: two sequences of 37 rows (a partial block), 2 heads of 8; the packed
/// projection, the head count and a rotary table.
fn check_input() -> (TensorData, usize, TensorData) {
    let (batch, seq, heads, d_head) = (2, 37, 2, 8);
    let width = 3 * heads * d_head;
    let xs: Vec<f32> = (0..batch * seq * width)
        .map(|i| ((i * 7919) % 1013) as f32 / 500.0 - 1.0)
        .collect();
    let table = burn::nn::RotaryEncodingConfig::new(seq, d_head)
        .init(&Device::flex())
        .freq_complex
        .into_data();
    (TensorData::new(xs, [batch, seq, width]), heads, table)
}

/// The checks' mask for queries from row `first` of `seq`: causal with holes, every row's own
/// position open.
fn check_mask(seq: usize, first: usize) -> crate::nn::Mask {
    let mut mask = crate::nn::Mask::blocked(seq - first, seq);
    for q in 0..seq - first {
        let row = first + q;
        for k in 0..=row {
            if (row + 2 * k) % 5 != 1 || k == row {
                mask.allow(q, k);
            }
        }
    }
    mask
}

/// [`fused_attention`] with its weights `[batch, heads, seq, seq]` (for the visualisation; no
/// gradient flows through them).
pub fn fused_attention_with_weights(
    qkv: Tensor<3>,
    bias: Tensor<2>,
    heads: usize,
    scale: f64,
) -> (Tensor<3>, Tensor<4>) {
    check(&qkv, &bias, None, 0, heads);
    check_kernel(&qkv.device());
    let (rope, rotary) = table_or_stand_in(None, &bias);
    let (context, weights) = <Dispatch as FusedAttentionBackend>::fused_attention_with_weights(
        qkv.into_dispatch(),
        bias.into_dispatch(),
        rope.into_dispatch(),
        heads,
        scale,
        rotary,
        0,
    );
    (
        Tensor::from_dispatch(context),
        Tensor::from_dispatch(weights),
    )
}

/// The shapes the operation needs, checked before any backend sees them.
fn check(qkv: &Tensor<3>, bias: &Tensor<2>, rope: Option<&Tensor<3>>, first: usize, heads: usize) {
    let [_, seq, width] = qkv.dims();
    assert!(
        heads > 0 && width.is_multiple_of(3 * heads),
        "fused_attention: a packed width of {width} does not split into 3 x {heads} heads"
    );
    assert!(
        first < seq,
        "fused_attention: queries from row {first} of {seq} ask nothing"
    );
    assert_eq!(
        bias.dims(),
        [seq - first, seq],
        "fused_attention: bias must be [seq - first, seq]"
    );
    if let Some(table) = rope {
        let [positions, d, two] = table.dims();
        assert!(
            d == width / (3 * heads) && d % 2 == 0 && two == 2 && positions >= seq,
            "fused_attention: a rotary table {:?} does not cover {seq} rows of heads of {}",
            table.dims(),
            width / (3 * heads)
        );
    }
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
pub(crate) fn merge<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let [batch, heads, seq, d_head] = x.shape().dims::<4>();
    let x = B::float_swap_dims(x, 1, 2);
    B::float_reshape(x, Shape::new([batch, seq, heads * d_head]))
}

/// Rows `from..` of `[batch, heads, seq, d_head]`.
fn rows_from<B: Backend>(x: FloatTensor<B>, from: usize) -> FloatTensor<B> {
    let mut slices = [Slice::full(); 4];
    slices[2] = Slice::new(from as isize, None, 1);
    B::float_slice(x, &slices)
}

/// The queries (rows `first..`), keys and values of `qkv`, each `[batch, heads, rows,
/// d_head]`, queries and keys turned to their rows' positions when `rope` is given.
fn split_turned<B: Backend>(
    qkv: FloatTensor<B>,
    rope: Option<FloatTensor<B>>,
    first: usize,
    dims: Dims,
) -> [FloatTensor<B>; 3] {
    let [q, k, v] = split_heads::<B, 3>(qkv.clone(), dims.heads);
    let (q, k) = match rope {
        Some(table) => {
            let d = dims.d_model() as isize;
            let columns = |from: isize| {
                B::float_slice(
                    qkv.clone(),
                    &[
                        Slice::full(),
                        Slice::full(),
                        Slice::new(from, Some(from + d), 1),
                    ],
                )
            };
            (
                turn_heads::<B>(columns(0), table.clone(), dims.d_head, 0),
                turn_heads::<B>(columns(d), table, dims.d_head, 0),
            )
        }
        None => (q, k),
    };
    [rows_from::<B>(q, first), k, v]
}

/// [`FusedAttentionBackend::fused_attention_with_weights`] from the backend's tensor
/// operations: the reference the kernels are checked against.
fn forward_from_ops<B: Backend>(
    qkv: FloatTensor<B>,
    bias: FloatTensor<B>,
    rope: Option<FloatTensor<B>>,
    first: usize,
    heads: usize,
    scale: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let dims = Dims::of::<B>(&qkv, heads);
    let [q, k, v] = split_turned::<B>(qkv, rope, first, dims);
    let scores = B::float_mul_scalar(B::float_matmul(q, B::float_transpose(k)), scale.into());
    let bias = B::float_reshape(bias, Shape::new([1, 1, dims.seq - first, dims.seq]));
    let weights = B::softmax(B::float_add(scores, bias), 3);
    let context = merge::<B>(B::float_matmul(weights.clone(), v));
    (context, weights)
}

/// [`FusedAttentionBackend::fused_attention_backward`] from the backend's tensor operations.
fn backward_from_ops<B: Backend>(
    qkv: FloatTensor<B>,
    rope: Option<FloatTensor<B>>,
    first: usize,
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
    let [q, k, v] = split_turned::<B>(qkv.clone(), rope.clone(), first, dims);
    let d_out = B::float_reshape(grad, Shape::new([batch, seq - first, heads, d_head]));
    let d_out = B::float_swap_dims(d_out, 1, 2);
    let d_v = B::float_matmul(B::float_transpose(weights.clone()), d_out.clone());
    let d_w = B::float_matmul(d_out, B::float_transpose(v));
    let dot = B::float_sum_dim(B::float_mul(d_w.clone(), weights.clone()), 3);
    let d_s = B::float_mul_scalar(B::float_mul(weights, B::float_sub(d_w, dot)), scale.into());
    let d_q = B::float_matmul(d_s.clone(), k);
    let d_k = B::float_matmul(B::float_transpose(d_s), q);
    // The rows before `first` ask nothing: their query gradient is zero.
    let d_q = match first {
        0 => d_q,
        _ => {
            let zeros = B::float_zeros(
                Shape::new([batch, heads, first, d_head]),
                &qkv.device(),
                qkv.dtype().into(),
            );
            B::float_cat(vec![zeros, d_q], 2)
        }
    };
    // Each gradient back into rows, turned back to its rows' positions where the forward
    // turned it.
    let rows = |x: FloatTensor<B>, turned: bool| match (&rope, turned) {
        (Some(table), true) => unturn_heads::<B>(x, table.clone(), 0),
        _ => merge::<B>(x),
    };
    B::float_cat(vec![rows(d_q, true), rows(d_k, true), rows(d_v, false)], 2)
}

/// The GPU runtimes: on wgpu the WGSL kernel where it serves, Burn's operations elsewhere.
impl FusedAttentionBackend for CubeBackend {
    fn fused_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        rope: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        rotary: bool,
        first: usize,
    ) -> FloatTensor<Self> {
        let rope = rotary.then_some(rope);
        if wgpu::serves(&qkv, heads) {
            wgpu::attention(qkv, bias, rope, first, heads, scale, false).0
        } else {
            forward_from_ops::<Self>(qkv, bias, rope, first, heads, scale).0
        }
    }

    fn fused_attention_with_weights(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        rope: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        rotary: bool,
        first: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let rope = rotary.then_some(rope);
        if wgpu::serves(&qkv, heads) {
            let (context, weights) = wgpu::attention(qkv, bias, rope, first, heads, scale, true);
            (context, weights.expect("asked for the weights"))
        } else {
            forward_from_ops::<Self>(qkv, bias, rope, first, heads, scale)
        }
    }

    fn fused_attention_backward(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        rope: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        rotary: bool,
        first: usize,
    ) -> FloatTensor<Self> {
        let _ = bias;
        let rope = rotary.then_some(rope);
        if wgpu::serves_backward(&qkv, heads) {
            wgpu::attention_backward(qkv, rope, first, weights, grad, heads, scale)
        } else {
            backward_from_ops::<Self>(qkv, rope, first, weights, grad, heads, scale)
        }
    }
}

#[cfg(target_family = "wasm")]
impl FusedAttentionBackend for Flex {}

/// The CPU: remem's kernels for self-attention without rotary positions, the reference
/// otherwise (see the module docs).
#[cfg(not(target_family = "wasm"))]
impl FusedAttentionBackend for Flex {
    fn fused_attention_with_weights(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        rope: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        rotary: bool,
        first: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if rotary || first > 0 || !cpu::is_f32(&qkv) || !cpu::is_f32(&bias) {
            let rope = rotary.then_some(rope);
            return forward_from_ops::<Flex>(qkv, bias, rope, first, heads, scale);
        }
        let dims = Dims::of::<Flex>(&qkv, heads);
        cpu::forward(qkv, bias, dims, scale)
    }

    fn fused_attention_backward(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        rope: FloatTensor<Self>,
        weights: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        rotary: bool,
        first: usize,
    ) -> FloatTensor<Self> {
        let f32s = [&qkv, &bias, &weights, &grad].into_iter().all(cpu::is_f32);
        if rotary || first > 0 || !f32s {
            let rope = rotary.then_some(rope);
            return backward_from_ops::<Flex>(qkv, rope, first, weights, grad, heads, scale);
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
        rope: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        rotary: bool,
        first: usize,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct FusedAttentionBackward;

        /// What the backward keeps: the packed input, the mask bias, the rotary table, the
        /// weights, and the head count, the scale, whether positions are rotary and the first
        /// query row.
        type Kept<B> = ([FloatTensor<B>; 4], usize, f64, bool, usize);

        impl<B: Backend + FusedAttentionBackend> Backward<B, 1> for FusedAttentionBackward {
            type State = Kept<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [qkv_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let ([qkv, bias, rope, weights], heads, scale, rotary, first) = ops.state;
                if let Some(node) = qkv_node {
                    let d_qkv = B::fused_attention_backward(
                        qkv, bias, rope, weights, grad, heads, scale, rotary, first,
                    );
                    grads.register::<B>(node.id, d_qkv);
                }
            }
        }

        let bias = bias.into_primitive();
        let rope = rope.into_primitive();
        match FusedAttentionBackward
            .prepare::<C>([qkv.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let qkv = qkv.into_primitive();
                let (context, weights) = B::fused_attention_with_weights(
                    qkv.clone(),
                    bias.clone(),
                    rope.clone(),
                    heads,
                    scale,
                    rotary,
                    first,
                );
                let kept = ([qkv, bias, rope, weights], heads, scale, rotary, first);
                prep.finish(kept, context)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_attention(
                qkv.into_primitive(),
                bias,
                rope,
                heads,
                scale,
                rotary,
                first,
            )),
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

    /// Queries from a later row and rotary positions (Transformer-XL's attention over
    /// `[cache | segment]`): the operation's reference forward and its own backward
    /// (`backward_from_ops`, with the transposed turn and the cached rows' zero query gradient)
    /// against Burn's rotary encoding, products and softmax under autodiff.
    #[cfg(feature = "train")]
    #[test]
    fn queries_from_a_later_row_with_rotary_positions_match_burns_operations() {
        let device = Device::flex().autodiff();
        let (batch, seq, heads, d_head, first) = (2, 9, 2, 4, 3);
        let (qkv, _) = inputs([batch, seq, heads, d_head], &device);
        let bias: Vec<f32> = (0..(seq - first) * seq)
            .map(|i| {
                let (q, k) = (first + i / seq, i % seq);
                if k > q || (q + k) % 4 == 1 { -1e9 } else { 0.0 }
            })
            .collect();
        let bias = Tensor::<2>::from_data(TensorData::new(bias, [seq - first, seq]), &device);
        let rope = burn::nn::RotaryEncodingConfig::new(16, d_head).init(&device);
        let weights = Tensor::<3>::from_data(
            TensorData::new(
                (0..batch * (seq - first) * heads * d_head)
                    .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
                    .collect::<Vec<f32>>(),
                [batch, seq - first, heads * d_head],
            ),
            &device,
        );
        let d = heads * d_head;
        let run = |ours: bool| {
            let qkv = qkv.clone().require_grad();
            let context = if ours {
                let table = Some(rope.freq_complex.clone());
                fused_attention_over(qkv.clone(), bias.clone(), table, first, heads, 0.4)
            } else {
                let part = |i: usize| {
                    qkv.clone()
                        .slice(s![.., .., i * d..(i + 1) * d])
                        .reshape([batch, seq, heads, d_head])
                        .swap_dims(1, 2)
                };
                let q = rope.apply(part(0), 0).slice(s![.., .., first.., ..]);
                let k = rope.apply(part(1), 0);
                let scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(0.4);
                let p = burn::tensor::activation::softmax(scores + bias.clone().unsqueeze(), 3);
                p.matmul(part(2))
                    .swap_dims(1, 2)
                    .reshape([batch, seq - first, d])
            };
            let grads = (context.clone() * weights.clone()).sum().backward();
            (
                values(context),
                values(qkv.grad(&grads).expect("qkv gradient")),
            )
        };
        let (context, grad) = run(true);
        let (want_context, want_grad) = run(false);
        let diff = max_diff(&context, &want_context);
        assert!(diff < 1e-5, "context off by {diff}");
        let diff = max_diff(&grad, &want_grad);
        assert!(diff < 1e-5, "gradient off by {diff}");
        // The cached rows ask nothing: their query columns get no gradient; their keys do.
        let width = 3 * d;
        let cached_queries = (0..batch * first).flat_map(|r| {
            let (b, i) = (r / first, r % first);
            let at = (b * seq + i) * width;
            grad[at..at + d].to_vec()
        });
        assert!(cached_queries.into_iter().all(|g| g == 0.0));
        assert!(
            grad[d..2 * d].iter().any(|g| g.abs() > 1e-3),
            "no key gradient"
        );
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
