//! Gaussian radial basis functions on `[0, 1]`: the infinity-former's continuous signal.
//!
//! A sequence of `P` vectors `X` (`[P, d]`) placed at positions `t_i` in `[0, 1]` becomes
//! `N` coefficients `B = Gᵀ X` (`[N, d]`) by ridge regression, where
//! `Gᵀ = (F Fᵀ + λI)⁻¹ F` and `F[j, i] = ψ_j(t_i)`. The signal at any `t` is `Bᵀ ψ(t)`.
//! `Gᵀ` depends on the positions alone, so it is computed once per position set, in f64 on the
//! host (`F Fᵀ` is badly conditioned: an f32 solve is about 1% off), then cast to f32.

use std::collections::HashMap;
use std::f64::consts::PI;
use std::sync::{Arc, Mutex};

use burn::prelude::*;

/// `Gᵀ` per update shape, `(old samples, new vectors, tau bits)` -> `[N, P]` row-major f32.
type FitCache = Arc<Mutex<HashMap<(usize, usize, u64), Arc<Vec<f32>>>>>;

/// The entry of `cache` at `key`, made by `make` and kept on the first request.
fn cached(
    cache: &FitCache,
    key: (usize, usize, u64),
    make: impl FnOnce() -> Vec<f32>,
) -> Arc<Vec<f32>> {
    if let Some(v) = cache.lock().expect("basis cache").get(&key) {
        return v.clone();
    }
    let v = Arc::new(make());
    cache.lock().expect("basis cache").insert(key, v.clone());
    v
}

/// `N` Gaussian basis functions `ψ_j(t) = N(t; c_j, w_j²)` and the ridge penalty of the fit.
#[derive(Debug, Clone)]
pub struct Basis {
    centres: Vec<f64>,
    widths: Vec<f64>,
    ridge: f64,
    fits: FitCache,
    /// `[A | G_new]` of [`Basis::uniform_update`] per update shape, `[N, N + new]`.
    uniform: FitCache,
}

impl Basis {
    /// `count` functions: `count / widths.len()` centres evenly spaced on `[0, 1]`, each with
    /// every width (the paper's 512 = 256 centres x widths 0.01 and 0.05). `count` must be a
    /// positive multiple of `widths.len()` (checked by the model config).
    pub fn new(count: usize, widths: &[f64], ridge: f64) -> Self {
        let per_width = count / widths.len();
        let mut centres = Vec::with_capacity(count);
        let mut ws = Vec::with_capacity(count);
        for &w in widths {
            for k in 0..per_width {
                centres.push(if per_width == 1 {
                    0.5
                } else {
                    k as f64 / (per_width - 1) as f64
                });
                ws.push(w);
            }
        }
        Basis {
            centres,
            widths: ws,
            ridge,
            fits: Arc::default(),
            uniform: Arc::default(),
        }
    }

    /// Number of basis functions `N`.
    pub fn len(&self) -> usize {
        self.centres.len()
    }

    /// Whether there are no basis functions (never, for a valid config).
    pub fn is_empty(&self) -> bool {
        self.centres.is_empty()
    }

    /// `ψ_j(t)` for every `j`, in f64.
    pub fn psi(&self, t: f64) -> Vec<f64> {
        self.centres
            .iter()
            .zip(&self.widths)
            .map(|(&c, &w)| normal_pdf(t, c, w * w))
            .collect()
    }

    /// `Gᵀ = (F Fᵀ + λI)⁻¹ F` for vectors at `positions`, in f64: `[N, P]` row-major.
    pub fn fit_matrix(&self, positions: &[f64]) -> Vec<f64> {
        let (n, p) = (self.len(), positions.len());
        // F: [N, P]
        let mut f = vec![0.0; n * p];
        for (i, &t) in positions.iter().enumerate() {
            for (j, v) in self.psi(t).into_iter().enumerate() {
                f[j * p + i] = v;
            }
        }
        // A = F Fᵀ + λI: [N, N], symmetric positive definite.
        let mut a = vec![0.0; n * n];
        for r in 0..n {
            for c in 0..=r {
                let dot: f64 = (0..p).map(|i| f[r * p + i] * f[c * p + i]).sum();
                a[r * n + c] = dot;
                a[c * n + r] = dot;
            }
            a[r * n + r] += self.ridge;
        }
        let l = cholesky(&a, n);
        // Solve A Gᵀ = F column by column.
        let mut g = vec![0.0; n * p];
        let mut col = vec![0.0; n];
        for i in 0..p {
            for j in 0..n {
                col[j] = f[j * p + i];
            }
            solve_cholesky(&l, n, &mut col);
            for j in 0..n {
                g[j * p + i] = col[j];
            }
        }
        g
    }

