//! Attention from query rows to keys and values given apart, with rotary positions, as one
//! operation: the attention of Transformer-XL and the infinity-former (a segment's rows over
//! `[cache | segment]`) and of RMT with rotary positions, at inference.
//!
//! On wgpu the operation is one dispatch of `shaders/kv_attention.wgsl` ([`wgpu`]): the rotary
//! turn of each query and key as it is read, the scores, the mask, an online softmax and the
//! weighted values, instead of some twenty kernels per layer (the heads' copies, Burn's rotary
//! encoding as a product with a sign table and a sum, two batched products, the mask and the
//! softmax's reductions). Elsewhere it runs as Burn's operations ([`forward_from_ops`]), which
//! is also the reference the kernel is checked against. Inference only: training keeps the
//! general path in [`crate::nn::attention`], whose backward Burn's autodiff gives.

mod wgpu;

use burn::backend::wgpu::CubeBackend;
use burn::backend::{
    Backend, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;
use burn::tensor::Slice;

use crate::ops::attention::split_heads;
use crate::ops::rotary::turn_heads;
use crate::ops::wgsl::{agrees, check_on, on_wgpu, read};

/// Attention over keys and values given apart as a backend operation.
#[backend_extension(Flex, Cube, Fusion)]
pub trait KvAttentionBackend: Backend {
    /// The merged context `[batch, seq_q, heads · d_head]` of `heads`-head attention from `q`
    /// `[batch, seq_q, heads · d_head]` over `kv` `[batch, seq_k, 2 · heads · d_head]` (keys,
    /// then values) under the additive `[seq_q, seq_k]` `bias`, scores scaled by `scale`. With
    /// `rotary`, queries and keys turn by the table `rope` `[positions, d_head, 2]` (cos, sin),
    /// queries at positions `query_start..`, keys at `0..`; without, `rope` is not read.
    #[allow(clippy::too_many_arguments)]
    #[fusion(dtype = q, shape = q)]
    fn kv_attention(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        rope: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        rotary: bool,
        query_start: usize,
    ) -> FloatTensor<Self> {
        let rope = rotary.then_some((rope, query_start));
        forward_from_ops::<Self>(q, kv, bias, rope, heads, scale)
    }
}

/// Whether [`kv_attention`] serves a call on `q`'s device: inference (no autodiff) on wgpu. The
/// attention layer takes its general path elsewhere.
pub(crate) fn serves(q: &Tensor<3>) -> bool {
    !q.is_autodiff() && on_wgpu(&q.device())
}

/// `heads`-head scaled dot-product attention from `q` over the keys and values `kv` (side by
/// side, each `heads · d_head` wide, heads in order within each) under the additive mask `bias`
/// ([`crate::nn::Mask::bias`]), scores scaled by `scale`. With `rope = Some((table, start))`
/// queries and keys first turn as Burn's `RotaryEncoding::apply` turns them, queries at
/// positions `start..`, keys at `0..`; `table` is the encoding's `freq_complex`.
///
/// # Shapes
/// - q: `[batch, seq_q, heads · d_head]`
/// - kv: `[batch, seq_k, 2 · heads · d_head]`
/// - bias: `[seq_q, seq_k]`
/// - table: `[positions, d_head, 2]`, `positions >= max(start + seq_q, seq_k)`
/// - output: `[batch, seq_q, heads · d_head]`, heads merged
pub fn kv_attention(
    q: Tensor<3>,
    kv: Tensor<3>,
    bias: Tensor<2>,
    rope: Option<(Tensor<3>, usize)>,
    heads: usize,
    scale: f64,
) -> Tensor<3> {
    let [batch, seq_q, width] = q.dims();
    let [kv_batch, seq_k, kv_width] = kv.dims();
    assert!(
        heads > 0 && width.is_multiple_of(heads) && kv_width == 2 * width && kv_batch == batch,
        "kv_attention: q {:?} and kv {:?} do not split into {heads} heads",
        q.dims(),
        kv.dims()
    );
    assert_eq!(
        bias.dims(),
        [seq_q, seq_k],
        "kv_attention: bias must be [seq_q, seq_k]"
    );
    if let Some((table, start)) = &rope {
        let [positions, d, two] = table.dims();
        assert!(
            d == width / heads && two == 2 && positions >= (start + seq_q).max(seq_k),
            "kv_attention: a rotary table {:?} does not cover {seq_k} keys and {seq_q} queries \
             from {start} with heads of {}",
            table.dims(),
            width / heads
        );
    }
    check_kernel(&q.device());
    kv_attention_unchecked(q, kv, bias, rope, heads, scale)
}

/// [`KvAttentionBackend::kv_attention`] from the backend's tensor operations.
fn forward_from_ops<B: Backend>(
    q: FloatTensor<B>,
    kv: FloatTensor<B>,
    bias: FloatTensor<B>,
    rope: Option<(FloatTensor<B>, usize)>,
    heads: usize,
    scale: f64,
) -> FloatTensor<B> {
    let [batch, seq_q, width] = q.shape().dims::<3>();
    let seq_k = kv.shape()[1];
    let [k, v] = split_heads::<B, 2>(kv.clone(), heads);
    let (q, k) = match rope {
        // The rotary operation's reference turns rows into heads.
        Some((table, start)) => {
            let d_head = width / heads;
            let keys = B::float_slice(
                kv,
                &[
                    Slice::full(),
                    Slice::full(),
                    Slice::new(0, Some(width as isize), 1),
                ],
            );
            (
                turn_heads::<B>(q, table.clone(), d_head, start),
                turn_heads::<B>(keys, table, d_head, 0),
            )
        }
        None => {
            let [q] = split_heads::<B, 1>(q, heads);
            (q, k)
        }
    };
    let scores = B::float_mul_scalar(B::float_matmul(q, B::float_transpose(k)), scale.into());
    let bias = B::float_reshape(bias, Shape::new([1, 1, seq_q, seq_k]));
    let weights = B::softmax(B::float_add(scores, bias), 3);
    let context = B::float_swap_dims(B::float_matmul(weights, v), 1, 2);
    B::float_reshape(context, Shape::new([batch, seq_q, width]))
}

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]), with and without rotary positions: two sequences of 21 query rows
/// (a partial block) over 37 keys, 2 heads of 8, and a mask with holes; elsewhere, and in a
/// browser, nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let (batch, seq_q, seq_k, heads, d_head) = (2, 21, 37, 2, 8);
        let width = heads * d_head;
        let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 500.0 - 1.0;
        let data = |len: usize, shape: Vec<usize>, salt| {
            TensorData::new(
                (0..len).map(|i| value(i, salt)).collect::<Vec<f32>>(),
                shape,
            )
        };
        let q = data(batch * seq_q * width, vec![batch, seq_q, width], 1);
        let kv = data(batch * seq_k * 2 * width, vec![batch, seq_k, 2 * width], 2);
        let start = seq_k - seq_q;
        let mut mask = crate::nn::Mask::blocked(seq_q, seq_k);
        for i in 0..seq_q {
            for j in 0..=start + i {
                if (i + 2 * j) % 5 != 1 || j == start + i {
                    mask.allow(i, j);
                }
            }
        }
        let table = burn::nn::RotaryEncodingConfig::new(seq_k, d_head)
            .init(&Device::flex())
            .freq_complex
            .into_data();
        for rotary in [false, true] {
            let run = |device: &Device| {
                let rope = rotary.then(|| (Tensor::<3>::from_data(table.clone(), device), start));
                kv_attention_unchecked(
                    Tensor::from_data(q.clone(), device),
                    Tensor::from_data(kv.clone(), device),
                    mask.bias(device),
                    rope,
                    heads,
                    0.3,
                )
            };
            // The reference runs on the CPU (see crate::ops::attention's check).
            agrees("context", &read(run(device))?, &read(run(&Device::flex()))?)?;
        }
        Ok(())
    });
}

