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
use burn::tensor::Slice;

use crate::ops::attention::{merge, split_heads};
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

/// The long-term memory's read in training: the context alone (the densities then carry no
/// gradient), as one autodiff operation whose backward is two dispatches on wgpu
/// (`shaders/ltm_read_backward.wgsl`, `shaders/ltm_read_params_backward.wgsl`) instead of
/// Burn's operations and their gradients, some fifty kernels per layer and segment.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait LtmReadTrainBackend: Backend {
    /// [`LtmReadBackend::ltm_read`]'s context alone, `[batch, seq_q, heads · d_head]`.
    #[fusion(meta = context_spec)]
    fn ltm_read_context(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        params: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        min_variance: f64,
    ) -> FloatTensor<Self> {
        forward_from_ops::<Self>(q, kv, params, heads, scale, min_variance).0
    }

    /// The gradients of `q`, `kv` and `params` (zero for the basis's centres and widths) from
    /// the context's gradient `grad`.
    #[fusion(meta = gradient_specs)]
    #[allow(clippy::too_many_arguments)]
    fn ltm_read_backward(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        params: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        min_variance: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        backward_from_ops::<Self>(q, kv, params, grad, heads, scale, min_variance)
    }
}

/// The context's shape and type, for the fusion stream: the queries'.
fn context_spec(
    q: &TensorSpec,
    _kv: &TensorSpec,
    _params: &TensorSpec,
    _heads: &usize,
    _scale: &f64,
    _min_variance: &f64,
) -> TensorSpec {
    q.clone()
}

/// The gradients' shapes and type, for the fusion stream: the inputs'.
#[allow(clippy::too_many_arguments)]
fn gradient_specs(
    q: &TensorSpec,
    kv: &TensorSpec,
    params: &TensorSpec,
    _grad: &TensorSpec,
    _heads: &usize,
    _scale: &f64,
    _min_variance: &f64,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    (q.clone(), kv.clone(), params.clone())
}

/// The context's shapes and type, for the fusion stream.
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

/// Whether the module should read through [`ltm_read_context`] in training on `q`'s device:
/// on wgpu, after the forward and backward kernels' checks there (a kernel that failed its
/// check leaves the operation to Burn's operations, the same numbers with more kernels). The
/// CPU keeps the module's own path.
pub(crate) fn serves_training(q: &Tensor<3>) -> bool {
    let device = q.device();
    if !on_wgpu(&device) {
        return false;
    }
    check_kernel(&device);
    check_backward_kernel(&device);
    true
}

/// [`ltm_read`]'s context alone, as one autodiff operation (training; see
/// [`LtmReadTrainBackend`]).
///
/// # Shapes
/// as [`ltm_read`]
pub fn ltm_read_context(
    q: Tensor<3>,
    kv: Tensor<3>,
    params: Tensor<1>,
    heads: usize,
    scale: f64,
    min_variance: f64,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as LtmReadTrainBackend>::ltm_read_context(
        q.into_dispatch(),
        kv.into_dispatch(),
        params.into_dispatch(),
        heads,
        scale,
        min_variance,
    ))
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

/// What the read computes on its way to the context, kept for the backward: the heads'
/// queries, keys and values `[batch, heads, rows, d_head]`, the scores `[batch, heads, seq_q,
/// N]`, the Gaussians' means, variance inputs, softplus and floored variances `[batch, heads,
/// seq_q, 1]`, and per basis function `var + w_j²`, `mu - c_j` and the expectation `r_j`
/// `[batch, heads, seq_q, N]`.
struct Terms<B: Backend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    scores: FloatTensor<B>,
    mu: FloatTensor<B>,
    sigma_in: FloatTensor<B>,
    softplus: FloatTensor<B>,
    variance: FloatTensor<B>,
    var: FloatTensor<B>,
    x: FloatTensor<B>,
    r: FloatTensor<B>,
}

/// `params`' entries `from..from + len` as `shape`.
fn part<B: Backend>(
    params: &FloatTensor<B>,
    from: usize,
    len: usize,
    shape: [usize; 4],
) -> FloatTensor<B> {
    let one = B::float_slice(
        params.clone(),
        &[Slice::new(from as isize, Some((from + len) as isize), 1)],
    );
    B::float_reshape(one, Shape::new(shape))
}

