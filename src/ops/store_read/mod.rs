//! ARMT's read of one layer's associative store as one operation, at inference: the DPFP-3
//! features of each row's projected query made unit length, then what the store returns for
//! them (see [`crate::nn::AssociativeMemory::read`], whose formulas these are): `A·φ` under
//! the delta rule, `A·φ / (z·φ + ε)` under the paper's normalised one.
//!
//! On wgpu the operation is one dispatch of `shaders/store_read.wgsl` ([`wgpu`]) instead of
//! nine kernels per layer on lavapipe (DPFP's two picking products, their rectified product, the
//! features' length and the division by it, the product with the store, the normaliser's
//! slice and division). Elsewhere it runs as Burn's operations ([`forward_from_ops`]), which
//! is also the reference the kernel is checked against.
//!
//! In training on wgpu the read is one autodiff operation ([`store_read_train`]): the same
//! forward kernel, and a backward of two dispatches (`shaders/store_read_backward.wgsl` for
//! the keys' gradient, `shaders/store_read_store_backward.wgsl` for the store's) instead of
//! Burn's operations and their gradients. Its written-out chain rule ([`backward_from_ops`])
//! is the backward elsewhere and the kernels' reference; a test checks it against Burn's
//! autodiff.

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

use crate::nn::associative::{EPS, NU, pick_values};
use crate::ops::wgsl::{agrees, check_on, on_wgpu, read};

/// The store's read as a backend operation.
#[backend_extension(Flex, Cube, Fusion)]
pub trait StoreReadBackend: Backend {
    /// What the store `[batch, 2ν·K, d + 1]` (`A`, then `z` as the last column) returns for
    /// the DPFP features of the projected queries `keys` `[batch, n, K]`: `[batch, n, d]`,
    /// divided by the normaliser when `normalised`.
    /// With `add`, `residual` `[batch, n, d]` is added to it (the residual stream the read
    /// joins); without, `residual` is not read.
    #[fusion(meta = read_spec)]
    fn store_read(
        keys: FloatTensor<Self>,
        store: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        add: bool,
        normalised: bool,
    ) -> FloatTensor<Self> {
        forward_from_ops::<Self>(keys, store, residual, add, normalised)
    }
}

/// The store's read in training, as one autodiff operation whose backward is two dispatches on
/// wgpu.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait StoreReadTrainBackend: Backend {
    /// [`StoreReadBackend::store_read`], differentiable.
    #[fusion(meta = read_spec)]
    fn store_read_train(
        keys: FloatTensor<Self>,
        store: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        add: bool,
        normalised: bool,
    ) -> FloatTensor<Self> {
        forward_from_ops::<Self>(keys, store, residual, add, normalised)
    }

    /// The gradients of `keys` and `store` from the read's gradient `grad` `[batch, n, d]`.
    #[fusion(meta = gradient_specs)]
    fn store_read_backward(
        keys: FloatTensor<Self>,
        store: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        normalised: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        backward_from_ops::<Self>(keys, store, grad, normalised)
    }
}

/// The gradients' shapes and type, for the fusion stream: the inputs'.
fn gradient_specs(
    keys: &TensorSpec,
    store: &TensorSpec,
    _grad: &TensorSpec,
    _normalised: &bool,
) -> (TensorSpec, TensorSpec) {
    (keys.clone(), store.clone())
}

/// The read's shape and type, for the fusion stream.
fn read_spec(
    keys: &TensorSpec,
    store: &TensorSpec,
    _residual: &TensorSpec,
    _add: &bool,
    _normalised: &bool,
) -> TensorSpec {
    let [batch, n, _] = keys.shape.dims::<3>();
    let d = store.shape[2] - 1;
    TensorSpec::new(Shape::new([batch, n, d]), keys.dtype)
}

/// Whether [`store_read`] serves a read of `rows` on their device: inference (no autodiff)
/// on wgpu. The store takes its general path elsewhere.
pub(crate) fn serves(rows: &Tensor<3>) -> bool {
    !rows.is_autodiff() && on_wgpu(&rows.device())
}

/// Whether the module should read through [`store_read_train`] on `rows`' device: training
/// on wgpu, after the forward and backward kernels' checks there (a kernel that failed its
/// check leaves the operation to Burn's operations, the same numbers with more kernels). The
/// CPU keeps the module's own path.
pub(crate) fn serves_training(rows: &Tensor<3>) -> bool {
    let device = rows.device();
    if !rows.is_autodiff() || !on_wgpu(&device) {
        return false;
    }
    check_kernel(&device);
    check_backward_kernel(&device);
    true
}

