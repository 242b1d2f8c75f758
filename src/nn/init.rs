//! Fresh weights and dropout noise drawn from generators the run owns.
//!
//! Burn's initialisers draw from the backend's process-wide generator when a parameter is first
//! used, so two models built in one process (two trainings on two threads, a test suite) take
//! each other's draws and neither is reproducible. Here every parameter gets its own stream,
//! numbered in construction order from the model's seed: its values depend on the seed and its
//! place in the model only, whenever and on whichever thread it is first used. The values are
//! drawn on the host, so a seed gives the same weights on every device.
//!
//! Parameters stay lazy (as Burn's are): a model whose weights are then loaded from a file never
//! draws them.

use std::sync::{Arc, Mutex};

use burn::module::{Param, ParamId};
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Embedding, Linear, PaddingConfig1d};
use burn::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What a run's seed is drawn for: each purpose gets its own family of streams, so no weight
/// shares a stream with a dropout mask of some step or with a data sample (the data's streams
/// come from another mix of the seed, `task::TaskDataset`).
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Purpose {
    /// Fresh weights ([`Init`]).
    Weights = 0x5745_4947_4854,
    /// Dropout masks ([`Noise`], reseeded per training step).
    Dropout = 0x4452_4f50,
}

/// The seed of `purpose`'s family of streams of the run seed `seed`.
pub fn purpose_seed(seed: u64, purpose: Purpose) -> u64 {
    substream(substream(seed, purpose as u64), u64::MAX)
}

