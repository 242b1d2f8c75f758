//! The segment loop shared by training and evaluation: loss on answer positions only.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use crate::model::{Model, ModelKind, SegmentModel, State, cuts_before};
use crate::ops::cross_entropy::cross_entropy_totals;
use crate::task::Batch;

/// The outcome of running a batch through all its segments.
#[derive(Debug, Clone)]
pub struct BatchOutput {
    /// Mean cross-entropy over the batch's answer tokens (differentiable).
    pub loss: Tensor<1>,
    /// `[nll sum, correct answer tokens]`, and where rows were counted `[exactly right rows,
    /// rows with an answer]` and each row's 1 or 0 (exactly right) after them, to read back in
    /// one transfer.
    summary: Tensor<1>,
    /// Argmax prediction at every position `[batch, len]`; on GPUs only where the batch was
    /// not run for training (the loss counts the hits without them).
    predictions: Option<Tensor<2, Int>>,
}

impl BatchOutput {
    /// The batch's answer scores on the host.
    pub fn stats(&self) -> Stats {
        let v: Vec<f32> = self
            .summary
            .clone()
            .into_data()
            .convert::<f32>()
            .try_to_vec()
            .expect("f32");
        Stats {
            nll: v[0] as f64,
            correct: v[1] as f64,
            exact_match: (v.len() >= 4 && v[3] > 0.0).then(|| v[2] as f64 / v[3] as f64),
            rows: v
                .get(4..)
                .unwrap_or_default()
                .iter()
                .map(|&r| r > 0.5)
                .collect(),
        }
    }

