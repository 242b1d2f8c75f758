//! Evaluation on a held-out split: teacher-forced token accuracy and greedy exact match.

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::loss::forward_batch;
use crate::model::{Layout, Model, SegmentModel};
use crate::task::batch::Rows;
use crate::task::{Sample, SegmentBatcher, Task, TaskDataset};
use burn::data::dataloader::batcher::Batcher;

/// Accuracies on the answer positions of a held-out split.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Mean cross-entropy on answer tokens, teacher-forced.
    pub loss: f64,
    /// Fraction of answer tokens predicted right with the true previous tokens as input.
    pub token_accuracy: f64,
    /// Fraction of answer tokens right when the model reads its own previous answers.
    pub greedy_token_accuracy: f64,
    /// Fraction of sequences whose whole answer is right when the model reads its own answers.
    pub exact_match: f64,
    /// Sequences evaluated.
    pub samples: usize,
}

/// The held-out seed stream: disjoint from training's `seed` stream.
pub fn eval_seed(seed: u64) -> u64 {
    seed ^ 0x005E_ED0F_E7A1_u64
}

/// Evaluate `model` (a plain, non-autodiff model) on `samples` held-out sequences of `task`.
pub fn evaluate(
    model: &Model,
    task: &Task,
    seed: u64,
    samples: usize,
    batch_size: usize,
    device: &Device,
) -> EvalReport {
    evaluate_with(model, task, seed, samples, batch_size, device, |_| {})
}

/// Sequences per evaluation batch for inputs of `input_len` tokens: up to 128, fewer as inputs
/// grow (about 64 Ki tokens a batch), so a long evaluation reports progress often and holds
/// one modest batch at a time.
pub fn batch_for(input_len: usize) -> usize {
    (65_536 / input_len.max(1)).clamp(1, 128)
}

/// [`evaluate`], calling `on_progress` with the number of sequences done after each batch.
pub fn evaluate_with(
    model: &Model,
    task: &Task,
    seed: u64,
    samples: usize,
    batch_size: usize,
    device: &Device,
    mut on_progress: impl FnMut(usize),
) -> EvalReport {
    let layout = model.config().layout;
    let batcher = SegmentBatcher::new(layout, task.input_len());
    let data = TaskDataset::new(task.clone(), eval_seed(seed), samples);
    let (mut nll, mut correct, mut greedy_correct, mut exact, mut answers) =
        (0.0, 0.0, 0usize, 0usize, 0usize);
    let mut start = 0;
    while start < samples {
        let items: Vec<Sample> = (start..(start + batch_size).min(samples))
            .map(|i| data.sample(i))
            .collect();
        start += items.len();
        let batch = batcher.batch(items.clone(), device);
        let out = forward_batch(model, &batch, model.step_len(task.input_len()));
        let stats = out.stats();
        nll += stats[0];
        correct += stats[1];
        answers += batch.answer_tokens;

        let rows: Vec<Rows> = items.iter().map(|s| batcher.rows(s)).collect();
        let predictions = match layout {
            Layout::Decoder => greedy(model, &rows, model.step_len(task.input_len()), device),
            // The encoder never sees answer tokens: its teacher-forced predictions are greedy.
            Layout::Encoder => out.predictions(),
        };
        for (row, pred) in rows.iter().zip(&predictions) {
            let mut all = true;
            for ((&answer, &target), &guess) in row.answer.iter().zip(&row.targets).zip(pred) {
                if answer {
                    if guess == target {
                        greedy_correct += 1;
                    } else {
                        all = false;
                    }
                }
            }
            exact += all as usize;
        }
        on_progress(start);
    }
    let answers = answers.max(1) as f64;
    EvalReport {
        loss: nll / answers,
        token_accuracy: correct / answers,
        greedy_token_accuracy: greedy_correct as f64 / answers,
        exact_match: exact as f64 / samples.max(1) as f64,
        samples,
    }
}

/// Decode answers greedily: each answer position's input is the model's own previous answer.
///
/// Returns, per row, the prediction at every position (only answer positions are filled).
pub fn greedy(model: &Model, rows: &[Rows], seg_len: usize, device: &Device) -> Vec<Vec<u32>> {
    let n = rows.len();
    let len = rows[0].inputs.len();
    let mut inputs: Vec<Vec<u32>> = rows.iter().map(|r| r.inputs.clone()).collect();
    let mut preds = vec![vec![0u32; len]; n];
    let mut state = model.init_state(n, device);
    for seg_start in (0..len).step_by(seg_len) {
        let seg_end = (seg_start + seg_len).min(len);
        let tokens = |inputs: &[Vec<u32>]| {
            let flat: Vec<i64> = inputs
                .iter()
                .flat_map(|r| r[seg_start..seg_end].iter().map(|&t| t as i64))
                .collect();
            Tensor::<2, Int>::from_data(TensorData::new(flat, [n, seg_end - seg_start]), device)
        };
        for p in seg_start..seg_end {
            if !rows.iter().any(|r| r.answer[p]) {
                continue;
            }
            // Only the logits are read: the step skips the next state.
            let out = model.last_step(tokens(&inputs), state.clone());
            let j = p - seg_start;
            let best: Vec<i64> = out
                .logits
                .slice(s![.., j..j + 1, ..])
                .argmax(2)
                .into_data()
                .iter::<i64>()
                .collect();
            for (i, row) in rows.iter().enumerate() {
                if row.answer[p] {
                    preds[i][p] = best[i] as u32;
                    if p + 1 < len {
                        inputs[i][p + 1] = best[i] as u32;
                    }
                }
            }
        }
        if seg_end < len {
            state = model.step(tokens(&inputs), state, false).1;
        }
    }
    preds
}
