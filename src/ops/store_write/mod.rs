//! ARMT's write into one layer's associative store as one operation, at inference: from the
//! memory rows' projections side by side, as one product gives them (keys before DPFP,
//! values, the strengths before their sigmoid), the keys' DPFP features, how much each shares
//! with the others written alongside it, what the store returns for them now, and the store
//! after the write (see [`crate::nn::AssociativeMemory::write`], whose formulas these are),
//! under the delta rule or the paper's normalised one.
//!
//! On wgpu the operation is one dispatch of `shaders/store_write.wgsl` ([`wgpu`]) instead of
//! seventeen kernels per layer on lavapipe (DPFP's products, the overlap's product and sum, the
//! lookup, the update's element-wise chain, the products into the store, the store's columns
//! taken apart and joined). Elsewhere it runs as Burn's operations ([`forward_from_ops`]),
//! which is also the reference the kernel is checked against.
//!
//! In training on wgpu the write is one autodiff operation ([`store_write_train`]): the same
//! forward kernel, and a backward of one dispatch (`shaders/store_write_backward.wgsl`, one
//! workgroup per sequence) instead of Burn's operations and their gradients. Its chain rule
//! written out in Burn's operations ([`backward_from_ops`]) is the backward elsewhere and the
//! kernel's reference; a test checks it against Burn's autodiff of the module's write.

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

use crate::nn::associative::{EPS, NU};
use crate::ops::store_read::{columns, features_backward, features_from_ops};
use crate::ops::wgsl::{agrees, check_on, on_wgpu, read};

/// The store's write as a backend operation.
#[backend_extension(Flex, Cube, Fusion)]
pub trait StoreWriteBackend: Backend {
    /// The store `[batch, 2ν·K, d + 1]` (`A`, then `z` as the last column) after writing the
    /// memory rows whose projections are `projections` `[batch, M, K + d + 1]`: side by side
    /// the keys (before DPFP), the values and the strengths (before the sigmoid), by the
    /// paper's normalised rule when `normalised`, else the delta rule.
    #[fusion(dtype = store, shape = store)]
    fn store_write(
        projections: FloatTensor<Self>,
        store: FloatTensor<Self>,
        normalised: bool,
    ) -> FloatTensor<Self> {
        forward_from_ops::<Self>(projections, store, normalised)
    }
}

/// The store's write in training, as one autodiff operation whose backward is one dispatch on
/// wgpu.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait StoreWriteTrainBackend: Backend {
    /// [`StoreWriteBackend::store_write`], differentiable (the paper's rule's normaliser
    /// increment carries no gradient, as in the module).
    #[fusion(dtype = store, shape = store)]
    fn store_write_train(
        projections: FloatTensor<Self>,
        store: FloatTensor<Self>,
        normalised: bool,
    ) -> FloatTensor<Self> {
        forward_from_ops::<Self>(projections, store, normalised)
    }

    /// The gradients of `projections` and `store` from the new store's gradient `grad`
    /// `[batch, 2ν·K, d + 1]`.
    #[fusion(meta = gradient_specs)]
    fn store_write_backward(
        projections: FloatTensor<Self>,
        store: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        normalised: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        backward_from_ops::<Self>(projections, store, grad, normalised)
    }
}

/// The gradients' shapes and type, for the fusion stream: the inputs'.
fn gradient_specs(
    projections: &TensorSpec,
    store: &TensorSpec,
    _grad: &TensorSpec,
    _normalised: &bool,
) -> (TensorSpec, TensorSpec) {
    (projections.clone(), store.clone())
}

/// Whether the module should write through [`store_write_train`] a write of `rows`
/// `[batch, M, d]` with keys of `key_dim`: training on wgpu, with what the kernels stage
/// fitting their workgroup memory, after the forward and backward kernels' checks there (a
/// kernel that failed its check leaves the operation to Burn's operations, the same numbers
/// with more kernels). The CPU keeps the module's own path.
pub(crate) fn serves_training(rows: &Tensor<3>, key_dim: usize) -> bool {
    let [_, m, d] = rows.dims();
    let device = rows.device();
    if !rows.is_autodiff() || !on_wgpu(&device) || !wgpu::fits(m, key_dim, d) {
        return false;
    }
    check_kernel(&device);
    check_backward_kernel(&device);
    true
}

