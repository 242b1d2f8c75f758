//! Turning samples into the tensors a segment loop consumes.

use burn::data::dataloader::batcher::Batcher;
use burn::prelude::*;

use super::{PAD, Sample};
use crate::model::Layout;

/// Inputs, targets and loss weights for `segments * segment_len` positions.
#[derive(Debug, Clone)]
pub struct Batch {
    /// # Shapes
    /// `[batch, segments * segment_len]`
    pub inputs: Tensor<2, Int>,
    /// The token to predict at each input position.
    ///
    /// # Shapes
    /// `[batch, segments * segment_len]`
    pub targets: Tensor<2, Int>,
    /// 1 where the target is an answer token, else 0.
    ///
    /// # Shapes
    /// `[batch, segments * segment_len]`
    pub weights: Tensor<2>,
    /// Number of answer positions in the batch (the loss's denominator).
    pub answer_tokens: usize,
}

/// Host-side rows of a batch, before they become tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    /// Input token per position.
    pub inputs: Vec<u32>,
    /// Target token per position.
    pub targets: Vec<u32>,
    /// Whether the target is an answer token.
    pub answer: Vec<bool>,
}

/// Lays samples out for a model layout.
///
/// - decoder: inputs are `tokens[..n-1]`, targets `tokens[1..]` (next-token prediction);
/// - encoder: inputs are the tokens with the answer replaced by padding, targets the tokens
///   themselves (each answer token predicted at its own position).
///
/// Both are cut or padded to `len` positions.
#[derive(Debug, Clone)]
pub struct SegmentBatcher {
    layout: Layout,
    len: usize,
}

impl SegmentBatcher {
    /// A batcher for `len = segments * segment_len` positions.
    pub fn new(layout: Layout, len: usize) -> Self {
        Self { layout, len }
    }

    /// One sample laid out as rows of `len` positions.
    pub fn rows(&self, sample: &Sample) -> Rows {
        let (inputs, targets, answer): (Vec<u32>, Vec<u32>, Vec<bool>) = match self.layout {
            Layout::Decoder => (
                sample.tokens[..sample.tokens.len().saturating_sub(1)].to_vec(),
                sample.tokens[1..].to_vec(),
                sample.answer[1..].to_vec(),
            ),
            Layout::Encoder => (
                sample
                    .tokens
                    .iter()
                    .zip(&sample.answer)
                    .map(|(&t, &a)| if a { PAD } else { t })
                    .collect(),
                sample.tokens.clone(),
                sample.answer.clone(),
            ),
        };
        let fit = |mut v: Vec<u32>| {
            v.resize(self.len, PAD);
            v
        };
        let mut answer = answer;
        answer.resize(self.len, false);
        Rows {
            inputs: fit(inputs),
            targets: fit(targets),
            answer,
        }
    }
}

impl Batch {
    /// The tensors of `rows` (all of one length): inputs, targets and answer weights.
    pub fn from_rows(rows: &[Rows], device: &Device) -> Batch {
        let (n, len) = (rows.len(), rows.first().map_or(0, |r| r.inputs.len()));
        let ints = |f: fn(&Rows) -> &Vec<u32>| {
            let flat: Vec<i64> = rows
                .iter()
                .flat_map(|r| f(r).iter().map(|&t| t as i64))
                .collect();
            Tensor::<2, Int>::from_data(TensorData::new(flat, [n, len]), device)
        };
        let weights: Vec<f32> = rows
            .iter()
            .flat_map(|r| r.answer.iter().map(|&a| if a { 1.0 } else { 0.0 }))
            .collect();
        Batch {
            inputs: ints(|r| &r.inputs),
            targets: ints(|r| &r.targets),
            answer_tokens: rows
                .iter()
                .map(|r| r.answer.iter().filter(|&&a| a).count())
                .sum(),
            weights: Tensor::from_data(TensorData::new(weights, [n, len]), device),
        }
    }
}

impl Batcher<Sample, Batch> for SegmentBatcher {
    fn batch(&self, items: Vec<Sample>, device: &Device) -> Batch {
        let rows: Vec<Rows> = items.iter().map(|s| self.rows(s)).collect();
        Batch::from_rows(&rows, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_shifts_and_encoder_hides_the_answer() {
        let sample = Sample {
            tokens: vec![5, 6, 1, 5, 6],
            answer: vec![false, false, false, true, true],
        };
        let dec = SegmentBatcher::new(Layout::Decoder, 6).rows(&sample);
        assert_eq!(dec.inputs, [5, 6, 1, 5, 0, 0]);
        assert_eq!(dec.targets, [6, 1, 5, 6, 0, 0]);
        assert_eq!(dec.answer, [false, false, true, true, false, false]);
        let enc = SegmentBatcher::new(Layout::Encoder, 6).rows(&sample);
        assert_eq!(enc.inputs, [5, 6, 1, 0, 0, 0]);
        assert_eq!(enc.targets, [5, 6, 1, 5, 6, 0]);
        assert_eq!(enc.answer, [false, false, false, true, true, false]);
    }
}