    /// Positions of one memory update: `samples` points of the old signal squeezed into
    /// `(0, tau]`, then `new` vectors on `(tau, 1]`, each at the centre of its share.
    pub fn update_positions(samples: usize, new: usize, tau: f64) -> Vec<f64> {
        let old = (0..samples).map(|k| tau * (k as f64 + 0.5) / samples as f64);
        let fresh = (0..new).map(|i| tau + (1.0 - tau) * (i as f64 + 0.5) / new as f64);
        old.chain(fresh).collect()
    }

    /// `Gᵀ` of an update (see [`Basis::update_positions`]) as an f32 tensor `[N, samples + new]`,
    /// computed once per shape and kept.
    pub fn update_fit(&self, samples: usize, new: usize, tau: f64, device: &Device) -> Tensor<2> {
        let values = cached(&self.fits, (samples, new, tau.to_bits()), || {
            let g = self.fit_matrix(&Self::update_positions(samples, new, tau));
            g.into_iter().map(|x| x as f32).collect()
        });
        Tensor::from_data(
            TensorData::new(values.to_vec(), [self.len(), samples + new]),
            device,
        )
    }

    /// An update with the old signal sampled evenly (at `(k + 0.5) / samples`) as two
    /// matrices: the new coefficients are `A B + G_new X` for old coefficients `B` and `new`
    /// vectors `X`, where `A = G_oldᵀ Ψ` (`[N, N]`: the samples' values `Ψ B` fitted at their
    /// squeezed positions) and `G_new` (`[N, new]`) is the fit's part for the new vectors.
    /// The same numbers as sampling `Ψ B` and fitting `[Ψ B; X]` with [`Basis::update_fit`],
    /// with `A` multiplied out in f64 once per shape and kept: on a GPU two products instead
    /// of the samples' evaluation, a product, a join and a product.
    pub fn uniform_update(
        &self,
        samples: usize,
        new: usize,
        tau: f64,
        device: &Device,
    ) -> (Tensor<2>, Tensor<2>) {
        let n = self.len();
        let values = cached(&self.uniform, (samples, new, tau.to_bits()), || {
            let p = samples + new;
            let g = self.fit_matrix(&Self::update_positions(samples, new, tau));
            let psi: Vec<Vec<f64>> = (0..samples)
                .map(|k| self.psi((k as f64 + 0.5) / samples as f64))
                .collect();
            let mut v = Vec::with_capacity(n * (n + new));
            for r in 0..n {
                let row = &g[r * p..(r + 1) * p];
                // Row r of A: Σ_k G[r, k] ψ(t_k).
                let mut a = vec![0.0f64; n];
                for (g_rk, psi_k) in row.iter().zip(&psi) {
                    for (a_c, p_kc) in a.iter_mut().zip(psi_k) {
                        *a_c += g_rk * p_kc;
                    }
                }
                v.extend(a.into_iter().map(|x| x as f32));
                v.extend(row[samples..].iter().map(|&x| x as f32));
            }
            v
        });
        let (mut carry, mut place) = (Vec::with_capacity(n * n), Vec::with_capacity(n * new));
        for row in values.chunks(n + new) {
            carry.extend_from_slice(&row[..n]);
            place.extend_from_slice(&row[n..]);
        }
        (
            Tensor::from_data(TensorData::new(carry, [n, n]), device),
            Tensor::from_data(TensorData::new(place, [n, new]), device),
        )
    }

