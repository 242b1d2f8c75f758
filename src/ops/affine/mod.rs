//! Inference's linear layers on wgpu as one hand-written kernel: `epilogue(x' w + b)`, the
//! epilogue none, GELU, or a residual added (`shaders/affine.wgsl`), and `x'` the input as it
//! lies or each row layer-normed as the kernel reads it (a pre-norm block's norm and the product
//! after it in one kernel, [`RowNorm`]).
//!
//! At inference Burn runs each product through its matrix-product family, whose autotuning
//! compiles and times several candidate kernels for every new shape (and a whole second family
//! when a shape does not suit its fused kernels: an odd inner width, as the page's models have).
//! In a browser's software WebGPU that compilation was most of the first answer. [`affine`]
//! runs the products of a streaming step with one small tiled kernel built three ways, nothing
//! to tune. Only without autodiff: training keeps Burn's products, whose backward it needs.
//! The CPU and other runtimes take the reference written with Burn's operations.

mod wgpu;

use burn::backend::wgpu::CubeBackend;
use burn::backend::{
    Backend, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;

use crate::ops::wgsl::{agrees, check_on, on_wgpu, read};

/// What follows the product and the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// Nothing: `x w + b`.
    None,
    /// GELU (erf form): `gelu(x w + b)`.
    Gelu,
    /// The residual added: `x w + b + residual`.
    Residual,
}

impl Epilogue {
    /// The kernel's code for it.
    fn code(self) -> usize {
        self as usize
    }
}

/// A layer norm applied to each row of a product's input as it is read: `(x - mean) /
/// sqrt(var + epsilon) * gamma + beta`, as [`crate::ops::layer_norm::layer_norm`] computes it.
#[derive(Debug, Clone)]
pub struct RowNorm {
    /// Scale, `[k]`.
    pub gamma: Tensor<1>,
    /// Shift, `[k]`.
    pub beta: Tensor<1>,
    /// Added to the variance before the square root.
    pub epsilon: f64,
}

/// Inference's `epilogue(x' w + b)` as a backend operation.
#[backend_extension(Flex, Cube, Fusion)]
pub trait AffineBackend: Backend {
    /// `epilogue(x' w + b)` for `x` `[rows, k]`, `weight` `[k, n]`, `bias` `[n]`; `residual`
    /// `[rows, n]` is added with epilogue 2 and not read otherwise. Epilogues: 0 none, 1 GELU,
    /// 2 residual. `x'` is `x`, or with `norm` each row of `x` layer-normed with `gamma` and
    /// `beta` (`[k]`, not read otherwise) and `epsilon`.
    #[allow(clippy::too_many_arguments)]
    #[fusion(dtype = x, shape = product_shape(x, weight))]
    fn affine_rows(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epilogue: usize,
        norm: bool,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        let x = match norm {
            true => row_norm::<Self>(x, gamma, beta, epsilon),
            false => x,
        };
        reference::<Self>(x, weight, bias, residual, epilogue)
    }
}

/// `[rows, k] x [k, n]` -> `[rows, n]`, for the fusion stream.
fn product_shape(x: &Shape, weight: &Shape) -> Shape {
    Shape::new([x[0], weight[1]])
}

/// The most weights [`affine`] takes: the products of remem's own models (up to `d_model` 512
/// with a feed-forward of 2048 and more) and of small heads. Larger ones (a pretrained model's
/// vocabulary-wide head) run long enough for Burn's tuned products to pay for their tuning.
const MAX_WEIGHTS: usize = 1 << 21;

/// Whether [`affine`] serves `x` with `weight`: inference (no autodiff) on wgpu, and a weight
/// of at most [`MAX_WEIGHTS`]. Elsewhere the linear layers keep Burn's products.
pub(crate) fn serves<const D: usize>(x: &Tensor<D>, weight: &Tensor<2>) -> bool {
    !x.is_autodiff() && weight.shape().num_elements() <= MAX_WEIGHTS && on_wgpu(&x.device())
}

