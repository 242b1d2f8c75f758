//! The infinity-former's long-term memory (Martins et al., ACL 2022): an unbounded past held as
//! `N` coefficients of a continuous signal over `[0, 1]`, read with Gaussian attention.
//!
//! Reading: keys and values come from the coefficients (`K = B W_K`, `V = B W_V`); each head's
//! query scores the `N` keys, and two learned `N`-vectors turn the scores into a Gaussian density
//! `N(mu, sigma²)` over `[0, 1]`; the context is `Vᵀ r` with `r_j = E[ψ_j(t)]` under it.
//!
//! Writing (see [`LongTermMemory::write`]): sample the old signal at `samples` points, uniformly
//! or where the last queries attended ("sticky memories"), squeeze the samples into `(0, tau]`,
//! put the new vectors on `(tau, 1]`, and refit. The memory is `N x d` however long the input.

use burn::nn::Linear;
use burn::nn::conv::Conv1d;
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softplus};
use serde::{Deserialize, Serialize};

use super::basis::Basis;
use super::init::Init;
use super::linear::{concat, linear, linear_with};
use crate::error::{Error, Result};
use crate::ops::ltm_read::{self, ltm_read};
use crate::ops::matmul::matmul;

/// Smallest variance of an attention density (a floor that keeps `r` finite).
pub const MIN_VARIANCE: f64 = 1e-4;

/// Where the old signal is sampled before a refit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LtmSampling {
    /// Evenly over `[0, 1]`.
    #[default]
    Uniform,
    /// Where the previous segment's queries put their attention density ("sticky memories").
    Sticky,
}

/// Settings of the long-term memory. Unknown keys in a config file are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LtmConfig {
    /// Basis functions `N` (the paper uses 512); a multiple of the number of widths.
    pub basis: usize,
    /// Basis widths; every centre gets each width (the paper: 0.01 and 0.05).
    pub widths: Vec<f64>,
    /// Ridge penalty `lambda` of the fit (the paper: 0.5 to 1).
    pub ridge: f64,
    /// Points `M` at which the old signal is sampled before each refit (the paper: 512).
    pub samples: usize,
    /// Share of `[0, 1]` the old signal is squeezed into (the paper: 0.5 to 0.75).
    pub tau: f64,
    /// Uniform or sticky sampling of the old signal.
    pub sampling: LtmSampling,
    /// Histogram bins over `[0, 1]` for sticky sampling (the paper: 128).
    pub bins: usize,
    /// Weight of the KL term pulling each density's sigma towards `kl_sigma` (0 = off; the
    /// paper: about 1e-6).
    pub kl_weight: f64,
    /// Target sigma of the KL term.
    pub kl_sigma: f64,
    /// Gate the new vectors before the fit: `x * sigmoid(conv1d_k3(x))`.
    pub gate: bool,
    /// Biases in the query, key, value and output layers. Without them an empty memory reads
    /// exactly nothing, so on a pretrained backbone (whose memory starts silent) everything
    /// the memory adds comes from what it holds.
    pub bias: bool,
}

impl Default for LtmConfig {
    fn default() -> Self {
        Self {
            basis: 64,
            widths: vec![0.01, 0.05],
            ridge: 0.5,
            samples: 64,
            tau: 0.75,
            sampling: LtmSampling::Uniform,
            bins: 128,
            kl_weight: 0.0,
            kl_sigma: 0.05,
            gate: false,
            bias: true,
        }
    }
}

impl LtmConfig {
    /// Whether every setting is the default (config files leave the section out then).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let field = |name: &str| format!("model.ltm.{name}");
        if self.widths.is_empty() || self.widths.iter().any(|w| !(*w > 0.0 && w.is_finite())) {
            return Err(Error::config(
                field("widths"),
                "needs at least one width, all positive",
            ));
        }
        if self.basis == 0 || !self.basis.is_multiple_of(self.widths.len()) {
            return Err(Error::config(
                field("basis"),
                format!(
                    "must be a positive multiple of the number of widths ({})",
                    self.widths.len()
                ),
            ));
        }
        if !(self.ridge > 0.0 && self.ridge.is_finite()) {
            return Err(Error::config(field("ridge"), "must be positive"));
        }
        if self.samples == 0 {
            return Err(Error::config(field("samples"), "must be at least 1"));
        }
        if !(self.tau > 0.0 && self.tau < 1.0) {
            return Err(Error::config(field("tau"), "must be in (0, 1)"));
        }
        if self.bins == 0 {
            return Err(Error::config(field("bins"), "must be at least 1"));
        }
        if !(self.kl_weight >= 0.0 && self.kl_weight.is_finite()) {
            return Err(Error::config(field("kl_weight"), "must be 0 or positive"));
        }
        if !(self.kl_sigma > 0.0 && self.kl_sigma.is_finite()) {
            return Err(Error::config(field("kl_sigma"), "must be positive"));
        }
        Ok(())
    }
}

