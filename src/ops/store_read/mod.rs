//! ARMT's read of one layer's associative store as one operation, at inference: the DPFP-3
//! features of each row's projected query made unit length, then what the store returns for
//! them (see [`crate::nn::AssociativeMemory::read`], whose formulas these are): `A·φ` under
//! the delta rule, `A·φ / (z·φ + ε)` under the paper's normalised one.
//!
//! On wgpu the operation is one dispatch of `shaders/store_read.wgsl` ([`wgpu`]) instead of
//! nine kernels per layer on lavapipe (DPFP's two picking products, their rectified product, the
//! features' length and the division by it, the product with the store, the normaliser's
//! slice and division). Elsewhere it runs as Burn's operations ([`forward_from_ops`]), which
//! is also the reference the kernel is checked against. Inference only: training keeps the
//! module's own path, whose backward Burn's autodiff gives.

mod wgpu;

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
    #[fusion(meta = read_spec)]
    fn store_read(
        keys: FloatTensor<Self>,
        store: FloatTensor<Self>,
        normalised: bool,
    ) -> FloatTensor<Self> {
        forward_from_ops::<Self>(keys, store, normalised)
    }
}

/// The read's shape and type, for the fusion stream.
fn read_spec(keys: &TensorSpec, store: &TensorSpec, _normalised: &bool) -> TensorSpec {
    let [batch, n, _] = keys.shape.dims::<3>();
    let d = store.shape[2] - 1;
    TensorSpec::new(Shape::new([batch, n, d]), keys.dtype)
}

/// Whether [`store_read`] serves a read of `rows` on their device: inference (no autodiff)
/// on wgpu. The store takes its general path elsewhere.
pub(crate) fn serves(rows: &Tensor<3>) -> bool {
    !rows.is_autodiff() && on_wgpu(&rows.device())
}

/// What `store` returns for the DPFP-ν features (unit length) of the projected queries `keys`:
/// `A·φ`, divided by `z·φ + ε` when `normalised`.
///
/// # Shapes
/// - keys: `[batch, n, K]`
/// - store: `[batch, 2ν·K, d + 1]`
/// - output: `[batch, n, d]`
pub fn store_read(keys: Tensor<3>, store: Tensor<3>, normalised: bool) -> Tensor<3> {
    let [batch, _, k] = keys.dims();
    let [store_batch, features, _] = store.dims();
    assert!(
        store_batch == batch && features == 2 * NU * k,
        "store_read: keys {:?} do not read a store {:?}",
        keys.dims(),
        store.dims()
    );
    check_kernel(&keys.device());
    store_read_unchecked(keys, store, normalised)
}

/// [`StoreReadBackend::store_read`] from the backend's tensor operations: DPFP as two
/// picking products ([`crate::nn::associative::dpfp`]), then the product with the store.
fn forward_from_ops<B: Backend>(
    keys: FloatTensor<B>,
    store: FloatTensor<B>,
    normalised: bool,
) -> FloatTensor<B> {
    let [batch, n, _] = keys.shape().dims::<3>();
    let d = store.shape()[2] - 1;
    let both = B::float_matmul(features_from_ops::<B>(keys), store);
    let values = columns::<B>(both.clone(), 0, d);
    debug_assert_eq!(values.shape().dims::<3>(), [batch, n, d]);
    match normalised {
        true => {
            let norm = columns::<B>(both, d, d + 1);
            B::float_div(values, B::float_add_scalar(norm, EPS.into()))
        }
        false => values,
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
    let features = 2 * NU * k;
    let device = keys.device();
    let [left, right] = [0, 1].map(|side| {
        B::float_from_data(
            TensorData::new(pick_values(k, side), [k, features]),
            &device,
        )
    });
    let keys = B::float_reshape(keys, Shape::new([batch * n, k]));
    let picked = |m| B::relu(B::float_matmul(keys.clone(), m));
    let phi = B::float_mul(picked(left), picked(right));
    let squares = B::float_sum_dim(B::float_mul(phi.clone(), phi.clone()), 1);
    let length = B::float_sqrt(B::float_add_scalar(squares, 1e-12.into()));
    B::float_reshape(B::float_div(phi, length), Shape::new([batch, n, features]))
}

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]), under both rules: two sequences of 19 rows (the dispatch's rows
/// are not a multiple of anything) with keys of width 5, some of them all negative or zero,
/// over a store of 30 features and values of width 70 (more columns than a workgroup has
/// invocations); elsewhere, and in a browser, nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let (batch, n, k, d) = (2, 19, 5, 70);
        let features = 2 * NU * k;
        let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 500.0 - 1.0;
        let keys: Vec<f32> = (0..batch * n * k)
            .map(|i| if i % 11 == 3 { 0.0 } else { value(i, 1) })
            .collect();
        // The normaliser column away from zero, as a written store's is.
        let store: Vec<f32> = (0..batch * features * (d + 1))
            .map(|i| match i % (d + 1) == d {
                true => 0.5 + value(i, 2).abs(),
                false => value(i, 2),
            })
            .collect();
        for normalised in [false, true] {
            let run = |device: &Device| {
                store_read_unchecked(
                    Tensor::from_data(TensorData::new(keys.clone(), [batch, n, k]), device),
                    Tensor::from_data(
                        TensorData::new(store.clone(), [batch, features, d + 1]),
                        device,
                    ),
                    normalised,
                )
            };
            agrees("read", &read(run(device))?, &read(run(&Device::flex()))?)?;
        }
        Ok(())
    });
}

/// [`store_read`] without its shape checks and the kernel's check (which calls it).
fn store_read_unchecked(keys: Tensor<3>, store: Tensor<3>, normalised: bool) -> Tensor<3> {
    Tensor::from_dispatch(<Dispatch as StoreReadBackend>::store_read(
        keys.into_dispatch(),
        store.into_dispatch(),
        normalised,
    ))
}

impl StoreReadBackend for Flex {}

/// The GPU runtimes: on wgpu the WGSL kernel where it serves, Burn's operations elsewhere.
impl StoreReadBackend for CubeBackend {
    fn store_read(
        keys: FloatTensor<Self>,
        store: FloatTensor<Self>,
        normalised: bool,
    ) -> FloatTensor<Self> {
        if wgpu::serves(&keys, &store) {
            wgpu::store_read(keys, store, normalised)
        } else {
            forward_from_ops::<Self>(keys, store, normalised)
        }
    }
}