    /// Centres `[N]` and squared widths `[N]` on `device`.
    pub(crate) fn tensors(&self, device: &Device) -> (Tensor<1>, Tensor<1>) {
        let f32s = |v: Vec<f64>| -> Vec<f32> { v.into_iter().map(|x| x as f32).collect() };
        let centres = f32s(self.centres.clone());
        let w2 = f32s(self.widths.iter().map(|w| w * w).collect());
        (
            Tensor::from_data(TensorData::new(centres, [self.len()]), device),
            Tensor::from_data(TensorData::new(w2, [self.len()]), device),
        )
    }

    /// `ψ_j(t)` at every position of `t`.
    ///
    /// # Shapes
    /// - t: `[batch, P]`
    /// - output: `[batch, P, N]`
    pub fn evaluate(&self, t: Tensor<2>) -> Tensor<3> {
        let (c, w2) = self.tensors(&t.device());
        gaussian(
            t.unsqueeze_dim::<3>(2),
            c.unsqueeze::<3>(),
            w2.unsqueeze::<3>(),
        )
    }

    /// `r_j = E_{t ~ N(mu, var)}[ψ_j(t)] = N(mu; c_j, var + w_j²)`, the closed form over the
    /// whole real line.
    ///
    /// # Shapes
    /// - mu, var: `[batch, heads, queries]`
    /// - output: `[batch, heads, queries, N]`
    pub fn expectation(&self, mu: Tensor<3>, var: Tensor<3>) -> Tensor<4> {
        let (c, w2) = self.tensors(&mu.device());
        let var = var.unsqueeze_dim::<4>(3) + w2.unsqueeze::<4>();
        gaussian(mu.unsqueeze_dim::<4>(3), c.unsqueeze::<4>(), var)
    }
}

/// `N(x; mean, var)` elementwise (broadcasting).
fn gaussian<const D: usize>(x: Tensor<D>, mean: Tensor<D>, var: Tensor<D>) -> Tensor<D> {
    let d = x - mean;
    (d.clone() * d / var.clone().mul_scalar(-2.0)).exp() / (var.mul_scalar(2.0 * PI)).sqrt()
}

/// The normal density in f64.
pub fn normal_pdf(x: f64, mean: f64, var: f64) -> f64 {
    (-(x - mean).powi(2) / (2.0 * var)).exp() / (2.0 * PI * var).sqrt()
}

/// Lower-triangular `L` with `L Lᵀ = a` (`n x n`, row-major, positive definite).
fn cholesky(a: &[f64], n: usize) -> Vec<f64> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = a[i * n + i] - s;
                assert!(d > 0.0, "ridge system is not positive definite");
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    l
}