/// One head's attention densities over `[0, 1]`, for every query: what the visualisation draws.
#[derive(Debug, Clone)]
pub struct Density {
    /// Means, `[batch, heads, queries]`, in `(0, 1)`.
    pub mu: Tensor<3>,
    /// Variances, `[batch, heads, queries]`, at least [`MIN_VARIANCE`].
    pub variance: Tensor<3>,
}

impl Density {
    /// The densities at `points` evenly spaced points of `[0, 1]` (ends included).
    ///
    /// # Shapes
    /// output: `[batch, heads, queries, points]`
    pub fn on_grid(&self, points: usize) -> Tensor<4> {
        let device = self.mu.device();
        let step = 1.0 / (points.max(2) - 1) as f32;
        let grid: Vec<f32> = (0..points).map(|i| i as f32 * step).collect();
        let grid = Tensor::<1>::from_data(TensorData::new(grid, [points]), &device);
        let x = grid.unsqueeze::<4>();
        let d = x - self.mu.clone().unsqueeze_dim::<4>(3);
        let var = self.variance.clone().unsqueeze_dim::<4>(3);
        (d.clone() * d / var.clone().mul_scalar(-2.0)).exp()
            / var.mul_scalar(2.0 * std::f64::consts::PI).sqrt()
    }

    /// Mass of the densities in each of `bins` equal bins of `[0, 1]`, summed over heads and
    /// queries (from the Gaussian CDF).
    ///
    /// # Shapes
    /// output: `[batch, bins]`
    pub fn histogram(&self, bins: usize) -> Tensor<2> {
        let device = self.mu.device();
        let edges: Vec<f32> = (0..=bins).map(|k| k as f32 / bins as f32).collect();
        let edges = Tensor::<1>::from_data(TensorData::new(edges, [bins + 1]), &device);
        let sigma = self.variance.clone().sqrt().unsqueeze_dim::<4>(3);
        let z = (edges.unsqueeze::<4>() - self.mu.clone().unsqueeze_dim::<4>(3)) / sigma;
        // Φ(z) = (1 + erf(z / √2)) / 2; the mass of bin k is Φ(z_{k+1}) - Φ(z_k).
        let cdf = z
            .div_scalar(std::f64::consts::SQRT_2)
            .erf()
            .add_scalar(1.0)
            .mul_scalar(0.5);
        let mass = cdf.clone().slice(s![.., .., .., 1..]) - cdf.slice(s![.., .., .., ..bins]);
        let [batch, heads, queries, _] = mass.dims();
        mass.reshape([batch, heads * queries, bins])
            .sum_dim(1)
            .squeeze_dim::<2>(1)
    }

    /// `KL(N(mu, var) ‖ N(mu, sigma0²))` averaged over batch, heads and queries.
    pub fn kl_to(&self, sigma0: f64) -> Tensor<1> {
        let s0 = sigma0 * sigma0;
        // log(sigma0 / sigma) + var / (2 sigma0²) - 1/2
        let var = self.variance.clone();
        (var.clone().log().mul_scalar(-0.5).add_scalar(0.5 * s0.ln()) + var.div_scalar(2.0 * s0))
            .sub_scalar(0.5)
            .mean()
    }
}

/// What one read of the memory returns.
#[derive(Debug, Clone)]
pub struct LtmRead {
    /// `[batch, queries, d_model]`, to add to the layer's short-term attention output.
    pub context: Tensor<3>,
    /// The densities the queries attended with.
    pub density: Density,
}

/// One layer's long-term memory: its attention and its update.
#[derive(Module, Debug)]
pub struct LongTermMemory {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    /// `w_mu`: basis scores -> the density's mean (through a sigmoid).
    mu: Linear,
    /// `w_sigma`: basis scores -> the density's variance (through a softplus).
    sigma: Linear,
    gate: Option<Conv1d>,
    n_heads: usize,
    d_head: usize,
    #[module(skip)]
    basis: Basis,
    #[module(skip)]
    config: LtmConfig,
    /// The read's inputs packed once for a streaming session ([`LongTermMemory::for_inference`]);
    /// never saved, never trained.
    #[module(skip)]
    packed: Option<Packed>,
}

