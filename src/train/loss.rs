//! The segment loop shared by training and evaluation: loss on answer positions only.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::model::{Model, State};
use crate::task::Batch;

/// The outcome of running a batch through all its segments.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// Mean cross-entropy over the batch's answer tokens (differentiable).
    pub loss: Tensor<1>,
    /// `[nll sum, correct answer tokens]`, to read back in one transfer.
    summary: Tensor<1>,
    /// Argmax prediction at every position `[batch, len]`.
    predictions: Tensor<2, Int>,
}

impl BatchOutput {
    /// `[sum of answer-token NLL, correctly predicted answer tokens]` on the host.
    pub fn stats(&self) -> [f64; 2] {
        let v: Vec<f32> = self
            .summary
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .expect("f32");
        [v[0] as f64, v[1] as f64]
    }

    /// Argmax prediction per row and position, on the host.
    pub fn predictions(&self) -> Vec<Vec<u32>> {
        let [n, len] = self.predictions.dims();
        let flat: Vec<i64> = self.predictions.clone().into_data().iter::<i64>().collect();
        (0..n)
            .map(|i| {
                flat[i * len..(i + 1) * len]
                    .iter()
                    .map(|&t| t as u32)
                    .collect()
            })
            .collect()
    }
}

/// Run `batch` segment by segment through `model`, carrying the state, and score the answer
/// positions.
///
/// Gradients flow back through the memory as the model's `bptt_depth` allows.
pub fn forward_batch(model: &Model, batch: &Batch, seg_len: usize) -> BatchOutput {
    let [n, len] = batch.inputs.dims();
    let device = batch.inputs.device();
    let mut state = model.init_state(n, &device);
    let mut nll = Vec::new();
    let mut correct = Vec::new();
    let mut predictions = Vec::new();
    let mut regulariser = Vec::new();
    for start in (0..len).step_by(seg_len) {
        let end = (start + seg_len).min(len);
        let tokens = batch.inputs.clone().slice(s![.., start..end]);
        let targets = batch.targets.clone().slice(s![.., start..end]);
        let weights = batch.weights.clone().slice(s![.., start..end]);
        // The last segment's next state is not needed: that step skips computing it.
        let current = std::mem::replace(&mut state, State::Empty);
        let out = if end < len {
            let (out, next) = model.step(tokens, current, false);
            state = next;
            out
        } else {
            model.last_step(tokens, current)
        };
        regulariser.extend(out.regulariser.clone());
        let logp = log_softmax(out.logits.clone(), 2);
        let picked = logp
            .gather(2, targets.clone().unsqueeze_dim::<3>(2))
            .squeeze_dim::<2>(2);
        nll.push(-(picked * weights.clone()).sum());
        let pred = out.logits.argmax(2).squeeze_dim::<2>(2);
        correct.push((pred.clone().equal(targets).float() * weights).sum());
        predictions.push(pred);
    }
    let nll = Tensor::cat(nll, 0).sum();
    let correct = Tensor::cat(correct, 0).sum();
    let mut loss = nll.clone().div_scalar(batch.answer_tokens.max(1) as f64);
    if !regulariser.is_empty() {
        let segments = regulariser.len() as f64;
        loss = loss + Tensor::cat(regulariser, 0).sum().div_scalar(segments);
    }
    BatchOutput {
        loss,
        summary: Tensor::cat(vec![nll.detach(), correct.detach()], 0),
        predictions: Tensor::cat(predictions, 1),
    }
}