/// [`store_read`] as one autodiff operation (training; see [`StoreReadTrainBackend`]).
///
/// # Shapes
/// as [`store_read`]
pub fn store_read_train(
    keys: Tensor<3>,
    store: Tensor<3>,
    residual: Option<Tensor<3>>,
    normalised: bool,
) -> Tensor<3> {
    check_shapes(&keys, &store);
    let (residual, add) = residual_or(residual, &keys);
    Tensor::from_dispatch(<Dispatch as StoreReadTrainBackend>::store_read_train(
        keys.into_dispatch(),
        store.into_dispatch(),
        residual.into_dispatch(),
        add,
        normalised,
    ))
}

/// The residual to add and whether to add it; without one, `keys` stand in, detached (never
/// read, and no parent of the autodiff node).
fn residual_or(residual: Option<Tensor<3>>, keys: &Tensor<3>) -> (Tensor<3>, bool) {
    match residual {
        Some(r) => (r, true),
        None => (keys.clone().detach(), false),
    }
}

/// Panics unless `keys` `[batch, n, K]` read `store` `[batch, 2ν·K, d + 1]`.
fn check_shapes(keys: &Tensor<3>, store: &Tensor<3>) {
    let [batch, _, k] = keys.dims();
    let [store_batch, features, _] = store.dims();
    assert!(
        store_batch == batch && features == 2 * NU * k,
        "store_read: keys {:?} do not read a store {:?}",
        keys.dims(),
        store.dims()
    );
}

/// What `store` returns for the DPFP-ν features (unit length) of the projected queries `keys`:
/// `A·φ`, divided by `z·φ + ε` when `normalised`; with a `residual`, added to it in the same
/// kernel (the residual stream the read joins).
///
/// # Shapes
/// - keys: `[batch, n, K]`
/// - store: `[batch, 2ν·K, d + 1]`
/// - residual and output: `[batch, n, d]`
pub fn store_read(
    keys: Tensor<3>,
    store: Tensor<3>,
    residual: Option<Tensor<3>>,
    normalised: bool,
) -> Tensor<3> {
    check_shapes(&keys, &store);
    check_kernel(&keys.device());
    store_read_unchecked(keys, store, residual, normalised)
}

/// [`StoreReadBackend::store_read`] from the backend's tensor operations: DPFP as two
/// picking products ([`crate::nn::associative::dpfp`]), then the product with the store.
fn forward_from_ops<B: Backend>(
    keys: FloatTensor<B>,
    store: FloatTensor<B>,
    residual: FloatTensor<B>,
    add: bool,
    normalised: bool,
) -> FloatTensor<B> {
    let [batch, n, _] = keys.shape().dims::<3>();
    let d = store.shape()[2] - 1;
    let both = B::float_matmul(features_from_ops::<B>(keys), store);
    let values = columns::<B>(both.clone(), 0, d);
    debug_assert_eq!(values.shape().dims::<3>(), [batch, n, d]);
    let read = match normalised {
        true => {
            let norm = columns::<B>(both, d, d + 1);
            B::float_div(values, B::float_add_scalar(norm, EPS.into()))
        }
        false => values,
    };
    match add {
        true => B::float_add(residual, read),
        false => read,
    }
}

/// Columns `from..to` of the last axis of `x` `[batch, n, width]`: a store's `A` or `z`, or
/// the same parts of a lookup.
pub(crate) fn columns<B: Backend>(x: FloatTensor<B>, from: usize, to: usize) -> FloatTensor<B> {
    let last = Slice::new(from as isize, Some(to as isize), 1);
    B::float_slice(x, &[Slice::full(), Slice::full(), last])
}

/// The DPFP-ν features of `keys` `[batch, n, K]`, unit length: `[batch, n, 2ν·K]`, as
/// [`crate::nn::associative::dpfp`] computes them (two picking products, rectified, multiplied).
pub(crate) fn features_from_ops<B: Backend>(keys: FloatTensor<B>) -> FloatTensor<B> {
    let [batch, n, k] = keys.shape().dims::<3>();
    let dpfp = Dpfp::<B>::of(keys);
    B::float_reshape(dpfp.hat, Shape::new([batch, n, 2 * NU * k]))
}

/// DPFP's steps for keys folded into rows `[batch · n, K]`: the picking matrices `[K, 2ν·K]`,
/// the two rectified picks, the features' lengths `[batch · n, 1]` and the unit features.
struct Dpfp<B: Backend> {
    left: FloatTensor<B>,
    right: FloatTensor<B>,
    r_left: FloatTensor<B>,
    r_right: FloatTensor<B>,
    size: FloatTensor<B>,
    hat: FloatTensor<B>,
}

