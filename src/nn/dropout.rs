//! Dropout whose masks come from the model's own generator ([`Noise`]), not the backend's
//! process-wide one, so a training run draws the same masks whatever else the process runs.

use burn::prelude::*;

use super::init::Noise;

/// Zeroes each element with probability `prob` and scales the rest by `1 / (1 - prob)`, on an
/// autodiff device only (training); elsewhere, and at `prob = 0`, the identity.
#[derive(Module, Debug)]
pub struct Dropout {
    prob: f64,
    #[module(skip)]
    noise: Noise,
}

impl Dropout {
    /// Dropout with probability `prob` drawing from `noise`.
    pub fn new(prob: f64, noise: Noise) -> Self {
        Dropout { prob, noise }
    }

    /// The drop probability.
    pub fn prob(&self) -> f64 {
        self.prob
    }

    /// Whether [`Dropout::forward`] leaves `x` as it is (`prob = 0`, or not training).
    pub fn passes<const D: usize>(&self, x: &Tensor<D>) -> bool {
        self.prob == 0.0 || !x.device().is_autodiff()
    }

    /// Apply dropout to `x`.
    ///
    /// # Shapes
    /// any; the output has the input's shape.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.passes(&x) {
            return x;
        }
        let keep = 1.0 - self.prob;
        let shape = x.shape();
        let mask = self.noise.keep_mask(shape.num_elements(), keep);
        let mask = Tensor::<D>::from_data(TensorData::new(mask, shape), &x.device());
        x * mask.mul_scalar(1.0 / keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_at_the_asked_rate_only_when_training_and_repeats_from_a_seed() {
        let x = |device: &Device| Tensor::<2>::ones([40, 50], device);
        let noise = Noise::new(3);
        let dropout = Dropout::new(0.25, noise.clone());

        let inference = dropout.forward(x(&Device::flex())).into_data();
        assert_eq!(inference, x(&Device::flex()).into_data());

        let training = Device::flex().autodiff();
        noise.reseed(5);
        let a = dropout
            .forward(x(&training))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        noise.reseed(5);
        let b = dropout
            .forward(x(&training))
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(a, b, "the same seed draws the same mask");
        let dropped = a.iter().filter(|&&v| v == 0.0).count() as f64 / a.len() as f64;
        assert!((0.2..0.3).contains(&dropped), "dropped {dropped}");
        let kept: Vec<f32> = a.into_iter().filter(|&v| v != 0.0).collect();
        assert!(kept.iter().all(|&v| (v - 1.0 / 0.75).abs() < 1e-6));
    }
}