    /// Argmax prediction per row and position, on the host.
    ///
    /// # Panics
    /// For a batch run for training (with autodiff) on a GPU, which does not compute them,
    /// and for one whose windows without an answer ran without autodiff (not scored).
    pub fn predictions(&self) -> Vec<Vec<u32>> {
        let predictions = self
            .predictions
            .as_ref()
            .expect("predictions are kept for batches run without autodiff");
        let [n, len] = predictions.dims();
        let flat: Vec<i64> = predictions.clone().into_data().iter::<i64>().collect();
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

/// A batch's answer scores, read back from the device.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Sum of the answer tokens' negative log-likelihood.
    pub nll: f64,
    /// Answer tokens whose arg-max prediction is the target (teacher-forced).
    pub correct: f64,
    /// Where rows were counted and some row has an answer, the fraction of rows with an
    /// answer whose answer tokens are all predicted right. Teacher-forced, yet for this forward
    /// pass the same as greedy exact match: a greedy decoder that gets every token right has
    /// fed itself the targets. (Training's pass draws dropout and sampling noise; the held-out
    /// evaluation does not.)
    pub exact_match: Option<f64>,
    /// Where rows were counted, whether each row's answer is exactly right (as
    /// [`Stats::exact_match`] counts it; a row without an answer is not); otherwise empty.
    pub rows: Vec<bool>,
}

/// Run `batch` segment by segment through `model`, carrying the state, and score the answer
/// positions.
///
/// Gradients flow back through the memory as the model's `bptt_depth` allows: the state is
/// detached between segments where [`cuts_before`] says, counted back from the last segment.
pub fn forward_batch(model: &Model, batch: &Batch, seg_len: usize) -> BatchOutput {
    forward_batch_counting_rows(model, batch, seg_len, false)
}

/// [`forward_batch`] that with `count_rows` also counts the rows whose answer is exactly
/// right ([`Stats::exact_match`]; on GPUs a few kernels more).
pub fn forward_batch_counting_rows(
    model: &Model,
    batch: &Batch,
    seg_len: usize,
    count_rows: bool,
) -> BatchOutput {
    let [n, _] = batch.inputs.dims();
    let state = model.init_state(n, &batch.inputs.device());
    run_segments(model, batch, seg_len, state, false, true, count_rows).0
}

/// [`forward_batch`] from `state`: the batch continues an input whose earlier segments the
/// state holds (the streamed evaluations read only the segments that hold the answer).
pub fn forward_batch_from(
    model: &Model,
    batch: &Batch,
    seg_len: usize,
    state: State,
) -> BatchOutput {
    let fresh = state.tensors().is_empty();
    run_segments(model, batch, seg_len, state, false, fresh, false).0
}

/// [`forward_batch_from`] that also returns the state after the batch's last segment, for the
/// next window of the same text (`train.carry_memory`). The returned state still holds the
/// graph: detach it before the next window. With `rows`, counts the exactly right rows as
/// [`forward_batch_counting_rows`] does.
pub fn forward_batch_carrying(
    model: &Model,
    batch: &Batch,
    seg_len: usize,
    state: State,
    rows: bool,
) -> (BatchOutput, State) {
    let (out, state) = run_segments(model, batch, seg_len, state, true, false, rows);
    (out, state.expect("kept"))
}

/// The segment loop of [`forward_batch_from`]; with `keep`, the last segment computes the
/// next state too and it is returned. `fresh`: `state` is the model's initial state (nothing
/// read yet), so a model may read all segments at once where its state carries no gradient.
/// `count_rows`: count the rows whose answer tokens are all predicted right.
fn run_segments(
    model: &Model,
    batch: &Batch,
    seg_len: usize,
    mut state: State,
    keep: bool,
    fresh: bool,
    count_rows: bool,
) -> (BatchOutput, Option<State>) {
    let [_, len] = batch.inputs.dims();
    let segments = len.div_ceil(seg_len);
    let packed = match segments > 1 && batch.inputs.is_autodiff() {
        true => model.for_training_step(&batch.inputs.device()),
        false => None,
    };
    let model = packed.as_ref().unwrap_or(model);
    let bptt_depth = model.config().bptt_depth;
    // The CPU scores each segment as it comes (one segment's scores alive at a time); GPUs
    // score all segments' logits at once with the cross-entropy as one operation (a few
    // kernels instead of a few dozen per segment), holding every segment's logits together.
    // The gradients are the same either way, within rounding.
    let per_segment = crate::device::is_cpu(&batch.inputs.device());
    // Training, which segments hold answer tokens (one read of the weights; on GPUs only
    // where `bptt_depth` can cut a window off from every answer). On the CPU a segment without
    // any is scored on detached logits: its loss term is zero either way, and detached, the
    // backward pass does not run through its head.
    let truncated = bptt_depth.is_some();
    let answered: Option<Vec<bool>> = ((per_segment || truncated) && batch.inputs.is_autodiff())
        .then(|| {
            let w = batch.weights.clone().detach().sum_dim(0);
            let w = w
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default();
            w.chunks(seg_len)
                .map(|c| c.iter().any(|&x| x != 0.0))
                .collect()
        });
    // Segments in a window of `bptt_depth` that holds no answer pass no gradient anywhere: they
    // run without autodiff (`model.valid()`) and without the output head, which builds no
    // graph, so the long prefixes of the retention tasks cost a forward pass only, not the
    // graph's time and memory (the graph of every segment would otherwise be held until the
    // backward pass). They are not scored (nothing to score), so no predictions are kept.
    let free = match (&answered, keep) {
        (Some(answered), false) => free_segments(answered, bptt_depth),
        _ => Vec::new(),
    };
    // A batch with no answer at all keeps its graph (its loss is zero, but still a graph).
    let free = if free.iter().all(|&f| f) {
        Vec::new()
    } else {
        free
    };
    let plain = free.iter().any(|&f| f).then(|| model.valid());
    let (mut nll, mut correct, mut predictions) = (Vec::new(), Vec::new(), Vec::new());
    // Per row, the answer tokens predicted wrong so far (`count_rows` only).
    let mut misses: Option<Tensor<1>> = None;
    let mut record = |(n, c, p): (Tensor<1>, Tensor<1>, Tensor<2, Int>), m: Option<Tensor<1>>| {
        nll.push(n);
        correct.push(c);
        predictions.push(p);
        if let Some(m) = m {
            misses = Some(match misses.take() {
                Some(before) => before + m,
                None => m,
            });
        }
    };
    let total = |parts: Vec<Tensor<1>>| match <[_; 1]>::try_from(parts) {
        Ok([one]) => one,
        Err(parts) => Tensor::cat(parts, 0).sum(),
    };
    let mut logits = Vec::new();
    let mut regulariser = Vec::new();
    // On GPUs the output head runs once over every segment's rows, after the loop.
    let split_head = !per_segment && model.splits_head();
    let mut rows = Vec::new();
    // On GPUs Transformer-XL and the infinity-former read all their segments at once: their
    // cache and long-term memory carry no gradient.
    if split_head && !keep && fresh && plain.is_none() {
        rows.extend(model.window_rows(batch.inputs.clone(), seg_len));
    }
    let looped = if rows.is_empty() { segments } else { 0 };
    for (segment, start) in (0..len).step_by(seg_len).enumerate().take(looped) {
        let end = (start + seg_len).min(len);
        let tokens = batch.inputs.clone().slice(s![.., start..end]);
        if let (Some(plain), Some(true)) = (&plain, free.get(segment)) {
            let current = std::mem::replace(&mut state, State::Empty).inner();
            // Only the next state is needed, and the infinity-former's regulariser (a
            // constant here, kept so the loss is the same at every depth), which only its
            // full step gives.
            state = if plain.config().kind == ModelKind::Infinity {
                let (out, next) = plain.step(tokens.inner(), current, false);
                regulariser.extend(out.regulariser.into_iter().map(Tensor::autodiff));
                next
            } else {
                plain.advance(tokens.inner(), current)
            };
            continue;
        }
        if segment > 0 && cuts_before(segment, segments, bptt_depth) {
            state = state.detach().autodiff();
        }
        // The last segment's next state is not needed: that step skips computing it.
        let current = std::mem::replace(&mut state, State::Empty);
        if split_head {
            let (segment_rows, next, term) = model.step_rows(tokens, current, end < len || keep);
            rows.push(segment_rows);
            regulariser.extend(term);
            state = next.unwrap_or(State::Empty);
            continue;
        }
        let out = if end < len || keep {
            let (out, next) = model.step(tokens, current, false);
            state = next;
            out
        } else {
            model.last_step(tokens, current)
        };
        regulariser.extend(out.regulariser.clone());
        if per_segment {
            let targets = batch.targets.clone().slice(s![.., start..end]);
            let weights = batch.weights.clone().slice(s![.., start..end]);
            let logits = match answered.as_ref().and_then(|a| a.get(segment)) {
                Some(false) => out.logits.detach(),
                _ => out.logits,
            };
            let scored = score(logits, targets.clone(), weights.clone());
            let m = count_rows.then(|| row_misses(scored.2.clone(), targets, weights));
            record(scored, m);
        } else {
            logits.push(out.logits);
        }
    }
    let answers = batch.answer_tokens.max(1) as f64;
    let (mut loss, summary) = if per_segment {
        let nll = total(nll);
        let correct = total(correct);
        let summary = Tensor::cat(vec![nll.clone().detach(), correct.detach()], 0);
        (nll.div_scalar(answers), summary)
    } else {
        let logits = match split_head {
            true => model.head(match <[_; 1]>::try_from(rows) {
                Ok([one]) => one,
                Err(rows) => Tensor::cat(rows, 1),
            }),
            false => Tensor::cat(logits, 1),
        };
        // The targets of the segments that ran with their logits (all but the free ones).
        let (targets, weights) = match plain {
            None => (batch.targets.clone(), batch.weights.clone()),
            Some(_) => {
                let kept: Vec<i64> = (0..len as i64)
                    .filter(|&i| !free[i as usize / seg_len])
                    .collect();
                let n = kept.len();
                let kept = Tensor::<1, Int>::from_data(
                    TensorData::new(kept, [n]),
                    &batch.targets.device(),
                );
                (
                    batch.targets.clone().select(1, kept.clone()),
                    batch.weights.clone().select(1, kept),
                )
            }
        };
        if count_rows {
            let p = logits.clone().detach().argmax(2).squeeze_dim::<2>(2);
            misses = Some(row_misses(p, targets.clone(), weights.clone()));
        }
        let (loss, summary, p) = score_rows(logits, targets, weights, 1.0 / answers);
        predictions.extend(p);
        (loss, summary)
    };
    let summary = match misses {
        Some(misses) => {
            let answered = batch
                .weights
                .clone()
                .sum_dim(1)
                .squeeze_dim::<1>(1)
                .greater_elem(0.0);
            let exact = misses.lower_elem(0.5).bool_and(answered.clone());
            let exact = exact.float();
            let rows = Tensor::cat(vec![exact.clone().sum(), answered.float().sum()], 0);
            Tensor::cat(vec![summary, rows, exact], 0)
        }
        None => summary,
    };
    if !regulariser.is_empty() {
        let segments = regulariser.len() as f64;
        loss = loss + Tensor::cat(regulariser, 0).sum().div_scalar(segments);
    }
    let out = BatchOutput {
        loss,
        summary,
        predictions: match <[_; 1]>::try_from(predictions) {
            // Free segments were not scored: the predictions would not cover the batch.
            _ if plain.is_some() => None,
            Ok([one]) => Some(one),
            Err(all) if all.is_empty() => None,
            Err(all) => Some(Tensor::cat(all, 1)),
        },
    };
    (out, keep.then_some(state))
}

/// Per segment, whether it lies in a window of `bptt_depth` (the segments between two cuts,
/// [`cuts_before`]) in which no segment is `answered`: nothing it computes reaches the loss.
fn free_segments(answered: &[bool], bptt_depth: Option<usize>) -> Vec<bool> {
    let segments = answered.len();
    let mut free = vec![false; segments];
    let mut start = 0;
    for next in 1..=segments {
        if next == segments || cuts_before(next, segments, bptt_depth) {
            let none = !answered[start..next].iter().any(|&a| a);
            free[start..next].iter_mut().for_each(|f| *f = none);
            start = next;
        }
    }
    free
}

/// The weighted negative log-likelihood of `targets` under `logits`, the weighted count of
/// arg-max predictions equal to the targets, and the predictions.
///
/// # Shapes
/// - logits: `[batch, seq, vocab]`
/// - targets, weights: `[batch, seq]`
/// - output: `[1]`, `[1]`, `[batch, seq]`
fn score(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    weights: Tensor<2>,
) -> (Tensor<1>, Tensor<1>, Tensor<2, Int>) {
    let logp = log_softmax(logits.clone(), 2);
    let picked = logp
        .gather(2, targets.clone().unsqueeze_dim::<3>(2))
        .squeeze_dim::<2>(2);
    let nll = -(picked * weights.clone()).sum();
    let pred = logits.argmax(2).squeeze_dim::<2>(2);
    let correct = (pred.clone().equal(targets).float() * weights).sum();
    (nll, correct, pred)
}

/// Per row, the weighted count of answer positions whose prediction is not the target.
///
/// # Shapes
/// - predictions, targets, weights: `[batch, seq]`
/// - output: `[batch]`
fn row_misses(
    predictions: Tensor<2, Int>,
    targets: Tensor<2, Int>,
    weights: Tensor<2>,
) -> Tensor<1> {
    let wrong = predictions.not_equal(targets).float();
    (wrong * weights).sum_dim(1).squeeze_dim::<1>(1)
}

/// [`score`] with the negative log-likelihood and the hits as one operation
/// ([`cross_entropy_totals`]: one kernel and a sum forward, one kernel backward on wgpu,
/// where the log-softmax, gather, arg-max and comparison took about thirty). The same numbers
/// within rounding. Returns the total negative log-likelihood times `scale` (differentiable),
/// the `[nll, correct]` summary (detached), and the predictions only for a batch run without
/// autodiff (evaluation reads them; training does not).
///
/// # Shapes
/// - logits: `[batch, seq, vocab]`
/// - targets, weights: `[batch, seq]`
/// - output: `[1]`, `[2]`, `[batch, seq]`
fn score_rows(
    logits: Tensor<3>,
    targets: Tensor<2, Int>,
    weights: Tensor<2>,
    scale: f64,
) -> (Tensor<1>, Tensor<1>, Option<Tensor<2, Int>>) {
    let [batch, seq, vocab] = logits.dims();
    let rows = batch * seq;
    let device = logits.device();
    let predictions = (!logits.is_autodiff()).then(|| logits.clone().argmax(2).squeeze_dim::<2>(2));
    let totals = cross_entropy_totals(
        logits.reshape([rows, vocab]),
        targets.reshape([rows]),
        weights.reshape([rows]),
    );
    // `scale · nll` as a weighted sum of both totals: on wgpu one kernel fewer per training
    // step than slicing out the first total and dividing it (whose gradient is a zero-filled
    // tensor with the scaled gradient written into it).
    let pick = Tensor::<1>::from_data(TensorData::new(vec![scale as f32, 0.0], [2]), &device);
    let loss = (totals.clone() * pick).sum();
    (loss, totals.detach(), predictions)
}

#[cfg(all(test, feature = "train"))]
mod tests {
    use super::*;
    use crate::model::{Layout, ModelConfig, ModelKind};
    use burn::optim::GradientsParams;