/// The read's forward from the backend's tensor operations, as
/// [`crate::nn::LongTermMemory::read`] computes it, up to the expectations.
fn terms<B: Backend>(
    q: FloatTensor<B>,
    kv: FloatTensor<B>,
    params: &FloatTensor<B>,
    heads: usize,
    scale: f64,
    min_variance: f64,
) -> Terms<B> {
    let n = kv.shape()[1];
    let [q] = split_heads::<B, 1>(q, heads);
    let [k, v] = split_heads::<B, 2>(kv, heads);
    let scores = B::float_mul_scalar(
        B::float_matmul(q.clone(), B::float_transpose(k.clone())),
        scale.into(),
    );
    let weighted = |w: usize, b: usize| {
        B::float_add(
            B::float_matmul(scores.clone(), part::<B>(params, w, n, [1, 1, n, 1])),
            part::<B>(params, b, 1, [1, 1, 1, 1]),
        )
    };
    let mu = B::sigmoid(weighted(0, n));
    let sigma_in = weighted(n + 1, 2 * n + 1);
    // Softplus in its overflow-free form, max(x, 0) + log1p(exp(-|x|)) (Burn's returns x above
    // 20, which this equals there to f32 precision).
    let tail = B::float_log1p(B::float_exp(B::float_neg(B::float_abs(sigma_in.clone()))));
    let softplus = B::float_add(B::float_clamp_min(sigma_in.clone(), 0.0.into()), tail);
    let variance = B::float_clamp_min(softplus.clone(), min_variance.into());
    // N(mu; c_j, var + w_j^2)
    let var = B::float_add(
        variance.clone(),
        part::<B>(params, 3 * n + 2, n, [1, 1, 1, n]),
    );
    let x = B::float_sub(mu.clone(), part::<B>(params, 2 * n + 2, n, [1, 1, 1, n]));
    let r = B::float_div(
        B::float_exp(B::float_div(
            B::float_mul(x.clone(), x.clone()),
            B::float_mul_scalar(var.clone(), (-2.0).into()),
        )),
        B::float_sqrt(B::float_mul_scalar(
            var.clone(),
            (2.0 * std::f64::consts::PI).into(),
        )),
    );
    Terms {
        q,
        k,
        v,
        scores,
        mu,
        sigma_in,
        softplus,
        variance,
        var,
        x,
        r,
    }
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
    let t = terms::<B>(q, kv, &params, heads, scale, min_variance);
    let context = B::float_swap_dims(B::float_matmul(t.r, t.v), 1, 2);
    let context = B::float_reshape(context, Shape::new([batch, seq_q, width]));
    let one = Shape::new([1, batch, heads, seq_q]);
    let density = B::float_cat(
        vec![
            B::float_reshape(t.mu, one.clone()),
            B::float_reshape(t.variance, one),
        ],
        0,
    );
    (context, density)
}