/// [`store_write`] as one autodiff operation (training; see [`StoreWriteTrainBackend`]).
///
/// # Shapes
/// as [`store_write`]
pub fn store_write_train(projections: Tensor<3>, store: Tensor<3>, normalised: bool) -> Tensor<3> {
    check_shapes(&projections, &store);
    Tensor::from_dispatch(<Dispatch as StoreWriteTrainBackend>::store_write_train(
        projections.into_dispatch(),
        store.into_dispatch(),
        normalised,
    ))
}

/// Panics unless `projections` (keys, values and strengths side by side) write `store` (see
/// [`store_write`]).
fn check_shapes(projections: &Tensor<3>, store: &Tensor<3>) {
    let [batch, _, p] = projections.dims();
    let [store_batch, features, width] = store.dims();
    assert!(
        store_batch == batch && p > width && features == 2 * NU * (p - width),
        "store_write: projections {:?} do not write a store {:?}",
        projections.dims(),
        store.dims()
    );
}

/// Whether [`store_write`] serves a write of `rows` `[batch, M, d]` with keys of `key_dim` on
/// their device: inference (no autodiff) on wgpu, with what the kernel stages fitting its
/// workgroup memory. The store takes its general path elsewhere.
pub(crate) fn serves(rows: &Tensor<3>, key_dim: usize) -> bool {
    let [_, m, d] = rows.dims();
    !rows.is_autodiff() && on_wgpu(&rows.device()) && wgpu::fits(m, key_dim, d)
}

/// The store after writing memory rows whose key, value and strength projections are side by
/// side in `projections` (see [`crate::nn::AssociativeMemory::write`]).
///
/// # Shapes
/// - projections: `[batch, M, K + d + 1]` (keys before DPFP, values, strengths before their
///   sigmoid)
/// - store and output: `[batch, 2ν·K, d + 1]`
pub fn store_write(projections: Tensor<3>, store: Tensor<3>, normalised: bool) -> Tensor<3> {
    check_shapes(&projections, &store);
    check_kernel(&projections.device());
    store_write_unchecked(projections, store, normalised)
}

/// The keys `[batch, M, K]`, values `[batch, M, d]` and strengths `[batch, M, 1]` side by side
/// in `projections`, as views.
fn split<B: Backend>(
    projections: FloatTensor<B>,
    d: usize,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let k = projections.shape()[2] - d - 1;
    let part = |from, to| columns::<B>(projections.clone(), from, to);
    (part(0, k), part(k, k + d), part(k + d, k + d + 1))
}

/// [`StoreWriteBackend::store_write`] from the backend's tensor operations, step by step as
/// [`crate::nn::AssociativeMemory::write`] takes them.
fn forward_from_ops<B: Backend>(
    projections: FloatTensor<B>,
    store: FloatTensor<B>,
    normalised: bool,
) -> FloatTensor<B> {
    let d = store.shape()[2] - 1;
    let (keys, values, strengths) = split::<B>(projections, d);
    let columns = columns::<B>;
    let k = features_from_ops::<B>(keys);
    let kt = B::float_swap_dims(k.clone(), 1, 2);
    let beta = B::sigmoid(strengths);
    let shared = B::float_sum_dim(B::float_matmul(k.clone(), kt.clone()), 2);
    let (a, z) = (
        columns(store.clone(), 0, d),
        columns(store.clone(), d, d + 1),
    );
    if !normalised {
        let old = B::float_matmul(k, a.clone());
        let update = B::float_div(B::float_mul(beta, B::float_sub(values, old)), shared);
        return B::float_cat(vec![B::float_add(a, B::float_matmul(kt, update)), z], 2);
    }
    let both = B::float_matmul(k.clone(), store);
    let (stored, norm) = (columns(both.clone(), 0, d), columns(both, d, d + 1));
    let old = B::float_div(
        stored.clone(),
        B::float_add_scalar(norm.clone(), EPS.into()),
    );
    let target = B::float_add(old.clone(), B::float_mul(beta, B::float_sub(values, old)));
    let unfilled = B::float_clamp(
        B::float_add_scalar(B::float_neg(norm), 1.0.into()),
        0.0.into(),
        1.0.into(),
    );
    let gamma = B::float_div(unfilled, shared.clone());
    let z = B::float_add(z, B::float_matmul(kt.clone(), gamma));
    let grown = B::float_matmul(k, z.clone());
    let update = B::float_div(B::float_sub(B::float_mul(target, grown), stored), shared);
    B::float_cat(vec![B::float_add(a, B::float_matmul(kt, update)), z], 2)
}