/// What a streaming session's read takes packed: the key and value projections side by side,
/// and `[w_mu, b_mu, w_sigma, b_sigma, centres, widths²]` for the read's kernel
/// ([`crate::ops::ltm_read`]).
#[derive(Debug, Clone)]
struct Packed {
    kv: (Tensor<2>, Option<Tensor<1>>),
    params: Tensor<1>,
}

impl LongTermMemory {
    /// Fresh weights from `init` for a model of width `d_model` with `n_heads` heads.
    pub fn new(config: &LtmConfig, d_model: usize, n_heads: usize, init: &mut Init) -> Self {
        let n = config.basis;
        LongTermMemory {
            query: init.linear(d_model, d_model, config.bias),
            key: init.linear(d_model, d_model, config.bias),
            value: init.linear(d_model, d_model, config.bias),
            output: init.linear(d_model, d_model, config.bias),
            mu: init.linear(n, 1, true),
            sigma: init.linear(n, 1, true),
            gate: config.gate.then(|| init.conv1d_same(d_model, 3)),
            n_heads,
            d_head: d_model / n_heads,
            basis: Basis::new(n, &config.widths, config.ridge),
            config: config.clone(),
            packed: None,
        }
    }

    /// This memory for a streaming session: its read's inputs packed once (the key and value
    /// projections, the mean's and variance's weights with the basis), so that on wgpu the read
    /// is three products and one kernel. The packed copy does not follow later changes to the
    /// weights (as [`crate::nn::Attention`]'s).
    pub(crate) fn for_inference(self) -> Self {
        Self {
            packed: Some(self.pack()),
            ..self
        }
    }

    /// This memory for one training step of several segments on wgpu: the read's inputs packed
    /// once, as tracked operations on the current parameters (as [`crate::nn::Attention`]'s
    /// projections), for [`LongTermMemory::read_context`]. The copy is for that step only.
    /// With sticky sampling or a KL term the reads need their densities: nothing is packed.
    #[cfg(feature = "train")]
    pub(crate) fn for_training_step(&self) -> Self {
        let needs_densities =
            self.config.sampling == LtmSampling::Sticky || self.config.kl_weight > 0.0;
        Self {
            packed: (!needs_densities).then(|| self.pack()),
            ..self.clone()
        }
    }

    /// The key and value projections side by side, and `[w_mu, b_mu, w_sigma, b_sigma,
    /// centres, widths²]`.
    fn pack(&self) -> Packed {
        let n = self.basis.len();
        let device = self.query.weight.device();
        let (centres, widths2) = self.basis.tensors(&device);
        let flat = |l: &Linear| {
            let bias = match &l.bias {
                Some(b) => b.val(),
                None => Tensor::zeros([1], &device),
            };
            [l.weight.val().reshape([n]), bias]
        };
        let [w_mu, b_mu] = flat(&self.mu);
        let [w_sigma, b_sigma] = flat(&self.sigma);
        Packed {
            kv: concat(&[&self.key, &self.value]),
            params: Tensor::cat(vec![w_mu, b_mu, w_sigma, b_sigma, centres, widths2], 0),
        }
    }

    /// This memory with its output layer at zero: it adds nothing to the layer until it
    /// trains, so a pretrained model it is put on starts exactly as it was.
    pub fn silenced(mut self) -> Self {
        let d = self.n_heads * self.d_head;
        let device = self.output.weight.device();
        let mut output = super::linear::scaled_identity(d, 0.0, &device);
        if !self.config.bias {
            output.bias = None;
        }
        self.output = output;
        self
    }

    /// The memory's settings.
    pub fn config(&self) -> &LtmConfig {
        &self.config
    }

    /// An empty memory: the zero signal.
    ///
    /// # Shapes
    /// output: `[batch, N, d_model]`
    pub fn empty(&self, batch: usize, device: &Device) -> Tensor<3> {
        Tensor::zeros(
            [batch, self.basis.len(), self.n_heads * self.d_head],
            device,
        )
    }