/// [`LtmReadTrainBackend::ltm_read_backward`] from the backend's tensor operations: the
/// forward's quantities again, then the chain rule written out (the kernels' formulas).
fn backward_from_ops<B: Backend>(
    q: FloatTensor<B>,
    kv: FloatTensor<B>,
    params: FloatTensor<B>,
    grad: FloatTensor<B>,
    heads: usize,
    scale: f64,
    min_variance: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let n = kv.shape()[1];
    let [batch, seq_q, _] = q.shape().dims::<3>();
    let [g] = split_heads::<B, 1>(grad, heads);
    let Terms {
        q: qh,
        k,
        v,
        scores: s,
        mu,
        sigma_in,
        softplus,
        var,
        x,
        r,
        ..
    } = terms::<B>(q, kv, &params, heads, scale, min_variance);
    let x2 = B::float_mul(x.clone(), x.clone());
    let row = || [1, 1, 1, n];
    // dr_j = g · v_j, then back to the mean and the variance:
    // dr/dmu = -r x / V, dr/dvar = r (x² / 2V² - 1 / 2V).
    let dr_r = B::float_mul(B::float_matmul(g.clone(), B::float_transpose(v)), r.clone());
    let dmu = B::float_sum_dim(
        B::float_neg(B::float_div(B::float_mul(dr_r.clone(), x), var.clone())),
        3,
    );
    let half_over = B::float_div(
        B::float_mul_scalar(x2, 0.5.into()),
        B::float_mul(var.clone(), var.clone()),
    );
    let dvar = B::float_sum_dim(
        B::float_mul(
            dr_r,
            B::float_sub(
                half_over,
                B::float_div_scalar(B::float_recip(var), 2.0.into()),
            ),
        ),
        3,
    );
    // Through the sigmoid, and the softplus (slope: the sigmoid) above the variance's floor
    // (half the slope exactly at it).
    let da = B::float_mul(
        dmu,
        B::float_mul(
            mu.clone(),
            B::float_neg(B::float_sub_scalar(mu, 1.0.into())),
        ),
    );
    let above = B::float_mul_scalar(
        B::float_add_scalar(
            B::float_sign(B::float_sub_scalar(softplus, min_variance.into())),
            1.0.into(),
        ),
        0.5.into(),
    );
    let dc = B::float_mul(dvar, B::float_mul(B::sigmoid(sigma_in), above));
    // Each score's gradient e_j = da w_mu_j + dc w_sigma_j.
    let e = B::float_add(
        B::float_mul(da.clone(), part::<B>(&params, 0, n, row())),
        B::float_mul(dc.clone(), part::<B>(&params, n + 1, n, row())),
    );
    let dq = merge::<B>(B::float_mul_scalar(
        B::float_matmul(e.clone(), k),
        scale.into(),
    ));
    let dk = B::float_mul_scalar(B::float_matmul(B::float_transpose(e), qh), scale.into());
    let dv = B::float_matmul(B::float_transpose(r), g);
    let dkv = B::float_cat(vec![merge::<B>(dk), merge::<B>(dv)], 2);
    // The parameters: sums over every (batch, head, query row).
    let rows = batch * heads * seq_q;
    let over_rows = |t: FloatTensor<B>, width: usize| {
        B::float_reshape(
            B::float_sum_dim(B::float_reshape(t, Shape::new([rows, width])), 0),
            Shape::new([width]),
        )
    };
    let dw_mu = over_rows(B::float_mul(da.clone(), s.clone()), n);
    let db_mu = over_rows(da, 1);
    let dw_sigma = over_rows(B::float_mul(dc.clone(), s), n);
    let db_sigma = over_rows(dc, 1);
    let fixed = B::float_zeros(Shape::new([2 * n]), &dw_mu.device(), dw_mu.dtype().into());
    let dparams = B::float_cat(vec![dw_mu, db_mu, dw_sigma, db_sigma, fixed], 0);
    (dq, dkv, dparams)
}

/// A read's check input: queries `[batch, seq_q, heads · d_head]`, keys and values `[batch, N,
/// 2 · heads · d_head]`, parameters `[4 N + 2]` (the centres spread over `[0, 1]`, the squared
/// widths positive) and a context gradient, each value and shape; values of both signs.
fn read_input(
    batch: usize,
    seq_q: usize,
    n: usize,
    heads: usize,
    d_head: usize,
) -> [(Vec<f32>, Vec<usize>); 4] {
    let width = heads * d_head;
    let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 500.0 - 1.0;
    let data = |shape: Vec<usize>, salt| -> (Vec<f32>, Vec<usize>) {
        let len = shape.iter().product();
        ((0..len).map(|i| value(i, salt)).collect(), shape)
    };
    let (mut params, shape) = data(vec![4 * n + 2], 3);
    for j in 0..n {
        params[2 * n + 2 + j] = j as f32 / (n - 1) as f32;
        params[3 * n + 2 + j] = 0.01 + 0.02 * j as f32;
    }
    [
        data(vec![batch, seq_q, width], 1),
        data(vec![batch, n, 2 * width], 2),
        (params, shape),
        data(vec![batch, seq_q, width], 4),
    ]
}

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]): two sequences of 21 query rows reading 12 basis functions with 2
/// heads of 8, one variance's input above softplus's threshold; elsewhere, and in a browser,
/// nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let (n, heads) = (12, 2);
        let [q, kv, (mut params, _), _] = read_input(2, 21, n, heads, 8);
        let [q, kv] = [q, kv].map(|(v, shape)| TensorData::new(v, shape));
        // A large variance bias for one side of softplus's threshold.
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