/// [`StoreWriteTrainBackend::store_write_backward`] from the backend's tensor operations: the
/// forward's quantities again, then the chain rule written out (the kernel's formulas; see
/// `shaders/store_write_backward.wgsl`). With `G = [G_A | G_z]` the new store's gradient and
/// `du = k·G_A` the updates' gradient, every key gets `G_A·update`, `S·db` (the lookup's
/// gradient through the store), its share of the overlaps' gradient and, under the paper's
/// rule, the normaliser's terms; then back through DPFP ([`features_backward`]).
fn backward_from_ops<B: Backend>(
    projections: FloatTensor<B>,
    store: FloatTensor<B>,
    grad: FloatTensor<B>,
    normalised: bool,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let d = store.shape()[2] - 1;
    let (keys, values, strengths) = split::<B>(projections, d);
    let columns = columns::<B>;
    let t = |x: FloatTensor<B>| B::float_swap_dims(x, 1, 2);
    let mm = B::float_matmul;
    let (mul, div, add, sub) = (B::float_mul, B::float_div, B::float_add, B::float_sub);
    let sum = |x: FloatTensor<B>| B::float_sum_dim(x, 2);
    let k = features_from_ops::<B>(keys.clone());
    let beta = B::sigmoid(strengths);
    let shared = sum(mm(k.clone(), t(k.clone())));
    let (a, z) = (
        columns(store.clone(), 0, d),
        columns(store.clone(), d, d + 1),
    );
    let (ga, gz) = (columns(grad.clone(), 0, d), columns(grad, d, d + 1));
    // du / shared: every update is divided by its row's overlap.
    let per = div(mm(k.clone(), ga.clone()), shared.clone());
    let (dvalues, dbeta, dk, dshared, da, dz) = if normalised {
        let both = mm(k.clone(), store.clone());
        let (stored, norm) = (columns(both.clone(), 0, d), columns(both, d, d + 1));
        let near = B::float_add_scalar(norm.clone(), EPS.into());
        let old = div(stored.clone(), near.clone());
        let away = sub(values, old.clone());
        let target = add(old.clone(), mul(beta.clone(), away.clone()));
        let unfilled = B::float_clamp(
            B::float_add_scalar(B::float_neg(norm), 1.0.into()),
            0.0.into(),
            1.0.into(),
        );
        let gamma = div(unfilled, shared.clone());
        let grown_z = add(z, mm(t(k.clone()), gamma.clone()));
        let grown = mm(k.clone(), grown_z.clone());
        let update = div(
            sub(mul(target.clone(), grown.clone()), stored),
            shared.clone(),
        );
        let dtarget = mul(per.clone(), grown);
        let dgrown = sum(mul(per.clone(), target));
        let dshared = B::float_neg(sum(mul(per.clone(), update.clone())));
        let dvalues = mul(dtarget.clone(), beta.clone());
        let dbeta = sum(mul(dtarget.clone(), away));
        let dold = sub(dtarget.clone(), mul(dtarget, beta.clone()));
        // The update subtracts what is stored (b's values): its gradient reaches b directly.
        let dstored = sub(div(dold.clone(), near.clone()), per);
        let dnorm = B::float_neg(div(sum(mul(dold, old)), near));
        let dgrown_z = add(gz, mm(t(k.clone()), dgrown.clone()));
        let dboth = B::float_cat(vec![dstored.clone(), dnorm.clone()], 2);
        let dk = add(
            add(mm(update, t(ga.clone())), mm(dboth, t(store))),
            add(mul(dgrown, t(grown_z)), mul(gamma, t(dgrown_z.clone()))),
        );
        let da = add(ga, mm(t(k.clone()), dstored));
        let dz = add(dgrown_z, mm(t(k.clone()), dnorm));
        (dvalues, dbeta, dk, dshared, da, dz)
    } else {
        let away = sub(values, mm(k.clone(), a.clone()));
        let update = div(mul(beta.clone(), away.clone()), shared.clone());
        let dvalues = mul(per.clone(), beta.clone());
        let dbeta = sum(mul(per.clone(), away));
        let dshared = B::float_neg(sum(mul(per, update.clone())));
        let dold = B::float_neg(dvalues.clone());
        let dk = add(mm(update, t(ga.clone())), mm(dold.clone(), t(a)));
        let da = add(ga, mm(t(k.clone()), dold));
        (dvalues, dbeta, dk, dshared, da, gz)
    };
    // The overlaps: shared_i = Σ_j k_i·k_j, so k_i gets dshared_i Σ_j k_j + Σ_j dshared_j k_j.
    let all = B::float_sum_dim(k.clone(), 1);
    let dk = add(dk, add(mul(dshared.clone(), all), mm(t(dshared), k)));
    let slope = mul(
        beta.clone(),
        B::float_neg(B::float_sub_scalar(beta, 1.0.into())),
    );
    let dprojections = vec![features_backward::<B>(keys, dk), dvalues, mul(dbeta, slope)];
    (B::float_cat(dprojections, 2), B::float_cat(vec![da, dz], 2))
}