impl<B: Backend> Dpfp<B> {
    /// DPFP of `keys` `[batch, n, K]`, step by step.
    fn of(keys: FloatTensor<B>) -> Self {
        let [batch, n, k] = keys.shape().dims::<3>();
        let device = keys.device();
        let [left, right] = [0, 1].map(|side| {
            B::float_from_data(
                TensorData::new(pick_values(k, side), [k, 2 * NU * k]),
                &device,
            )
        });
        let x = B::float_reshape(keys, Shape::new([batch * n, k]));
        let r_left = B::relu(B::float_matmul(x.clone(), left.clone()));
        let r_right = B::relu(B::float_matmul(x, right.clone()));
        let phi = B::float_mul(r_left.clone(), r_right.clone());
        let squares = B::float_sum_dim(B::float_mul(phi.clone(), phi.clone()), 1);
        let size = B::float_sqrt(B::float_add_scalar(squares, 1e-12.into()));
        let hat = B::float_div(phi, size.clone());
        Dpfp {
            left,
            right,
            r_left,
            r_right,
            size,
            hat,
        }
    }
}

/// [`StoreReadTrainBackend::store_read_backward`] from the backend's tensor operations: the
/// forward's quantities again, then the chain rule written out (the kernels' formulas; see
/// `shaders/store_read_backward.wgsl`).
fn backward_from_ops<B: Backend>(
    keys: FloatTensor<B>,
    store: FloatTensor<B>,
    grad: FloatTensor<B>,
    normalised: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let [batch, n, _] = keys.shape().dims::<3>();
    let d = store.shape()[2] - 1;
    let hat = features_from_ops::<B>(keys.clone());
    // The lookup b = φ̂·S and its gradient db `[batch, n, d + 1]`.
    let dboth = match normalised {
        true => {
            let both = B::float_matmul(hat.clone(), store.clone());
            let values = columns::<B>(both.clone(), 0, d);
            let inv = B::float_recip(B::float_add_scalar(
                columns::<B>(both, d, d + 1),
                EPS.into(),
            ));
            let along = B::float_sum_dim(B::float_mul(grad.clone(), values), 2);
            let dnorm = B::float_neg(B::float_mul(B::float_mul(along, inv.clone()), inv.clone()));
            B::float_cat(vec![B::float_mul(grad, inv), dnorm], 2)
        }
        false => {
            let device = grad.device();
            let zeros = B::float_zeros(Shape::new([batch, n, 1]), &device, grad.dtype().into());
            B::float_cat(vec![grad, zeros], 2)
        }
    };
    let dstore = B::float_matmul(B::float_swap_dims(hat, 1, 2), dboth.clone());
    let dhat = B::float_matmul(dboth, B::float_swap_dims(store, 1, 2));
    (features_backward::<B>(keys, dhat), dstore)
}

/// The gradient of `keys` `[batch, n, K]` from the gradient `dhat` `[batch, n, 2ν·K]` of their
/// unit DPFP features ([`features_from_ops`]): back through the unit length,
/// `dφ = (dφ̂ - φ̂ (φ̂·dφ̂)) / |φ|`, then each factor of `relu(x·L) * relu(x·R)` gets `dφ`
/// times the other where its rectifier passes.
pub(crate) fn features_backward<B: Backend>(
    keys: FloatTensor<B>,
    dhat: FloatTensor<B>,
) -> FloatTensor<B> {
    let [batch, n, k] = keys.shape().dims::<3>();
    let features = 2 * NU * k;
    let Dpfp {
        left,
        right,
        r_left,
        r_right,
        size,
        hat,
    } = Dpfp::<B>::of(keys);
    let dhat = B::float_reshape(dhat, Shape::new([batch * n, features]));
    let along = B::float_sum_dim(B::float_mul(hat.clone(), dhat.clone()), 1);
    let dphi = B::float_div(B::float_sub(dhat, B::float_mul(hat, along)), size);
    // A rectified value's sign: 1 where the rectifier passes, 0 at and below zero.
    let d_left = B::float_mul(
        B::float_mul(dphi.clone(), r_right.clone()),
        B::float_sign(r_left.clone()),
    );
    let d_right = B::float_mul(B::float_mul(dphi, r_left), B::float_sign(r_right));
    let dx = B::float_add(
        B::float_matmul(d_left, B::float_transpose(left)),
        B::float_matmul(d_right, B::float_transpose(right)),
    );
    B::float_reshape(dx, Shape::new([batch, n, k]))
}