/// On wgpu, check the backward kernels against the written-out backward on the CPU once per
/// device: the forward check's sizes, a context gradient of both signs.
fn check_backward_kernel(device: &Device) {
    check_on(wgpu::BACKWARD_NAME, device, |device| {
        let (n, heads) = (12, 2);
        let [q, kv, params, grad] = read_input(2, 21, n, heads, 8);
        let [q, kv, params, grad] =
            [q, kv, params, grad].map(|(v, shape)| TensorData::new(v, shape));
        let run = |device: &Device| {
            let (dq, dkv, dparams) = <Dispatch as LtmReadTrainBackend>::ltm_read_backward(
                Tensor::<3>::from_data(q.clone(), device).into_dispatch(),
                Tensor::<3>::from_data(kv.clone(), device).into_dispatch(),
                Tensor::<1>::from_data(params.clone(), device).into_dispatch(),
                Tensor::<3>::from_data(grad.clone(), device).into_dispatch(),
                heads,
                0.35,
                1e-4,
            );
            (
                Tensor::<3>::from_dispatch(dq),
                Tensor::<3>::from_dispatch(dkv),
                Tensor::<1>::from_dispatch(dparams),
            )
        };
        let (dq, dkv, dparams) = run(device);
        let (want_dq, want_dkv, want_dparams) = run(&Device::flex());
        agrees("query gradient", &read(dq)?, &read(want_dq)?)?;
        agrees("key and value gradient", &read(dkv)?, &read(want_dkv)?)?;
        agrees("parameter gradient", &read(dparams)?, &read(want_dparams)?)
    });
}

impl LtmReadBackend for Flex {}
impl LtmReadTrainBackend for Flex {}

/// The GPU runtimes: on wgpu the WGSL kernels where they serve, Burn's operations elsewhere.
impl LtmReadTrainBackend for CubeBackend {
    fn ltm_read_context(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        params: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        min_variance: f64,
    ) -> FloatTensor<Self> {
        if wgpu::serves(&q, heads) {
            wgpu::ltm_read(q, kv, params, heads, scale, min_variance).0
        } else {
            forward_from_ops::<Self>(q, kv, params, heads, scale, min_variance).0
        }
    }

    fn ltm_read_backward(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        params: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        min_variance: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let n = kv.shape()[1];
        if wgpu::serves_backward(&q, heads, n) {
            wgpu::ltm_read_backward(q, kv, params, grad, heads, scale, min_variance)
        } else {
            backward_from_ops::<Self>(q, kv, params, grad, heads, scale, min_variance)
        }
    }
}