/// A write's check input: `batch` sequences writing `m` rows each (rows 0 and 1 one key) with
/// keys of width `k` and values of width `d` into a store with a normaliser column between 0
/// and 1.5, and a gradient for the new store: the projections (keys, values and strengths side
/// by side), the store and the gradient.
fn check_input(batch: usize, m: usize, k: usize, d: usize) -> [TensorData; 3] {
    let features = 2 * NU * k;
    let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 500.0 - 1.0;
    let data = |len: usize, salt| (0..len).map(|i| value(i, salt)).collect::<Vec<f32>>();
    let (keys, values, strengths) = (data(m * k, 1), data(m * d, 2), data(m, 3));
    let p = k + d + 1;
    let mut projections = Vec::with_capacity(batch * m * p);
    for b in 0..batch {
        for row in 0..m {
            // Rows 0 and 1 of every sequence write one key; the sequences differ.
            let key_row = if row == 1 { 0 } else { row };
            let shift = |x: f32| x + 0.1 * b as f32;
            projections.extend(keys[key_row * k..][..k].iter().map(|&x| shift(x)));
            projections.extend(values[row * d..][..d].iter().map(|&x| shift(x)));
            projections.push(shift(strengths[row]));
        }
    }
    let store: Vec<f32> = (0..batch * features * (d + 1))
        .map(|i| match i % (d + 1) == d {
            true => 0.75 + value(i, 4) * 0.75,
            false => value(i, 4),
        })
        .collect();
    [
        TensorData::new(projections, [batch, m, p]),
        TensorData::new(store, [batch, features, d + 1]),
        TensorData::new(
            data(batch * features * (d + 1), 5),
            [batch, features, d + 1],
        ),
    ]
}

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]), under both rules: two sequences writing 3 rows each (two of them
/// one key), keys of width 5, values of width 70 (more columns than a workgroup has
/// invocations) into a store with a normaliser column between 0 and 1.5; elsewhere, and in a
/// browser, nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let [projections, store, _] = check_input(2, 3, 5, 70);
        for normalised in [false, true] {
            let run = |device: &Device| {
                store_write_unchecked(
                    Tensor::from_data(projections.clone(), device),
                    Tensor::from_data(store.clone(), device),
                    normalised,
                )
            };
            agrees("store", &read(run(device))?, &read(run(&Device::flex()))?)?;
        }
        Ok(())
    });
}

/// On wgpu, check the backward kernel against the written-out backward on the CPU once per
/// device, under both rules, with the forward check's sizes and a gradient of both signs.
fn check_backward_kernel(device: &Device) {
    check_on(wgpu::BACKWARD_NAME, device, |device| {
        let input = check_input(2, 3, 5, 70);
        for normalised in [false, true] {
            let run = |device: &Device| backward(&input, normalised, device);
            let (got, want) = (run(device), run(&Device::flex()));
            for (what, got, want) in [
                ("projections' gradient", &got[0], &want[0]),
                ("store gradient", &got[1], &want[1]),
            ] {
                agrees(what, &read(got.clone())?, &read(want.clone())?)?;
            }
        }
        Ok(())
    });
}