/// `epilogue(x' · weight + bias)` over the rows of `x` (with `residual` added for
/// [`Epilogue::Residual`]), as one kernel on wgpu; `x'` is `x`, or each row layer-normed with
/// `norm`. For inference: `x` carries no gradient.
///
/// # Shapes
/// - x: `[..., k]`
/// - weight: `[k, n]`
/// - bias: `[n]`
/// - norm's gamma and beta: `[k]`
/// - residual (read with [`Epilogue::Residual`] only), output: `[..., n]`
pub fn affine<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Tensor<1>,
    residual: Option<Tensor<D>>,
    epilogue: Epilogue,
    norm: Option<RowNorm>,
) -> Tensor<D> {
    let dims = x.dims();
    let k = dims[D - 1];
    let rows = dims[..D - 1].iter().product::<usize>();
    let [wk, n] = weight.dims();
    assert!(
        wk == k && bias.dims() == [n],
        "affine: x {dims:?}, weight {:?}, bias {:?}",
        weight.dims(),
        bias.dims()
    );
    assert_eq!(
        residual.is_some(),
        epilogue == Epilogue::Residual,
        "affine: a residual goes with Epilogue::Residual"
    );
    if let Some(norm) = &norm {
        assert!(
            norm.gamma.dims() == [k] && norm.beta.dims() == [k],
            "affine: x {dims:?}, norm gamma {:?}, beta {:?}",
            norm.gamma.dims(),
            norm.beta.dims()
        );
    }
    check_kernel(&x.device());
    let x = x.reshape([rows, k]);
    let residual = match residual {
        Some(r) => r.reshape([rows, n]),
        // Bound, never read: any tensor of the device will do.
        None => x.clone(),
    };
    let (gamma, beta, epsilon) = match &norm {
        Some(n) => (n.gamma.clone(), n.beta.clone(), n.epsilon),
        // Not read without a norm: the bias stands in.
        None => (bias.clone(), bias.clone(), 0.0),
    };
    let y = Tensor::<2>::from_dispatch(<Dispatch as AffineBackend>::affine_rows(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        residual.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epilogue.code(),
        norm.is_some(),
        epsilon,
    ));
    let mut out = dims;
    out[D - 1] = n;
    y.reshape(out)
}

/// Each row of `x` `[rows, k]` layer-normed, from the backend's tensor operations: the mean,
/// then the variance of the centred values, as [`crate::ops::layer_norm`]'s reference.
fn row_norm<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    beta: FloatTensor<B>,
    epsilon: f64,
) -> FloatTensor<B> {
    let k = x.shape()[1];
    let centred = B::float_sub(x.clone(), B::float_mean_dim(x, 1));
    let variance = B::float_mean_dim(B::float_mul(centred.clone(), centred.clone()), 1);
    let deviation = B::float_sqrt(B::float_add_scalar(variance, epsilon.into()));
    let normed = B::float_div(centred, deviation);
    B::float_add(
        B::float_mul(normed, B::float_reshape(gamma, Shape::new([1, k]))),
        B::float_reshape(beta, Shape::new([1, k])),
    )
}

/// [`AffineBackend::affine_rows`] after the norm, from the backend's tensor operations.
fn reference<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    bias: FloatTensor<B>,
    residual: FloatTensor<B>,
    epilogue: usize,
) -> FloatTensor<B> {
    let n = weight.shape()[1];
    let y = B::float_add(
        B::float_matmul(x, weight),
        B::float_reshape(bias, Shape::new([1, n])),
    );
    match epilogue {
        1 => B::gelu(y),
        2 => B::float_add(y, residual),
        _ => y,
    }
}

/// On wgpu, check the kernel with each epilogue, without and with the norm, against the
/// reference on the CPU once per device (see [`crate::ops::wgsl`]): 37 rows, an odd inner width
/// of 45 and 70 columns (none a multiple of the tile); elsewhere, and in a browser, nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let (rows, k, n) = (37, 45, 70);
        let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 400.0 - 1.2;
        let data = |len: usize, shape: Vec<usize>, salt| {
            TensorData::new(
                (0..len).map(|i| value(i, salt)).collect::<Vec<f32>>(),
                shape,
            )
        };
        let x = data(rows * k, vec![rows, k], 1);
        let weight = data(k * n, vec![k, n], 2);
        let bias = data(n, vec![n], 3);
        let residual = data(rows * n, vec![rows, n], 4);
        let gamma = data(k, vec![k], 5);
        let beta = data(k, vec![k], 6);
        for epilogue in 0..3 {
            for norm in [false, true] {
                let run = |device: &Device| {
                    Tensor::<2>::from_dispatch(<Dispatch as AffineBackend>::affine_rows(
                        Tensor::<2>::from_data(x.clone(), device).into_dispatch(),
                        Tensor::<2>::from_data(weight.clone(), device).into_dispatch(),
                        Tensor::<1>::from_data(bias.clone(), device).into_dispatch(),
                        Tensor::<2>::from_data(residual.clone(), device).into_dispatch(),
                        Tensor::<1>::from_data(gamma.clone(), device).into_dispatch(),
                        Tensor::<1>::from_data(beta.clone(), device).into_dispatch(),
                        epilogue,
                        norm,
                        1e-5,
                    ))
                };
                agrees("output", &read(run(device))?, &read(run(&Device::flex()))?)?;
            }
        }
        Ok(())
    });
}

impl AffineBackend for Flex {}

/// The GPU runtimes: on wgpu the WGSL kernel where it serves, Burn's operations elsewhere.
impl AffineBackend for CubeBackend {
    fn affine_rows(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        residual: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epilogue: usize,
        norm: bool,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        if wgpu::serves(&x) {
            let norm = norm.then_some((gamma, beta, epsilon));
            wgpu::affine_rows(x, weight, bias, residual, epilogue, norm)
        } else {
            let x = match norm {
                true => row_norm::<Self>(x, gamma, beta, epsilon),
                false => x,
            };
            reference::<Self>(x, weight, bias, residual, epilogue)
        }
    }
}