    /// A model small enough to train in a test: 16 token ids, segments of 3, 2 memory tokens.
    fn tiny(kind: ModelKind, bptt_depth: Option<usize>) -> ModelConfig {
        ModelConfig {
            kind,
            vocab_size: 16,
            d_model: 16,
            n_heads: 2,
            d_ff: 32,
            memory_tokens: 2,
            segment_len: 3,
            bptt_depth,
            ..ModelConfig::default()
        }
    }

    /// One row of 12 tokens (4 segments of 3) whose loss is on the last segment only.
    fn last_segment_batch(inputs: Vec<i64>, device: &Device) -> Batch {
        let targets: Vec<i64> = (0..12).map(|i| (i * 5) % 16).collect();
        let weights: Vec<f32> = (0..12).map(|i| if i >= 9 { 1.0 } else { 0.0 }).collect();
        Batch {
            inputs: Tensor::from_data(TensorData::new(inputs, [1, 12]), device),
            targets: Tensor::from_data(TensorData::new(targets, [1, 12]), device),
            weights: Tensor::from_data(TensorData::new(weights, [1, 12]), device),
            answer_tokens: 3,
        }
    }

    /// Per segment of a 4-segment batch whose loss is on the last segment only, how much
    /// gradient reaches the embeddings of the token ids that occur in that segment alone: it
    /// can only get there through the memory passed on from that segment.
    fn gradient_per_segment(layout: Layout, bptt_depth: Option<usize>) -> Vec<f32> {
        let device = Device::flex().autodiff();
        let config = ModelConfig {
            layout,
            ..tiny(ModelKind::Rmt, bptt_depth)
        };
        let model = Model::new(&config, 7, &device);
        // Segment s holds ids 3s+1..=3s+3, each id in one segment only.
        let batch = last_segment_batch((1..=12).collect(), &device);
        let out = forward_batch(&model, &batch, 3);
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        let Model::Rmt(rmt) = &model else {
            unreachable!("an RMT config")
        };
        let g = grads
            .get::<2>(rmt.token_embedding().weight.id)
            .expect("embedding gradient");
        (0..4)
            .map(|s| {
                g.clone()
                    .slice(s![3 * s + 1..3 * s + 4, ..])
                    .abs()
                    .sum()
                    .into_scalar::<f32>()
            })
            .collect()
    }

