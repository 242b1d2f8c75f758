//! ARMT's write into one layer's associative store as one operation, at inference: from the
//! memory rows' projections (keys before DPFP, values, the strengths before their sigmoid),
//! the keys' DPFP features, how much each shares with the others written alongside it, what
//! the store returns for them now, and the store after the write (see
//! [`crate::nn::AssociativeMemory::write`], whose formulas these are), under the delta rule
//! or the paper's normalised one.
//!
//! On wgpu the operation is one dispatch of `shaders/store_write.wgsl` ([`wgpu`]) instead of
//! seventeen kernels per layer on lavapipe (DPFP's products, the overlap's product and sum, the
//! lookup, the update's element-wise chain, the products into the store, the store's columns
//! taken apart and joined). Elsewhere it runs as Burn's operations ([`forward_from_ops`]),
//! which is also the reference the kernel is checked against. Inference only: training keeps
//! the module's own path, whose backward Burn's autodiff gives.

mod wgpu;

use burn::backend::wgpu::CubeBackend;
use burn::backend::{
    Backend, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;

use crate::nn::associative::{EPS, NU};
use crate::ops::store_read::{columns, features_from_ops};
use crate::ops::wgsl::{agrees, check_on, on_wgpu, read};

/// The store's write as a backend operation.
#[backend_extension(Flex, Cube, Fusion)]
pub trait StoreWriteBackend: Backend {
    /// The store `[batch, 2ν·K, d + 1]` (`A`, then `z` as the last column) after writing the
    /// memory rows whose projections are `keys` `[batch, M, K]` (before DPFP), `values`
    /// `[batch, M, d]` and `strengths` `[batch, M, 1]` (before the sigmoid), by the paper's
    /// normalised rule when `normalised`, else the delta rule.
    #[fusion(dtype = store, shape = store)]
    fn store_write(
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        strengths: FloatTensor<Self>,
        store: FloatTensor<Self>,
        normalised: bool,
    ) -> FloatTensor<Self> {
        forward_from_ops::<Self>(keys, values, strengths, store, normalised)
    }
}

/// Whether [`store_write`] serves a write of `rows` `[batch, M, d]` with keys of `key_dim` on
/// their device: inference (no autodiff) on wgpu, with what the kernel stages fitting its
/// workgroup memory. The store takes its general path elsewhere.
pub(crate) fn serves(rows: &Tensor<3>, key_dim: usize) -> bool {
    let [_, m, d] = rows.dims();
    !rows.is_autodiff() && on_wgpu(&rows.device()) && wgpu::fits(m, key_dim, d)
}

/// The store after writing memory rows whose key, value and strength projections are `keys`,
/// `values` and `strengths` (see [`crate::nn::AssociativeMemory::write`]).
///
/// # Shapes
/// - keys: `[batch, M, K]`
/// - values: `[batch, M, d]`
/// - strengths: `[batch, M, 1]`
/// - store and output: `[batch, 2ν·K, d + 1]`
pub fn store_write(
    keys: Tensor<3>,
    values: Tensor<3>,
    strengths: Tensor<3>,
    store: Tensor<3>,
    normalised: bool,
) -> Tensor<3> {
    let [batch, m, k] = keys.dims();
    let [store_batch, features, width] = store.dims();
    assert!(
        store_batch == batch
            && features == 2 * NU * k
            && values.dims() == [batch, m, width - 1]
            && strengths.dims() == [batch, m, 1],
        "store_write: keys {:?}, values {:?} and strengths {:?} do not write a store {:?}",
        keys.dims(),
        values.dims(),
        strengths.dims(),
        store.dims()
    );
    check_kernel(&keys.device());
    store_write_unchecked(keys, values, strengths, store, normalised)
}

/// [`StoreWriteBackend::store_write`] from the backend's tensor operations, step by step as
/// [`crate::nn::AssociativeMemory::write`] takes them.
fn forward_from_ops<B: Backend>(
    keys: FloatTensor<B>,
    values: FloatTensor<B>,
    strengths: FloatTensor<B>,
    store: FloatTensor<B>,
    normalised: bool,
) -> FloatTensor<B> {
    let d = store.shape()[2] - 1;
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

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]), under both rules: two sequences writing 3 rows each (two of them
/// one key), keys of width 5, values of width 70 (more columns than a workgroup has
/// invocations) into a store with a normaliser column between 0 and 1.5; elsewhere, and in a
/// browser, nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let (batch, m, k, d) = (2, 3, 5, 70);
        let features = 2 * NU * k;
        let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 500.0 - 1.0;
        let data = |len: usize, salt| (0..len).map(|i| value(i, salt)).collect::<Vec<f32>>();
        let mut keys = data(batch * m * k, 1);
        // Rows 0 and 1 of each sequence write one key.
        for b in 0..batch {
            let first = keys[b * m * k..][..k].to_vec();
            keys[(b * m + 1) * k..][..k].copy_from_slice(&first);
        }
        let store: Vec<f32> = (0..batch * features * (d + 1))
            .map(|i| match i % (d + 1) == d {
                true => 0.75 + value(i, 4) * 0.75,
                false => value(i, 4),
            })
            .collect();
        for normalised in [false, true] {
            let run = |device: &Device| {
                let tensor = |values: Vec<f32>, shape: [usize; 3]| {
                    Tensor::<3>::from_data(TensorData::new(values, shape), device)
                };
                store_write_unchecked(
                    tensor(keys.clone(), [batch, m, k]),
                    tensor(data(batch * m * d, 2), [batch, m, d]),
                    tensor(data(batch * m, 3), [batch, m, 1]),
                    tensor(store.clone(), [batch, features, d + 1]),
                    normalised,
                )
            };
            agrees("store", &read(run(device))?, &read(run(&Device::flex()))?)?;
        }
        Ok(())
    });
}

/// [`store_write`] without its shape checks and the kernel's check (which calls it).
fn store_write_unchecked(
    keys: Tensor<3>,
    values: Tensor<3>,
    strengths: Tensor<3>,
    store: Tensor<3>,
    normalised: bool,
) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as StoreWriteBackend>::store_write(
        keys.into_dispatch(),
        values.into_dispatch(),
        strengths.into_dispatch(),
        store.into_dispatch(),
        normalised,
    ))
}

impl StoreWriteBackend for Flex {}

/// The GPU runtimes: on wgpu the WGSL kernel where it serves, Burn's operations elsewhere.
impl StoreWriteBackend for CubeBackend {
    fn store_write(
        keys: FloatTensor<Self>,
        values: FloatTensor<Self>,
        strengths: FloatTensor<Self>,
        store: FloatTensor<Self>,
        normalised: bool,
    ) -> FloatTensor<Self> {
        if wgpu::serves(&keys, &store) {
            wgpu::store_write(keys, values, strengths, store, normalised)
        } else {
            forward_from_ops::<Self>(keys, values, strengths, store, normalised)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
                let (keys, values, strengths) = memory.projections(rows);
                let got = store_write(
                    keys,
                    values,
                    strengths,
                    store,
                    rule == StoreRule::Normalised,
                );
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
}