/// A read's check input for `batch` sequences of `n` rows with keys of width `k` over values
/// of width `d`: the keys (every eleventh entry zero), the store (its normaliser column away
/// from zero, as a written store's is) and a read gradient, each as data; values of both signs.
fn check_input(batch: usize, n: usize, k: usize, d: usize) -> [TensorData; 3] {
    let features = 2 * NU * k;
    let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 500.0 - 1.0;
    let keys: Vec<f32> = (0..batch * n * k)
        .map(|i| if i % 11 == 3 { 0.0 } else { value(i, 1) })
        .collect();
    let store: Vec<f32> = (0..batch * features * (d + 1))
        .map(|i| match i % (d + 1) == d {
            true => 0.5 + value(i, 2).abs(),
            false => value(i, 2),
        })
        .collect();
    let grad: Vec<f32> = (0..batch * n * d).map(|i| value(i, 3)).collect();
    [
        TensorData::new(keys, [batch, n, k]),
        TensorData::new(store, [batch, features, d + 1]),
        TensorData::new(grad, [batch, n, d]),
    ]
}

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]), under both rules: two sequences of 19 rows (the dispatch's rows
/// are not a multiple of anything) with keys of width 5, some of them all negative or zero,
/// over a store of 30 features and values of width 70 (more columns than a workgroup has
/// invocations); elsewhere, and in a browser, nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        // The read gradient's values serve as a residual.
        let [keys, store, residual] = check_input(2, 19, 5, 70);
        for (normalised, add) in [(false, false), (true, false), (false, true), (true, true)] {
            let run = |device: &Device| {
                store_read_unchecked(
                    Tensor::from_data(keys.clone(), device),
                    Tensor::from_data(store.clone(), device),
                    add.then(|| Tensor::from_data(residual.clone(), device)),
                    normalised,
                )
            };
            agrees("read", &read(run(device))?, &read(run(&Device::flex()))?)?;
        }
        Ok(())
    });
}

/// On wgpu, check the backward kernels against the written-out backward on the CPU once per
/// device, under both rules, with the forward check's sizes and a read gradient of both signs.
fn check_backward_kernel(device: &Device) {
    check_on(wgpu::BACKWARD_NAME, device, |device| {
        let [keys, store, grad] = check_input(2, 19, 5, 70);
        for normalised in [false, true] {
            let run = |device: &Device| {
                let (dkeys, dstore) = <Dispatch as StoreReadTrainBackend>::store_read_backward(
                    Tensor::<3>::from_data(keys.clone(), device).into_dispatch(),
                    Tensor::<3>::from_data(store.clone(), device).into_dispatch(),
                    Tensor::<3>::from_data(grad.clone(), device).into_dispatch(),
                    normalised,
                );
                (
                    Tensor::<3>::from_dispatch(dkeys),
                    Tensor::<3>::from_dispatch(dstore),
                )
            };
            let (dkeys, dstore) = run(device);
            let (want_dkeys, want_dstore) = run(&Device::flex());
            agrees("key gradient", &read(dkeys)?, &read(want_dkeys)?)?;
            agrees("store gradient", &read(dstore)?, &read(want_dstore)?)?;
        }
        Ok(())
    });
}

/// [`store_read`] without its shape checks and the kernel's check (which calls it).
fn store_read_unchecked(
    keys: Tensor<3>,
    store: Tensor<3>,
    residual: Option<Tensor<3>>,
    normalised: bool,
) -> Tensor<3> {
    let (residual, add) = residual_or(residual, &keys);
    Tensor::from_dispatch(<Dispatch as StoreReadBackend>::store_read(
        keys.into_dispatch(),
        store.into_dispatch(),
        residual.into_dispatch(),
        add,
        normalised,
    ))
}

impl StoreReadBackend for Flex {}
impl StoreReadTrainBackend for Flex {}

/// The GPU runtimes: on wgpu the WGSL kernels where they serve, Burn's operations elsewhere.
impl StoreReadTrainBackend for CubeBackend {
    fn store_read_train(
        keys: FloatTensor<Self>,
        store: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        add: bool,
        normalised: bool,
    ) -> FloatTensor<Self> {
        <Self as StoreReadBackend>::store_read(keys, store, residual, add, normalised)
    }

    fn store_read_backward(
        keys: FloatTensor<Self>,
        store: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        normalised: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if wgpu::serves_backward(&keys, &store) {
            wgpu::store_read_backward(keys, store, grad, normalised)
        } else {
            backward_from_ops::<Self>(keys, store, grad, normalised)
        }
    }
}