/// SplitMix64 of `(seed, index)`: independent 64-bit seeds for numbered streams of one seed.
pub fn substream(seed: u64, index: u64) -> u64 {
    let mut z = seed.wrapping_add((index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How a parameter's values are drawn.
#[derive(Debug, Clone, Copy)]
enum Draw {
    /// `N(0, std^2)`.
    Normal(f64),
    /// `U(-bound, bound)`.
    Uniform(f64),
}

impl Draw {
    fn values(self, seed: u64, n: usize) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        match self {
            Draw::Uniform(bound) => (0..n)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect(),
            Draw::Normal(std) => {
                // Box-Muller, two values per pair of uniforms.
                let mut out = Vec::with_capacity(n + 1);
                while out.len() < n {
                    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
                    let u2: f64 = rng.random();
                    let r = (-2.0 * u1.ln()).sqrt() * std;
                    let a = std::f64::consts::TAU * u2;
                    out.push((r * a.cos()) as f32);
                    out.push((r * a.sin()) as f32);
                }
                out.truncate(n);
                out
            }
        }
    }
}

/// Builds a model's parameters from one seed: the `n`-th parameter built draws from stream `n`.
///
/// ```
/// use burn::prelude::*;
/// use remem::nn::Init;
///
/// let device = Device::flex();
/// let a = Init::new(7, &device).linear(4, 3, true);
/// let b = Init::new(7, &device).linear(4, 3, true);
/// assert_eq!(a.weight.val().into_data(), b.weight.val().into_data());
/// ```
#[derive(Debug)]
pub struct Init {
    seed: u64,
    next: u64,
    device: Device,
    noise: Noise,
}

impl Init {
    /// Parameters for `device`, drawn from the run seed `seed`.
    pub fn new(seed: u64, device: &Device) -> Self {
        Init {
            seed: purpose_seed(seed, Purpose::Weights),
            next: 0,
            device: device.clone(),
            noise: Noise::new(purpose_seed(seed, Purpose::Dropout)),
        }
    }

    /// The device parameters are built on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dropout noise of the model being built: every [`super::Dropout`] of one model shares
    /// it, and [`Noise::reseed`] sets it (the training loop does, once per step).
    pub fn noise(&self) -> Noise {
        self.noise.clone()
    }

    fn param<const D: usize>(&mut self, shape: [usize; D], draw: Draw) -> Param<Tensor<D>> {
        let seed = substream(self.seed, self.next);
        self.next += 1;
        Param::uninitialized(
            ParamId::new(),
            move |device, require_grad| {
                let n = shape.iter().product();
                let data = TensorData::new(draw.values(seed, n), shape);
                device.memory_persistent_allocations(data, |data| {
                    let t = Tensor::<D>::from_data(data, device);
                    if require_grad { t.require_grad() } else { t }
                })
            },
            self.device.clone(),
            true,
            Shape::from(shape.to_vec()),
        )
    }

    /// A parameter of `shape` drawn from `N(0, std^2)`.
    pub fn normal<const D: usize>(&mut self, shape: [usize; D], std: f64) -> Param<Tensor<D>> {
        self.param(shape, Draw::Normal(std))
    }

    /// A parameter of `shape` drawn from `U(-bound, bound)`.
    pub fn uniform<const D: usize>(&mut self, shape: [usize; D], bound: f64) -> Param<Tensor<D>> {
        self.param(shape, Draw::Uniform(bound))
    }

    /// A linear layer `d_in -> d_out` initialised as Burn's `LinearConfig` does: weight and bias
    /// from `U(-1/sqrt(d_in), 1/sqrt(d_in))`.
    pub fn linear(&mut self, d_in: usize, d_out: usize, bias: bool) -> Linear {
        let bound = 1.0 / (d_in as f64).sqrt();
        Linear {
            weight: self.uniform([d_in, d_out], bound),
            bias: bias.then(|| self.uniform([d_out], bound)),
        }
    }

    /// An embedding table `[n, d]` from `N(0, 1)`, as Burn's `EmbeddingConfig`.
    pub fn embedding(&mut self, n: usize, d: usize) -> Embedding {
        Embedding {
            weight: self.normal([n, d], 1.0),
        }
    }

    /// A 1-d convolution `channels -> channels` of odd width `kernel`, padded to keep the length,
    /// initialised as Burn's `Conv1dConfig` (`U(-1/sqrt(fan_in), 1/sqrt(fan_in))`,
    /// `fan_in = channels * kernel`).
    pub fn conv1d_same(&mut self, channels: usize, kernel: usize) -> Conv1d {
        let pad = kernel / 2;
        let bound = 1.0 / ((channels * kernel) as f64).sqrt();
        let mut conv = Conv1dConfig::new(channels, channels, kernel)
            .with_padding(PaddingConfig1d::Explicit(pad, pad))
            .init(&self.device);
        conv.weight = self.uniform([channels, channels, kernel], bound);
        conv.bias = Some(self.uniform([channels], bound));
        conv
    }
}

/// One model's dropout generator, shared by its [`super::Dropout`] layers and set by
/// [`Noise::reseed`]. A model's clones share it (they are the same model at another step).
#[derive(Debug, Clone)]
pub struct Noise(Arc<Mutex<StdRng>>);

impl Noise {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Noise(Arc::new(Mutex::new(StdRng::seed_from_u64(seed))))
    }

    /// Restart the generator from `seed`.
    pub fn reseed(&self, seed: u64) {
        *self.lock() = StdRng::seed_from_u64(seed);
    }

    /// `n` keep flags (1 with probability `keep`, else 0).
    pub fn keep_mask(&self, n: usize, keep: f64) -> Vec<f32> {
        let mut rng = self.lock();
        (0..n)
            .map(|_| if rng.random_bool(keep) { 1.0 } else { 0.0 })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StdRng> {
        // A panic while drawing leaves a valid generator behind: keep using it.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Default for Noise {
    fn default() -> Self {
        Noise::new(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_depend_on_the_seed_and_the_order_only() {
        let device = Device::flex();
        let draw = |seed| {
            let mut init = Init::new(seed, &device);
            let a = init.normal([3, 5], 1.0);
            let b = init.uniform([4], 0.5);
            // Initialise in the opposite order: the values must not care.
            let b = b.val().into_data().try_to_vec::<f32>().unwrap();
            let a = a.val().into_data().try_to_vec::<f32>().unwrap();
            (a, b)
        };
        let (a1, b1) = draw(11);
        let (a2, b2) = draw(11);
        assert_eq!((&a1, &b1), (&a2, &b2));
        let (a3, _) = draw(12);
        assert_ne!(a1, a3);
        assert!(b1.iter().all(|v| v.abs() <= 0.5));
    }

    /// No weight draws from the stream of a data sample or of a step's dropout mask. (Before
    /// the purposes were separated, weight `n` of seed 1 drew from the very stream of training
    /// sample `n + 1` whenever `n` was odd, and RMT's associative retrieval stayed at chance on
    /// two seeds of three.)
    #[test]
    fn weights_data_and_dropout_draw_from_disjoint_streams() {
        use std::collections::HashSet;
        for seed in [0u64, 1, 2, 3, 42, u64::MAX] {
            let weights = purpose_seed(seed, Purpose::Weights);
            let dropout = purpose_seed(seed, Purpose::Dropout);
            let mut seen = HashSet::new();
            for i in 0..4096u64 {
                assert!(
                    seen.insert(substream(weights, i)),
                    "seed {seed}: weight {i}"
                );
                assert!(seen.insert(substream(dropout, i)), "seed {seed}: step {i}");
            }
            for i in 0..65_536u64 {
                let data = crate::task::dataset::mix(seed, i);
                assert!(
                    !seen.contains(&data),
                    "seed {seed}: sample {i} shares a stream"
                );
            }
        }
    }

    #[test]
    fn normal_draws_have_the_asked_moments() {
        let v = Draw::Normal(2.0).values(3, 20_000);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.05, "std {}", var.sqrt());
    }

    #[test]
    fn noise_restarts_from_its_seed() {
        let noise = Noise::new(1);
        noise.reseed(9);
        let a = noise.keep_mask(64, 0.5);
        noise.reseed(9);
        assert_eq!(a, noise.keep_mask(64, 0.5));
        let kept = a.iter().filter(|&&k| k == 1.0).count();
        assert!((16..=48).contains(&kept), "{kept} of 64 kept at p = 0.5");
    }
}