/// [`StoreWriteTrainBackend::store_write_backward`] of `input` (as [`check_input`] gives it)
/// on `device`: the projections' and the store's gradients.
fn backward(input: &[TensorData; 3], normalised: bool, device: &Device) -> [Tensor<3>; 2] {
    let [projections, store, grad] = input
        .clone()
        .map(|data| Tensor::<3>::from_data(data, device).into_dispatch());
    let (dprojections, dstore) = <Dispatch as StoreWriteTrainBackend>::store_write_backward(
        projections,
        store,
        grad,
        normalised,
    );
    [dprojections, dstore].map(Tensor::<3>::from_dispatch)
}

/// [`store_write`] without its shape checks and the kernel's check (which calls it).
fn store_write_unchecked(projections: Tensor<3>, store: Tensor<3>, normalised: bool) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as StoreWriteBackend>::store_write(
        projections.into_dispatch(),
        store.into_dispatch(),
        normalised,
    ))
}

impl StoreWriteBackend for Flex {}
impl StoreWriteTrainBackend for Flex {}

/// The GPU runtimes: on wgpu the WGSL kernels where they serve, Burn's operations elsewhere.
impl StoreWriteTrainBackend for CubeBackend {
    fn store_write_train(
        projections: FloatTensor<Self>,
        store: FloatTensor<Self>,
        normalised: bool,
    ) -> FloatTensor<Self> {
        <Self as StoreWriteBackend>::store_write(projections, store, normalised)
    }

    fn store_write_backward(
        projections: FloatTensor<Self>,
        store: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        normalised: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if wgpu::serves_backward(&projections, &store) {
            wgpu::store_write_backward(projections, store, grad, normalised)
        } else {
            backward_from_ops::<Self>(projections, store, grad, normalised)
        }
    }
}