/// Autodiff: one node whose backward is [`StoreReadTrainBackend::store_read_backward`].
#[cfg(feature = "train")]
impl<B: Backend + StoreReadTrainBackend, C: CheckpointStrategy> StoreReadTrainBackend
    for Autodiff<B, C>
{
    fn store_read_train(
        keys: FloatTensor<Self>,
        store: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        add: bool,
        normalised: bool,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct ReadBackward;

        impl<B: Backend + StoreReadTrainBackend> Backward<B, 3> for ReadBackward {
            /// The keys, the store, whether the residual was added, and the rule.
            type State = (FloatTensor<B>, FloatTensor<B>, bool, bool);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [keys_node, store_node, residual_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (keys, store, add, normalised) = ops.state;
                // The residual's gradient is the read's, passed through (without `add` there
                // is no residual, only a detached stand-in).
                if let (true, Some(node)) = (add, residual_node) {
                    grads.register::<B>(node.id, grad.clone());
                }
                let (dkeys, dstore) = B::store_read_backward(keys, store, grad, normalised);
                for (node, grad) in [(keys_node, dkeys), (store_node, dstore)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let parents = [keys.node(), store.node(), residual.node()];
        match ReadBackward
            .prepare::<C>(parents)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (keys, store) = (keys.primitive().clone(), store.primitive().clone());
                let out = B::store_read_train(
                    keys.clone(),
                    store.clone(),
                    residual.into_primitive(),
                    add,
                    normalised,
                );
                prep.finish((keys, store, add, normalised), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::store_read_train(
                keys.into_primitive(),
                store.into_primitive(),
                residual.into_primitive(),
                add,
                normalised,
            )),
        }
    }
}

/// The GPU runtimes: on wgpu the WGSL kernel where it serves, Burn's operations elsewhere.
impl StoreReadBackend for CubeBackend {
    fn store_read(
        keys: FloatTensor<Self>,
        store: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        add: bool,
        normalised: bool,
    ) -> FloatTensor<Self> {
        if wgpu::serves(&keys, &store) {
            wgpu::store_read(keys, store, add.then_some(residual), normalised)
        } else {
            forward_from_ops::<Self>(keys, store, residual, add, normalised)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The written-out backward (`backward_from_ops`, the kernels' formulas and their check's
    /// reference) gives Burn's autodiff gradients of the module's own read on the CPU, under
    /// both rules, keys of several widths (some entries zero, where no rectifier passes).
    #[test]
    fn the_written_out_backward_is_the_autodiff_gradient() {
        use crate::nn::Constants;
        use crate::nn::associative::dpfp;
        for (batch, n, k, d) in [(1, 1, 1, 2), (2, 5, 3, 4), (1, 7, 4, 9)] {
            let [keys, store, grad] = check_input(batch, n, k, d);
            for normalised in [false, true] {
                let ad = Device::flex().autodiff();
                let leaf =
                    |data: &TensorData| Tensor::<3>::from_data(data.clone(), &ad).require_grad();
                let (keys_ad, store_ad) = (leaf(&keys), leaf(&store));
                let phi = dpfp(keys_ad.clone(), &Constants::default());
                let both = phi.matmul(store_ad.clone());
                let values = both.clone().slice(s![.., .., 0..d]);
                let read = match normalised {
                    true => values / (both.slice(s![.., .., d..d + 1]) + EPS),
                    false => values,
                };
                let grads = (read * Tensor::<3>::from_data(grad.clone(), &ad))
                    .sum()
                    .backward();
                let want = |t: Tensor<3>| -> Vec<f32> {
                    t.grad(&grads)
                        .unwrap()
                        .into_data()
                        .try_to_vec::<f32>()
                        .unwrap()
                };
                let cpu = Device::flex();
                let (dkeys, dstore) = <Dispatch as StoreReadTrainBackend>::store_read_backward(
                    Tensor::<3>::from_data(keys.clone(), &cpu).into_dispatch(),
                    Tensor::<3>::from_data(store.clone(), &cpu).into_dispatch(),
                    Tensor::<3>::from_data(grad.clone(), &cpu).into_dispatch(),
                    normalised,
                );
                let got = |t| -> Vec<f32> {
                    Tensor::<3>::from_dispatch(t)
                        .into_data()
                        .try_to_vec::<f32>()
                        .unwrap()
                };
                let what = format!("[{batch}, {n}, {k}] over d {d}, normalised {normalised}");
                for (name, got, want) in [
                    ("keys", got(dkeys), want(keys_ad)),
                    ("store", got(dstore), want(store_ad)),
                ] {
                    crate::ops::assert_close(&format!("{what}: the {name}' gradient"), &got, &want);
                }
            }
        }
    }
}