/// [`kv_attention`] without its shape checks and the kernel's check (which calls it).
fn kv_attention_unchecked(
    q: Tensor<3>,
    kv: Tensor<3>,
    bias: Tensor<2>,
    rope: Option<(Tensor<3>, usize)>,
    heads: usize,
    scale: f64,
) -> Tensor<3> {
    let (table, rotary, start) = match rope {
        Some((table, start)) => (table, true, start),
        // Not read without rotary positions: the bias stands in.
        None => (bias.clone().unsqueeze::<3>(), false, 0),
    };
    Tensor::from_dispatch(<Dispatch as KvAttentionBackend>::kv_attention(
        q.into_dispatch(),
        kv.into_dispatch(),
        bias.into_dispatch(),
        table.into_dispatch(),
        heads,
        scale,
        rotary,
        start,
    ))
}

impl KvAttentionBackend for Flex {}

/// The GPU runtimes: on wgpu the WGSL kernel where it serves, Burn's operations elsewhere.
impl KvAttentionBackend for CubeBackend {
    fn kv_attention(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        rope: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        rotary: bool,
        query_start: usize,
    ) -> FloatTensor<Self> {
        let rope = rotary.then_some((rope, query_start));
        if wgpu::serves(&q, heads) {
            wgpu::kv_attention(q, kv, bias, rope, heads, scale)
        } else {
            forward_from_ops::<Self>(q, kv, bias, rope, heads, scale)
        }
    }
}
