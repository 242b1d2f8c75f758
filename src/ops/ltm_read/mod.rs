//! The infinity-former's read of its long-term memory as one operation, at inference: the
//! scores of the query rows against the memory's keys, the Gaussian each query attends with
//! (its mean a sigmoid and its variance a softplus of the scores' weighted sums), each basis
//! function's expectation under it, and the values weighted by those (see
//! [`crate::nn::LongTermMemory::read`], whose formulas these are).
//!
//! On wgpu the operation is one dispatch of `shaders/ltm_read.wgsl` ([`wgpu`]) instead of some
//! fifteen kernels per layer (the heads' copies, two batched products, the two small products
//! for the mean and the variance, the activations, the expectation's element-wise chain).
//! Elsewhere it runs as Burn's operations ([`forward_from_ops`]), which is also the reference
//! the kernel is checked against. Inference only: training keeps the module's own path, whose
//! backward Burn's autodiff gives.

mod wgpu;

use burn::backend::fusion::custom::TensorSpec;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{
    Backend, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;
use burn::tensor::Slice;

use crate::ops::attention::split_heads;
use crate::ops::wgsl::{agrees, check_on, on_wgpu, read};

/// The long-term memory's read as a backend operation.
#[backend_extension(Flex, Cube, Fusion)]
pub trait LtmReadBackend: Backend {
    /// The merged context `[batch, seq_q, heads · d_head]` and the densities `[2, batch, heads,
    /// seq_q]` (means, then variances) of queries `q` `[batch, seq_q, heads · d_head]` reading
    /// the memory's keys and values `kv` `[batch, N, 2 · heads · d_head]`; `params` is
    /// `[w_mu (N), b_mu, w_sigma (N), b_sigma, centres (N), widths² (N)]`, scores are scaled by
    /// `scale`, variances are at least `min_variance`.
    #[fusion(meta = read_specs)]
    fn ltm_read(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        params: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        min_variance: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        forward_from_ops::<Self>(q, kv, params, heads, scale, min_variance)
    }
}

/// The context's and the densities' shapes and type, for the fusion stream.
fn read_specs(
    q: &TensorSpec,
    _kv: &TensorSpec,
    _params: &TensorSpec,
    heads: &usize,
    _scale: &f64,
    _min_variance: &f64,
) -> (TensorSpec, TensorSpec) {
    let [batch, seq_q, _] = q.shape.dims::<3>();
    (
        TensorSpec::new(q.shape.clone(), q.dtype),
        TensorSpec::new(Shape::new([2, batch, *heads, seq_q]), q.dtype),
    )
}

/// Whether [`ltm_read`] serves a call on `q`'s device: inference (no autodiff) on wgpu. The
/// memory takes its own path elsewhere.
pub(crate) fn serves(q: &Tensor<3>) -> bool {
    !q.is_autodiff() && on_wgpu(&q.device())
}

/// The read of the long-term memory by `heads`-head queries `q`, from the memory's keys and
/// values `kv` (side by side, heads in order within each) and `params` (the mean's and the
/// variance's weights and biases, the basis functions' centres and squared widths, in that
/// order), scores scaled by `scale`, variances at least `min_variance`: the merged context and
/// the means and variances of the queries' Gaussians.
///
/// # Shapes
/// - q: `[batch, seq_q, heads · d_head]`
/// - kv: `[batch, N, 2 · heads · d_head]`
/// - params: `[4 N + 2]`
/// - output: context `[batch, seq_q, heads · d_head]`, means and variances each
///   `[batch, heads, seq_q]`
pub fn ltm_read(
    q: Tensor<3>,
    kv: Tensor<3>,
    params: Tensor<1>,
    heads: usize,
    scale: f64,
    min_variance: f64,
) -> (Tensor<3>, Tensor<3>, Tensor<3>) {
    let [batch, seq_q, width] = q.dims();
    let [kv_batch, n, kv_width] = kv.dims();
    assert!(
        heads > 0 && width.is_multiple_of(heads) && kv_width == 2 * width && kv_batch == batch,
        "ltm_read: q {:?} and kv {:?} do not split into {heads} heads",
        q.dims(),
        kv.dims()
    );
    assert_eq!(
        params.dims(),
        [4 * n + 2],
        "ltm_read: params must be [4 N + 2]"
    );
    check_kernel(&q.device());
    let (context, density) = unchecked(q, kv, params, heads, scale, min_variance);
    let [mu, variance] = [0, 1].map(|i| {
        density
            .clone()
            .slice(s![i..i + 1, .., .., ..])
            .reshape([batch, heads, seq_q])
    });
    (context, mu, variance)
}

/// [`ltm_read`]'s operation without its checks: the context and the densities `[2, batch,
/// heads, seq_q]`.
fn unchecked(
    q: Tensor<3>,
    kv: Tensor<3>,
    params: Tensor<1>,
    heads: usize,
    scale: f64,
    min_variance: f64,
) -> (Tensor<3>, Tensor<4>) {
    let (context, density) = <Dispatch as LtmReadBackend>::ltm_read(
        q.into_dispatch(),
        kv.into_dispatch(),
        params.into_dispatch(),
        heads,
        scale,
        min_variance,
    );
    (
        Tensor::from_dispatch(context),
        Tensor::from_dispatch(density),
    )
}

/// [`LtmReadBackend::ltm_read`] from the backend's tensor operations, as
/// [`crate::nn::LongTermMemory::read`] computes it.
fn forward_from_ops<B: Backend>(
    q: FloatTensor<B>,
    kv: FloatTensor<B>,
    params: FloatTensor<B>,
    heads: usize,
    scale: f64,
    min_variance: f64,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let [batch, seq_q, width] = q.shape().dims::<3>();
    let n = kv.shape()[1];
    let [q] = split_heads::<B, 1>(q, heads);
    let [k, v] = split_heads::<B, 2>(kv, heads);
    let part = |from: usize, len: usize, shape: Shape| {
        let one = B::float_slice(
            params.clone(),
            &[Slice::new(from as isize, Some((from + len) as isize), 1)],
        );
        B::float_reshape(one, shape)
    };
    let column = || Shape::new([1, 1, n, 1]);
    let scalar = || Shape::new([1, 1, 1, 1]);
    // scores [batch, heads, seq_q, N]
    let scores = B::float_mul_scalar(B::float_matmul(q, B::float_transpose(k)), scale.into());
    let weighted = |w: usize, b: usize| {
        B::float_add(
            B::float_matmul(scores.clone(), part(w, n, column())),
            part(b, 1, scalar()),
        )
    };
    let mu = B::sigmoid(weighted(0, n));
    let sigma_in = weighted(n + 1, 2 * n + 1);
    // Softplus in its overflow-free form, max(x, 0) + log1p(exp(-|x|)) (Burn's returns x above
    // 20, which this equals there to f32 precision).
    let tail = B::float_log1p(B::float_exp(B::float_neg(B::float_abs(sigma_in.clone()))));
    let softplus = B::float_add(B::float_clamp_min(sigma_in, 0.0.into()), tail);
    let variance = B::float_clamp_min(softplus, min_variance.into());
    // N(mu; c_j, var + w_j^2), [batch, heads, seq_q, N]
    let row = || Shape::new([1, 1, 1, n]);
    let var = B::float_add(variance.clone(), part(3 * n + 2, n, row()));
    let x = B::float_sub(mu.clone(), part(2 * n + 2, n, row()));
    let r = B::float_div(
        B::float_exp(B::float_div(
            B::float_mul(x.clone(), x),
            B::float_mul_scalar(var.clone(), (-2.0).into()),
        )),
        B::float_sqrt(B::float_mul_scalar(
            var,
            (2.0 * std::f64::consts::PI).into(),
        )),
    );
    let context = B::float_swap_dims(B::float_matmul(r, v), 1, 2);
    let context = B::float_reshape(context, Shape::new([batch, seq_q, width]));
    let one = Shape::new([1, batch, heads, seq_q]);
    let density = B::float_cat(
        vec![
            B::float_reshape(mu, one.clone()),
            B::float_reshape(variance, one),
        ],
        0,
    );
    (context, density)
}

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]): two sequences of 21 query rows reading 12 basis functions with 2
/// heads of 8, one variance's input above softplus's threshold; elsewhere, and in a browser,
/// nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let (batch, seq_q, n, heads, d_head) = (2, 21, 12, 2, 8);
        let width = heads * d_head;
        let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 500.0 - 1.0;
        let data = |len: usize, shape: Vec<usize>, salt| {
            TensorData::new(
                (0..len).map(|i| value(i, salt)).collect::<Vec<f32>>(),
                shape,
            )
        };
        let q = data(batch * seq_q * width, vec![batch, seq_q, width], 1);
        let kv = data(batch * n * 2 * width, vec![batch, n, 2 * width], 2);
        let mut params: Vec<f32> = (0..4 * n + 2).map(|i| value(i, 3)).collect();
        // Centres in [0, 1], squared widths positive, and a large variance bias for one side
        // of softplus's threshold.
        for j in 0..n {
            params[2 * n + 2 + j] = j as f32 / (n - 1) as f32;
            params[3 * n + 2 + j] = 0.01 + 0.02 * j as f32;
        }
        params[2 * n + 1] = 21.0;
        let params = TensorData::new(params, [4 * n + 2]);
        let run = |device: &Device| {
            unchecked(
                Tensor::from_data(q.clone(), device),
                Tensor::from_data(kv.clone(), device),
                Tensor::from_data(params.clone(), device),
                heads,
                0.35,
                1e-4,
            )
        };
        let (context, density) = run(device);
        let (want_context, want_density) = run(&Device::flex());
        agrees("context", &read(context)?, &read(want_context)?)?;
        agrees("density", &read(density)?, &read(want_density)?)
    });
}

impl LtmReadBackend for Flex {}

/// The GPU runtimes: on wgpu the WGSL kernel where it serves, Burn's operations elsewhere.
impl LtmReadBackend for CubeBackend {
    fn ltm_read(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        params: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        min_variance: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if wgpu::serves(&q, heads) {
            wgpu::ltm_read(q, kv, params, heads, scale, min_variance)
        } else {
            forward_from_ops::<Self>(q, kv, params, heads, scale, min_variance)
        }
    }
}