/// Autodiff: one node whose backward is [`StoreWriteTrainBackend::store_write_backward`].
#[cfg(feature = "train")]
impl<B: Backend + StoreWriteTrainBackend, C: CheckpointStrategy> StoreWriteTrainBackend
    for Autodiff<B, C>
{
    fn store_write_train(
        projections: FloatTensor<Self>,
        store: FloatTensor<Self>,
        normalised: bool,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct WriteBackward;

        impl<B: Backend + StoreWriteTrainBackend> Backward<B, 2> for WriteBackward {
            /// The projections, the store written into and the rule.
            type State = (FloatTensor<B>, FloatTensor<B>, bool);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let grad = grads.consume::<B>(&ops.node);
                let (projections, store, normalised) = ops.state;
                let (dprojections, dstore) =
                    B::store_write_backward(projections, store, grad, normalised);
                for (node, grad) in ops.parents.into_iter().zip([dprojections, dstore]) {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        match WriteBackward
            .prepare::<C>([projections.node(), store.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let [projections, store] = [&projections, &store].map(|t| t.primitive().clone());
                let out = B::store_write_train(projections.clone(), store.clone(), normalised);
                prep.finish((projections, store, normalised), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::store_write_train(
                projections.into_primitive(),
                store.into_primitive(),
                normalised,
            )),
        }
    }
}

/// The GPU runtimes: on wgpu the WGSL kernel where it serves, Burn's operations elsewhere.
impl StoreWriteBackend for CubeBackend {
    fn store_write(
        projections: FloatTensor<Self>,
        store: FloatTensor<Self>,
        normalised: bool,
    ) -> FloatTensor<Self> {
        if wgpu::serves(&projections, &store) {
            wgpu::store_write(projections, store, normalised)
        } else {
            forward_from_ops::<Self>(projections, store, normalised)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::associative::scaled_rows;
    use crate::nn::{AssociativeMemory, Init, StoreRule};

    /// The operation's reference equals the module's own write on the CPU (the kernel is
    /// checked against the reference, so the two must agree), under both rules, from an
    /// empty store and from a written one, with rows that repeat a key.
    #[test]
    fn the_reference_is_the_modules_write() {
        let device = Device::flex();
        let (d, k, m) = (12, 4, 5);
        for rule in [StoreRule::Normalised, StoreRule::Delta] {
            let memory = AssociativeMemory::new(d, k, rule, &mut Init::new(3, &device));
            let rows = |salt: usize| {
                let v: Vec<f32> = (0..2 * m * d)
                    .map(|i| ((i * 7919 + salt) % 1013) as f32 / 300.0 - 1.5)
                    .collect();
                Tensor::<3>::from_data(TensorData::new(v, [2, m, d]), &device)
            };
            let mut store = memory.empty(2, &device);
            for salt in [1, 2] {
                let rows = rows(salt);
                let want = memory.write(rows.clone(), store.clone());
                let projections = memory.projections(scaled_rows(rows, 0..m));
                let got = store_write(projections, store, rule == StoreRule::Normalised);
                let (got, want) = (read(got).unwrap(), read(want.clone()).unwrap());
                let diff = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(diff < 1e-4, "{rule:?}, write {salt}: differs by {diff}");
                store = Tensor::from_data(TensorData::new(want, [2, 6 * k, d + 1]), &device);
            }
        }
    }

    /// The written-out backward (`backward_from_ops`, the kernel's formulas and its check's
    /// reference) gives Burn's autodiff gradients of the module's write on the CPU (its
    /// operations written out with the projections as leaves, the normaliser's increment
    /// detached as the module detaches it), under both rules, rows that repeat a key, from a
    /// store with a normaliser on both sides of 1.
    #[test]
    fn the_written_out_backward_is_the_autodiff_gradient() {
        use crate::nn::Constants;
        use crate::nn::associative::dpfp;
        for (batch, m, k, d) in [(1, 2, 1, 2), (2, 3, 3, 4), (1, 5, 4, 9)] {
            let input = check_input(batch, m, k, d);
            for normalised in [false, true] {
                let ad = Device::flex().autodiff();
                let [projections, store, grad] = input
                    .clone()
                    .map(|data| Tensor::<3>::from_data(data, &ad).require_grad());
                let part = |from, to| projections.clone().slice(s![.., .., from..to]);
                let (keys, values, strengths) =
                    (part(0, k), part(k, k + d), part(k + d, k + d + 1));
                let kf = dpfp(keys, &Constants::default());
                let kt = kf.clone().swap_dims(1, 2);
                let beta = burn::tensor::activation::sigmoid(strengths);
                let shared = kf.clone().matmul(kt.clone()).sum_dim(2);
                let a = store.clone().slice(s![.., .., 0..d]);
                let z = store.clone().slice(s![.., .., d..d + 1]);
                let written = if normalised {
                    let both = kf.clone().matmul(store.clone());
                    let stored = both.clone().slice(s![.., .., 0..d]);
                    let norm = both.slice(s![.., .., d..d + 1]);
                    let old = stored.clone() / (norm.clone() + EPS);
                    let target = old.clone() + beta * (values - old);
                    let gamma = ((norm.neg() + 1.0).clamp(0.0, 1.0) / shared.clone()).detach();
                    let z = z + kt.clone().matmul(gamma);
                    let grown = kf.matmul(z.clone());
                    let update = (target * grown - stored) / shared;
                    Tensor::cat(vec![a + kt.matmul(update), z], 2)
                } else {
                    let old = kf.matmul(a.clone());
                    let update = beta * (values - old) / shared;
                    Tensor::cat(vec![a + kt.matmul(update), z], 2)
                };
                let grads = (written * grad.clone().detach()).sum().backward();
                let want = [projections, store].map(|t| read(t.grad(&grads).unwrap()).unwrap());
                let got = backward(&input, normalised, &Device::flex()).map(|t| read(t).unwrap());
                let what = format!("[{batch}, {m}, {k}] over d {d}, normalised {normalised}");
                for (name, got, want) in
                    [("projections", 0), ("store", 1)].map(|(name, i)| (name, &got[i], &want[i]))
                {
                    crate::ops::assert_close(&format!("{what}: the {name}' gradient"), got, want);
                }
            }
        }
    }
}