    /// Windows of `bptt_depth` with no answer are free; a window with one is not.
    #[test]
    fn free_segments_are_the_windows_without_an_answer() {
        let last = [false, false, false, false, false, true];
        // Depth 1: windows [0, 1], [2, 3], [4, 5]; depth 2: [0, 1, 2], [3, 4, 5].
        assert_eq!(
            free_segments(&last, Some(1)),
            [true, true, true, true, false, false]
        );
        assert_eq!(
            free_segments(&last, Some(2)),
            [true, true, true, false, false, false]
        );
        assert_eq!(free_segments(&last, None), [false; 6]);
        let middle = [false, false, true, false, false, false];
        assert_eq!(
            free_segments(&middle, Some(1)),
            [true, true, false, false, true, true]
        );
    }

    /// The windows run without autodiff compute what the graph does: the loss of every
    /// memory model is the same at any depth (the depth changes the gradients, never the
    /// forward pass).
    #[test]
    fn the_loss_is_the_same_at_every_bptt_depth() {
        let device = Device::flex().autodiff();
        let batch = last_segment_batch((0..12).map(|i| (i * 7 + 3) % 16).collect(), &device);
        for kind in [
            ModelKind::Rmt,
            ModelKind::Armt,
            ModelKind::Memxl,
            ModelKind::Infinity,
        ] {
            let losses: Vec<f32> = [None, Some(0), Some(1), Some(2)]
                .into_iter()
                .map(|bptt_depth| {
                    let model = Model::new(&tiny(kind, bptt_depth), 7, &device);
                    let out = forward_batch(&model, &batch, 3);
                    let loss = out.loss.clone().into_scalar::<f32>();
                    // The backward pass runs and reaches the weights.
                    let grads = GradientsParams::from_grads(out.loss.backward(), &model);
                    assert!(
                        !grads.is_empty(),
                        "{kind:?}, depth {bptt_depth:?}: no gradient"
                    );
                    loss
                })
                .collect();
            for l in &losses[1..] {
                assert!(
                    (l - losses[0]).abs() < 1e-5,
                    "{kind:?}: losses {losses:?} differ between depths"
                );
            }
        }
    }

    /// `--bptt-depth k` lets the last segment's loss reach back through exactly `k` earlier
    /// segments' memory: the segments it reaches get gradient, the ones before get none.
    #[test]
    fn the_last_segment_reaches_back_bptt_depth_segments() {
        for layout in [Layout::Decoder, Layout::Encoder] {
            for (depth, reached) in [
                (None, 4),
                (Some(3), 4),
                (Some(2), 3),
                (Some(1), 2),
                (Some(0), 1),
            ] {
                let g = gradient_per_segment(layout, depth);
                for (s, &v) in g.iter().enumerate() {
                    let expect = s >= 4 - reached;
                    assert_eq!(
                        v > 1e-7,
                        expect,
                        "{layout:?}, depth {depth:?}: segment {s} got gradient {v} ({g:?})"
                    );
                    if !expect {
                        assert_eq!(v, 0.0, "a cut path must carry exactly nothing");
                    }
                }
            }
        }
    }
}