/// Autodiff: one node whose backward is [`LtmReadTrainBackend::ltm_read_backward`].
#[cfg(feature = "train")]
impl<B: Backend + LtmReadTrainBackend, C: CheckpointStrategy> LtmReadTrainBackend
    for Autodiff<B, C>
{
    fn ltm_read_context(
        q: FloatTensor<Self>,
        kv: FloatTensor<Self>,
        params: FloatTensor<Self>,
        heads: usize,
        scale: f64,
        min_variance: f64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ReadBackward;

        impl<B: Backend + LtmReadTrainBackend> Backward<B, 3> for ReadBackward {
            /// The queries, keys and values, parameters, heads, scale and variance floor.
            type State = (
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                usize,
                f64,
                f64,
            );

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [q_node, kv_node, params_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (q, kv, params, heads, scale, min_variance) = ops.state;
                let (dq, dkv, dparams) =
                    B::ltm_read_backward(q, kv, params, grad, heads, scale, min_variance);
                for (node, grad) in [(q_node, dq), (kv_node, dkv), (params_node, dparams)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        match ReadBackward
            .prepare::<C>([q.node(), kv.node(), params.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (q, kv, params) = (
                    q.primitive().clone(),
                    kv.primitive().clone(),
                    params.primitive().clone(),
                );
                let out = B::ltm_read_context(
                    q.clone(),
                    kv.clone(),
                    params.clone(),
                    heads,
                    scale,
                    min_variance,
                );
                prep.finish((q, kv, params, heads, scale, min_variance), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::ltm_read_context(
                q.into_primitive(),
                kv.into_primitive(),
                params.into_primitive(),
                heads,
                scale,
                min_variance,
            )),
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// The read's context from Burn's tensor operations, as `LongTermMemory::read` computes it
    /// (every input a leaf, the basis's centres and widths included), for autodiff.
    fn context_by_tensor_ops(
        q: Tensor<3>,
        kv: Tensor<3>,
        params: Tensor<1>,
        heads: usize,
        scale: f64,
    ) -> Tensor<3> {
        let [batch, seq_q, width] = q.dims();
        let n = kv.dims()[1];
        let d = width / heads;
        let split = |x: Tensor<3>, rows: usize| x.reshape([batch, rows, heads, d]).swap_dims(1, 2);
        let qh = split(q, seq_q);
        let k = split(kv.clone().slice(s![.., .., 0..width]), n);
        let v = split(kv.slice(s![.., .., width..2 * width]), n);
        let part = |from: usize, len: usize| params.clone().slice(s![from..from + len]);
        let column = |from| part(from, n).reshape([1, 1, n, 1]);
        let one = |from| part(from, 1).reshape([1, 1, 1, 1]);
        let row = |from| part(from, n).reshape([1, 1, 1, n]);
        let scores = qh.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
        let mu = burn::tensor::activation::sigmoid(scores.clone().matmul(column(0)) + one(n));
        let sigma_in = scores.matmul(column(n + 1)) + one(2 * n + 1);
        let variance = burn::tensor::activation::softplus(sigma_in, 1.0).clamp_min(1e-4);
        let var = variance + row(3 * n + 2);
        let x = mu - row(2 * n + 2);
        let r = (x.clone() * x / var.clone().mul_scalar(-2.0)).exp()
            / var.mul_scalar(2.0 * std::f64::consts::PI).sqrt();
        r.matmul(v).swap_dims(1, 2).reshape([batch, seq_q, width])
    }

    /// The written-out backward (`backward_from_ops`, the kernels' formulas and their check's
    /// reference) gives Burn's autodiff gradients of the read, on the CPU; the basis's centres
    /// and widths get none.
    #[test]
    fn the_written_out_backward_is_the_autodiff_gradient() {
        let (n, heads) = (6, 2);
        let [q, kv, params, grad] =
            read_input(2, 5, n, heads, 3).map(|(values, shape)| TensorData::new(values, shape));

        let ad = Device::flex().autodiff();
        let leaf3 = |d: &TensorData| Tensor::<3>::from_data(d.clone(), &ad).require_grad();
        let (q_ad, kv_ad) = (leaf3(&q), leaf3(&kv));
        let p_ad = Tensor::<1>::from_data(params.clone(), &ad).require_grad();
        let context = context_by_tensor_ops(q_ad.clone(), kv_ad.clone(), p_ad.clone(), heads, 0.35);
        let grads = (context * Tensor::<3>::from_data(grad.clone(), &ad))
            .sum()
            .backward();
        let want = |t: Tensor<3>| {
            t.grad(&grads)
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let (want_q, want_kv) = (want(q_ad), want(kv_ad));
        let want_p = p_ad
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();

        let cpu = Device::flex();
        let (dq, dkv, dp) = <Dispatch as LtmReadTrainBackend>::ltm_read_backward(
            Tensor::<3>::from_data(q, &cpu).into_dispatch(),
            Tensor::<3>::from_data(kv, &cpu).into_dispatch(),
            Tensor::<1>::from_data(params, &cpu).into_dispatch(),
            Tensor::<3>::from_data(grad, &cpu).into_dispatch(),
            heads,
            0.35,
            1e-4,
        );
        let got3 = |t| {
            Tensor::<3>::from_dispatch(t)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let got_p = Tensor::<1>::from_dispatch(dp)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let close = crate::ops::assert_close;
        close("queries", &got3(dq), &want_q);
        close("keys and values", &got3(dkv), &want_kv);
        close(
            "mean and variance weights",
            &got_p[..2 * n + 2],
            &want_p[..2 * n + 2],
        );
        assert!(
            got_p[2 * n + 2..].iter().all(|&v| v == 0.0),
            "the basis got a gradient"
        );
    }
}