    /// Attend the memory `coeffs` from the (layer-normed) states `x`.
    ///
    /// # Shapes
    /// - x: `[batch, queries, d_model]`
    /// - coeffs: `[batch, N, d_model]`
    pub fn read(&self, x: Tensor<3>, coeffs: Tensor<3>) -> LtmRead {
        if let Some(packed) = &self.packed
            && ltm_read::serves(&x)
        {
            // On wgpu at inference: the scores, the Gaussians and the context in one kernel.
            let q = linear(&self.query, x);
            let kv = linear_with(coeffs, packed.kv.0.clone(), packed.kv.1.clone());
            let scale = 1.0 / (self.d_head as f64).sqrt();
            let (mixed, mu, variance) = ltm_read(
                q,
                kv,
                packed.params.clone(),
                self.n_heads,
                scale,
                MIN_VARIANCE,
            );
            return LtmRead {
                context: linear(&self.output, mixed),
                density: Density { mu, variance },
            };
        }
        let [batch, queries, d_model] = x.dims();
        let q = self.heads(linear(&self.query, x));
        let k = self.heads(linear(&self.key, coeffs.clone()));
        let v = self.heads(linear(&self.value, coeffs));
        // scores [batch, heads, queries, N]
        let scores = matmul(q, k.swap_dims(2, 3)).div_scalar((self.d_head as f64).sqrt());
        let mu = sigmoid(self.mu.forward(scores.clone())).squeeze_dim::<3>(3);
        let variance = softplus(self.sigma.forward(scores), 1.0)
            .clamp_min(MIN_VARIANCE)
            .squeeze_dim::<3>(3);
        let r = self.basis.expectation(mu.clone(), variance.clone());
        let mixed = matmul(r, v)
            .swap_dims(1, 2)
            .reshape([batch, queries, d_model]);
        LtmRead {
            context: linear(&self.output, mixed),
            density: Density { mu, variance },
        }
    }

    /// [`LongTermMemory::read`]'s context alone, for training where nothing reads the
    /// densities (no KL term, no sticky sampling, no attention drawn). On wgpu, with the read's
    /// inputs packed for the step ([`LongTermMemory::for_training_step`]), the read is one
    /// autodiff operation: one kernel forward and two backward
    /// ([`crate::ops::ltm_read::ltm_read_context`]) instead of Burn's operations and their
    /// gradients; elsewhere [`LongTermMemory::read`].
    ///
    /// # Shapes
    /// - x: `[batch, queries, d_model]`
    /// - coeffs: `[batch, N, d_model]`
    /// - output: `[batch, queries, d_model]`
    pub fn read_context(&self, x: Tensor<3>, coeffs: Tensor<3>) -> Tensor<3> {
        if let Some(packed) = &self.packed
            && x.is_autodiff()
            && ltm_read::serves_training(&x)
        {
            let q = linear(&self.query, x);
            let kv = linear_with(coeffs, packed.kv.0.clone(), packed.kv.1.clone());
            let scale = 1.0 / (self.d_head as f64).sqrt();
            let mixed = ltm_read::ltm_read_context(
                q,
                kv,
                packed.params.clone(),
                self.n_heads,
                scale,
                MIN_VARIANCE,
            );
            return linear(&self.output, mixed);
        }
        self.read(x, coeffs).context
    }

    /// The memory after `new` vectors arrive: the old signal `coeffs` sampled (where
    /// `attended` puts its mass, for sticky sampling, else evenly), squeezed into `(0, tau]`,
    /// `new` (gated, when the gate is on) placed on `(tau, 1]`, and the whole refitted.
    ///
    /// Gradients flow into the gate and `new`, not into `coeffs` (callers keep it detached).
    ///
    /// # Shapes
    /// - coeffs: `[batch, N, d_model]`
    /// - attended: `[batch, bins]` (see [`Density::histogram`])
    /// - new: `[batch, E, d_model]`, `E >= 1`
    /// - output: `[batch, N, d_model]`
    pub fn write(
        &self,
        coeffs: Tensor<3>,
        attended: Option<Tensor<2>>,
        new: Tensor<3>,
    ) -> Tensor<3> {
        let [_, e, _] = new.dims();
        let device = new.device();
        let m = self.config.samples;
        let new = match &self.gate {
            Some(conv) => {
                let g = sigmoid(conv.forward(new.clone().swap_dims(1, 2))).swap_dims(1, 2);
                new * g
            }
            None => new,
        };
        let positions = match (self.config.sampling, attended) {
            (LtmSampling::Sticky, Some(hist)) => sticky_positions(hist, m),
            _ => {
                // Evenly spaced samples: the sampling and the fit are fixed matrices, multiplied
                // out once (`Basis::uniform_update`).
                let (carry, place) = self.basis.uniform_update(m, e, self.config.tau, &device);
                return carry.unsqueeze::<3>().matmul(coeffs) + place.unsqueeze::<3>().matmul(new);
            }
        };
        // Old signal at the sampled positions: ψ(t)ᵀ B, [batch, M, d].
        let old = self.basis.evaluate(positions).matmul(coeffs);
        let x = Tensor::cat(vec![old, new], 1);
        let fit = self.basis.update_fit(m, e, self.config.tau, &device);
        fit.unsqueeze::<3>().matmul(x)
    }

