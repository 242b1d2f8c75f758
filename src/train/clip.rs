//! Clipping by the global gradient norm, as PyTorch's `clip_grad_norm_` does.
//!
//! Burn's `GradientClipping::Norm` clips each parameter tensor by its own norm, which changes
//! the direction of the update; this scales all gradients by one factor instead.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;

use crate::ops::sum_squares::SumSquares;

struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    sum: SumSquares,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            // On wgpu one kernel per six parameters (see `sum_squares`).
            self.sum.add(g);
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The L2 norm of all of `model`'s gradients together.
pub fn global_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    let mut visitor = SquaredNorm {
        grads,
        sum: SumSquares::new(),
    };
    model.visit(&mut visitor);
    visitor
        .sum
        .total()
        .map(|t| t.into_scalar::<f32>() as f64)
        .unwrap_or(0.0)
        .sqrt()
}

/// Scale `grads` so their global norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_global_norm<M: Module>(model: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = global_norm(model, grads);
    if norm.is_finite() && norm > max_norm {
        model.visit(&mut Scale {
            grads,
            factor: max_norm / (norm + 1e-6),
        });
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};

    #[test]
    fn clipping_scales_all_gradients_by_one_factor() {
        let device = Device::flex().autodiff();
        let model: Linear = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<2>::from_floats([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]], &device);
        let loss = model.forward(x).powi_scalar(2).sum().mul_scalar(10.0);
        let mut grads = GradientsParams::from_grads(loss.backward(), &model);
        let before: Vec<f32> = grads
            .get::<2>(model.weight.id)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        let norm = clip_global_norm(&model, &mut grads, 1.0);
        assert!(norm > 1.0);
        let after_norm = global_norm(&model, &grads);
        assert!((after_norm - 1.0).abs() < 1e-4, "{after_norm}");
        let after: Vec<f32> = grads
            .get::<2>(model.weight.id)
            .unwrap()
            .into_data()
            .try_to_vec()
            .unwrap();
        for (b, a) in before.iter().zip(&after) {
            assert!((*a as f64 - *b as f64 / norm).abs() < 1e-4);
        }
    }
}