/// Solve `L Lᵀ x = b` in place.
fn solve_cholesky(l: &[f64], n: usize, b: &mut [f64]) {
    for i in 0..n {
        let s: f64 = (0..i).map(|k| l[i * n + k] * b[k]).sum();
        b[i] = (b[i] - s) / l[i * n + i];
    }
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|k| l[k * n + i] * b[k]).sum();
        b[i] = (b[i] - s) / l[i * n + i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paper_basis() -> Basis {
        Basis::new(512, &[0.01, 0.05], 0.5)
    }

    /// A smooth signal: a sum of a few sines, 3 channels.
    fn smooth(t: f64, channel: usize) -> f64 {
        let c = channel as f64;
        (2.0 * PI * t + c).sin()
            + 0.5 * (6.0 * PI * t + 2.0 * c).sin()
            + 0.25 * (10.0 * PI * t).cos()
    }

    #[test]
    fn ridge_regression_reconstructs_a_smooth_signal() {
        for basis in [paper_basis(), Basis::new(64, &[0.01, 0.05], 0.5)] {
            for l in [64, 300, 1024] {
                let positions: Vec<f64> = (0..l).map(|i| (i as f64 + 0.5) / l as f64).collect();
                let g = basis.fit_matrix(&positions);
                let n = basis.len();
                let (mut err, mut norm) = (0.0, 0.0);
                for ch in 0..3 {
                    let x: Vec<f64> = positions.iter().map(|&t| smooth(t, ch)).collect();
                    // B = Gᵀ X, then the signal back at every position: ψ(t)ᵀ B.
                    let b: Vec<f64> = (0..n)
                        .map(|j| (0..l).map(|i| g[j * l + i] * x[i]).sum())
                        .collect();
                    for (i, &t) in positions.iter().enumerate() {
                        let back: f64 = basis.psi(t).iter().zip(&b).map(|(p, b)| p * b).sum();
                        err += (back - x[i]).powi(2);
                        norm += x[i].powi(2);
                    }
                }
                let rel = (err / norm).sqrt();
                assert!(
                    rel < 0.05,
                    "N = {}, L = {l}: relative error {rel}",
                    basis.len()
                );
            }
        }
    }

    #[test]
    fn the_f32_fit_matches_f64_to_1e_5() {
        // Coefficients from the cast Gᵀ, multiplied on the device in f32, against the same
        // product done entirely in f64.
        let device = Device::flex();
        let basis = paper_basis();
        let (samples, new, tau) = (512, 24, 0.75);
        let p = samples + new;
        let g64 = basis.fit_matrix(&Basis::update_positions(samples, new, tau));
        let x: Vec<f64> = (0..p)
            .flat_map(|i| (0..3).map(move |c| smooth(i as f64 / p as f64, c)))
            .collect();
        let expected: Vec<f64> = (0..basis.len())
            .flat_map(|j| {
                let (g64, x) = (&g64, &x);
                (0..3).map(move |c| (0..p).map(|i| g64[j * p + i] * x[i * 3 + c]).sum::<f64>())
            })
            .collect();
        let xs: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let x = Tensor::<2>::from_data(TensorData::new(xs, [p, 3]), &device);
        let b = basis.update_fit(samples, new, tau, &device).matmul(x);
        let got = b.into_data().try_to_vec::<f32>().unwrap();
        let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(&g, &e)| (g as f64 - e).abs())
            .fold(0.0, f64::max);
        assert!(
            worst / scale < 1e-5,
            "f32 path off by {worst} (scale {scale})"
        );
    }

    #[test]
    fn the_closed_form_expectation_matches_numerical_integration() {
        let device = Device::flex();
        let basis = Basis::new(16, &[0.01, 0.05], 0.5);
        let cases = [
            (0.5, 0.1),
            (0.2, 0.01),
            (0.9, 0.3),
            (0.33, 0.002), // sigma smaller than the narrow basis width
            (-0.2, 0.05),  // mu outside [0, 1]
            (1.3, 0.2),
        ];
        let mu: Vec<f32> = cases.iter().map(|c| c.0 as f32).collect();
        let var: Vec<f32> = cases.iter().map(|c| (c.1 * c.1) as f32).collect();
        let shape = [1, 1, cases.len()];
        let r = basis.expectation(
            Tensor::from_data(TensorData::new(mu, shape), &device),
            Tensor::from_data(TensorData::new(var, shape), &device),
        );
        let r = r.into_data().try_to_vec::<f32>().unwrap();
        for (q, &(mu, sigma)) in cases.iter().enumerate() {
            // Trapezoid rule over mu +- 12 sigma, fine enough for the narrowest function.
            let (lo, hi) = (mu - 12.0 * sigma - 0.6, mu + 12.0 * sigma + 0.6);
            let steps = 400_000;
            let h = (hi - lo) / steps as f64;
            let mut integral = vec![0.0; basis.len()];
            for s in 0..=steps {
                let t = lo + s as f64 * h;
                let weight = if s == 0 || s == steps { 0.5 } else { 1.0 };
                let p = normal_pdf(t, mu, sigma * sigma) * weight * h;
                for (acc, psi) in integral.iter_mut().zip(basis.psi(t)) {
                    *acc += p * psi;
                }
            }
            for (j, &want) in integral.iter().enumerate() {
                let got = r[q * basis.len() + j] as f64;
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "mu {mu}, sigma {sigma}, basis {j}: closed form {got}, integral {want}"
                );
            }
        }
    }
}