    /// `[batch, seq, d_model]` -> `[batch, n_heads, seq, d_head]`.
    fn heads(&self, x: Tensor<3>) -> Tensor<4> {
        let [batch, seq, _] = x.dims();
        x.reshape([batch, seq, self.n_heads, self.d_head])
            .swap_dims(1, 2)
    }
}

/// `m` sorted positions distributed as the histogram `hist` (`[batch, bins]`, non-negative):
/// the quantiles `(k + 0.5) / m` of its piecewise-uniform density.
///
/// This is the paper's draw (pick a bin by its mass, then a point uniformly inside it) with the
/// sampling noise taken out: each bin gets its share of points, spread evenly inside it, and the
/// result is deterministic, so a streamed input gives the same memory as a batch.
pub fn sticky_positions(hist: Tensor<2>, m: usize) -> Tensor<2> {
    let [batch, bins] = hist.dims();
    let device = hist.device();
    // A little uniform mass keeps every bin's share positive (no division by zero) and lets a
    // collapsed density still see the rest of the signal.
    let total = hist.clone().sum_dim(1).clamp_min(1e-12);
    let p = (hist / total)
        .mul_scalar(1.0 - 1e-3)
        .add_scalar(1e-3 / bins as f64);
    let cdf = p.clone().cumsum(1); // [batch, bins], upper edges
    let u: Vec<f32> = (0..m).map(|k| (k as f32 + 0.5) / m as f32).collect();
    let u = Tensor::<1>::from_data(TensorData::new(u, [m]), &device)
        .unsqueeze::<2>()
        .repeat_dim(0, batch); // [batch, m]
    // Bin of each quantile: how many upper edges lie at or below it.
    let below = cdf
        .clone()
        .unsqueeze_dim::<3>(1)
        .lower_equal(u.clone().unsqueeze_dim::<3>(2)) // [batch, m, bins]
        .int()
        .sum_dim(2)
        .squeeze_dim::<2>(2)
        .clamp_max(bins as i64 - 1);
    let upper = cdf.gather(1, below.clone());
    let mass = p.gather(1, below.clone());
    let frac = (u - (upper - mass.clone())) / mass;
    (below.float() + frac.clamp(0.0, 1.0)).div_scalar(bins as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(t: Tensor<3>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn gradients_agree_with_finite_differences() {
        // d/dx and d/dB of sum(w * read(x, B).context), analytic (autodiff) vs central
        // differences, for the queries' states x and the memory coefficients B.
        let device = Device::flex().autodiff();
        device.seed(5);
        let config = LtmConfig {
            basis: 8,
            ..LtmConfig::default()
        };
        let ltm = LongTermMemory::new(&config, 8, 2, &mut Init::new(5, &device));
        let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
        let x0 = Tensor::<3>::random([1, 3, 8], normal, &device).detach();
        let b0 = Tensor::<3>::random([1, 8, 8], normal, &device).detach();
        let w = Tensor::<3>::random([1, 3, 8], normal, &device).detach();
        let f = |x: Tensor<3>, b: Tensor<3>| (ltm.read(x, b).context * w.clone()).sum();

        let (x, b) = (x0.clone().require_grad(), b0.clone().require_grad());
        let grads = f(x.clone(), b.clone()).backward();
        let analytic = [host(x.grad(&grads).unwrap()), host(b.grad(&grads).unwrap())];

        let eps = 1e-2f32;
        for (which, grad) in analytic.iter().enumerate() {
            let base = host(if which == 0 { x0.clone() } else { b0.clone() });
            let shape = if which == 0 { [1, 3, 8] } else { [1, 8, 8] };
            let scale = grad.iter().fold(1e-3f32, |m, g| m.max(g.abs()));
            for i in 0..base.len() {
                let at = |delta: f32| -> f32 {
                    let mut v = base.clone();
                    v[i] += delta;
                    let t = Tensor::<3>::from_data(TensorData::new(v, shape), &device);
                    let (x, b) = if which == 0 {
                        (t, b0.clone())
                    } else {
                        (x0.clone(), t)
                    };
                    f(x, b).into_scalar::<f32>()
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                assert!(
                    (numeric - grad[i]).abs() <= 2e-2 * scale,
                    "{} entry {i}: autodiff {} vs finite difference {numeric}",
                    ["query states", "memory"][which],
                    grad[i]
                );
            }
        }
    }

    /// An update with evenly spaced samples (the fixed matrices of `Basis::uniform_update`)
    /// is the old signal sampled at `(k + 0.5) / M`, joined with the new vectors and refitted.
    #[test]
    fn an_even_update_is_the_sampled_signal_refitted() {
        let device = Device::flex();
        device.seed(3);
        let config = LtmConfig {
            basis: 16,
            samples: 10,
            tau: 0.6,
            ..LtmConfig::default()
        };
        let ltm = LongTermMemory::new(&config, 8, 2, &mut Init::new(3, &device));
        let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
        let coeffs = Tensor::<3>::random([2, 16, 8], normal, &device);
        let new = Tensor::<3>::random([2, 5, 8], normal, &device);
        let got = ltm.write(coeffs.clone(), None, new.clone());

        let t: Vec<f32> = (0..10).map(|k| (k as f32 + 0.5) / 10.0).collect();
        let t = Tensor::<1>::from_data(TensorData::new(t, [10]), &device)
            .unsqueeze::<2>()
            .repeat_dim(0, 2);
        let old = ltm.basis.evaluate(t).matmul(coeffs);
        let fit = ltm.basis.update_fit(10, 5, 0.6, &device);
        let want = fit.unsqueeze::<3>().matmul(Tensor::cat(vec![old, new], 1));
        let scale = want.clone().abs().max().into_scalar::<f32>();
        let diff = (got - want).abs().max().into_scalar::<f32>();
        assert!(diff <= 1e-4 * scale, "differs by {diff} (scale {scale})");
    }

    #[test]
    fn the_drawn_density_holds_the_mass_the_histogram_counts() {
        // The visualisation's curve (on_grid) integrated over [0, 1] equals the CDF mass the
        // sticky histogram puts in one bin spanning [0, 1].
        let device = Device::flex();
        for (mu, var) in [(0.5f32, 0.01f32), (0.95, 0.04), (0.1, 1e-4), (0.5, 2.0)] {
            let density = Density {
                mu: Tensor::from_data([[[mu]]], &device),
                variance: Tensor::from_data([[[var]]], &device),
            };
            let points = 20_001;
            let curve = density
                .on_grid(points)
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let h = 1.0 / (points - 1) as f64;
            let integral: f64 = curve
                .iter()
                .enumerate()
                .map(|(i, &v)| v as f64 * if i == 0 || i == points - 1 { 0.5 } else { 1.0 })
                .sum::<f64>()
                * h;
            let mass: f32 = density.histogram(1).into_scalar();
            assert!(
                (integral - mass as f64).abs() < 1e-3,
                "mu {mu}, var {var}: curve holds {integral}, histogram {mass}"
            );
        }
    }

    #[test]
    fn sticky_positions_follow_a_sharp_density() {
        // All attention on one narrow spot at 0.3: most samples land near it, the rest spread.
        let device = Device::flex();
        let density = Density {
            mu: Tensor::from_data([[[0.3f32, 0.3], [0.3, 0.3]]], &device),
            variance: Tensor::from_data([[[1e-4f32, 1e-4], [1e-4, 1e-4]]], &device),
        };
        let hist = density.histogram(128);
        let mass: f32 = hist.clone().sum().into_scalar();
        assert!(
            (mass - 4.0).abs() < 1e-3,
            "4 densities of mass 1, got {mass}"
        );
        let t = sticky_positions(hist, 200)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!(t.windows(2).all(|w| w[0] <= w[1]), "positions are sorted");
        assert!(t.iter().all(|&x| (0.0..=1.0).contains(&x)));
        let near = t.iter().filter(|&&x| (x - 0.3).abs() < 0.04).count();
        assert!(
            near >= 180,
            "only {near} of 200 samples near the attended spot"
        );
        // Uniform attention spreads them evenly instead.
        let flat = sticky_positions(Tensor::ones([1, 128], &device), 200)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        let near = flat.iter().filter(|&&x| (x - 0.3).abs() < 0.04).count();
        assert!(near <= 20, "{near}");
    }
}
