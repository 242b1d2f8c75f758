//! One layer's associative memory of ARMT (Rodkin, Kuratov, Bulatov, Burtsev 2024, arXiv
//! 2407.04841): a key-value store written from the memory tokens' states and read by every row.
//!
//! The store is a matrix `A` `[K, d]` and a normaliser `z` `[K]` over the features `φ(k)` of
//! keys, `φ` the deterministic parameter-free projection DPFP-3 (Schlag, Irie, Schmidhuber 2021)
//! made unit length. The store returns `A·k / (z·k)` for a key `k`. For memory rows `m` (after
//! the layer, scaled to unit root-mean-square), with `k = φ(W_k m)`, `v = W_v m`,
//! `β = σ(W_β m)`:
//!
//! ```text
//! v̄ = A·k / (z·k)                  what the store returns for k now
//! z' = z + Σ γ k / s,  γ = clip(1 − z·k, 0, 1)   (γ detached; a key already stored adds nothing)
//! A' = A + Σ k ⊗ ((z'·k)(v̄ + β (v − v̄)) − A·k) / s
//! ```
//!
//! so that the store returns `v̄ + β (v − v̄)` for `k` afterwards: the delta rule, which rewrites
//! the value stored under `k` and keeps the rest. `s = Σ_j k·k_j` over the keys written together
//! (1 for a key that shares no feature with the others, M for M copies of one key) divides each
//! update, so keys written at once never overshoot (the sum of their updates is one step that
//! reaches at most the target, not M steps past it).
//!
//! The paper's rule adds `β (v − v̄) ⊗ k` to `A`, which returns something else wherever `z·k`
//! is not 1 (`β v + (z·k − β) v̄` for a key not yet full), and takes M steps where M memory
//! tokens write one key. remem's rule returns what it is told to; streaming 64 segments through
//! a qa1 model trained on 8, its last layer's store grew to a third of the size the paper's rule
//! gives it (docs/text.md, which also measures the scaling of the rows below).
//!
//! A row `x` (the layer's input) reads `A·q / (z·q)` with `q = φ(W_q x)`, added to `x`.
//!
//! That is the default rule, [`StoreRule::Normalised`]. [`StoreRule::Delta`] drops the
//! normaliser, as DeltaNet does (Schlag, Irie, Schmidhuber 2021): reads return `A·q`, and a
//! write adds `Σ k ⊗ β (v − A·k) / s`, so `A·k` moves a fraction `β` of the way to `v`, and
//! what was stored is only ever kept or shrunk (`A (I − P)`, `P` between 0 and the identity)
//! before the new values are added. With the normaliser, a key whose `z·k` is small reads `A·k`
//! magnified, and the write that follows keeps the magnified value. Streamed over long text a
//! model trained with the delta rule drifts half as much (docs/text.md); both rules' stores
//! keep filling with the length read. Under the delta rule `z` stays at zero (the state's
//! layout is the same under both rules).
//!
//! Writing a key again replaces its value instead of adding to it, which RMT's memory (a whole
//! new memory computed from the old one each segment) has no direct way to do.
//!
//! `A` and `z` travel as one tensor `[batch, K, d + 1]` (`z` as the last column), so reading
//! the value and its normaliser is one product.

use std::ops::Range;

use burn::nn::Linear;
use burn::prelude::*;
use burn::tensor::activation::{relu, sigmoid};
use serde::{Deserialize, Serialize};

use super::linear::{concat, linear_with};
use super::{Constants, Init, linear, matmul};

/// Shifts of DPFP: features are products of the rectified key with itself rolled by 1..=ν.
pub(crate) const NU: usize = 3;

/// Added to a normaliser before dividing by it (an empty store reads as zero).
pub(crate) const EPS: f64 = 1e-5;

/// How a store is read and written (`model.store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreRule {
    /// Reads divided by the normaliser `z·q`, as in the ARMT paper (the default, and the rule
    /// of every model trained before the option existed).
    #[default]
    Normalised,
    /// No normaliser: reads `A·q`, writes move `A·k` a fraction `β` towards `v` (DeltaNet's
    /// rule); nothing stored is magnified.
    Delta,
}

impl StoreRule {
    /// Whether this is the default, which configs leave unwritten.
    pub fn is_normalised(&self) -> bool {
        *self == StoreRule::Normalised
    }
}

/// One layer's associative memory: the projections that read and write it.
#[derive(Module, Debug)]
pub struct AssociativeMemory {
    /// Rows to query keys `[d, key_dim]`.
    query: Linear,
    /// Memory rows to keys `[d, key_dim]`.
    key: Linear,
    /// Memory rows to values `[d, d]`. Drawn like the others: the reference code starts it at
    /// zero so that a pretrained model is unchanged at first, and from scratch there is
    /// nothing to keep (and a zero start passes no gradient back through the store until it
    /// moves).
    value: Linear,
    /// Memory rows to the strength of their write `[d, 1]` (through a sigmoid).
    strength: Linear,
    /// How the store is read and written.
    #[module(skip)]
    rule: StoreRule,
    /// DPFP's picking matrices, by key width ([`dpfp`]).
    #[module(skip)]
    picks: Constants,
    /// The key, value and strength weights side by side `[d, key_dim + d + 1]` and their
    /// biases, made once for a streaming session or a training step
    /// ([`AssociativeMemory::for_inference`], [`AssociativeMemory::for_training_step`]);
    /// never saved.
    #[module(skip)]
    packed: Option<(Tensor<2>, Option<Tensor<1>>)>,
}

impl AssociativeMemory {
    /// Fresh projections for width `d` and keys of `key_dim` before DPFP, read and written by
    /// `rule`.
    pub fn new(d: usize, key_dim: usize, rule: StoreRule, init: &mut Init) -> Self {
        AssociativeMemory {
            query: init.linear(d, key_dim, false),
            key: init.linear(d, key_dim, false),
            value: init.linear(d, d, false),
            strength: init.linear(d, 1, true),
            rule,
            picks: Constants::default(),
            packed: None,
        }
    }

    /// This memory for a streaming session: the write's three projections packed once into
    /// one product. The packed copy does not follow later changes to the weights (as
    /// [`crate::nn::Attention`]'s).
    pub(crate) fn for_inference(self) -> Self {
        Self {
            packed: Some(self.pack()),
            ..self
        }
    }

    /// This memory for one training step of several segments: the write's projections packed
    /// once as tracked operations on the current parameters, so each segment's write projects
    /// with one product and its gradients add up on the packed weights (as
    /// [`crate::nn::Attention`]'s).
    #[cfg(feature = "train")]
    pub(crate) fn for_training_step(&self) -> Self {
        Self {
            packed: Some(self.pack()),
            ..self.clone()
        }
    }

    /// The key, value and strength weights and biases side by side.
    fn pack(&self) -> (Tensor<2>, Option<Tensor<1>>) {
        concat(&[&self.key, &self.value, &self.strength])
    }

    /// Features per key after DPFP: `2 * NU * key_dim`.
    pub fn features(&self) -> usize {
        2 * NU * self.key.weight.dims()[1]
    }

    /// An empty store for `batch` sequences.
    ///
    /// # Shapes
    /// - output: `[batch, features, d + 1]`
    pub fn empty(&self, batch: usize, device: &Device) -> Tensor<3> {
        let d = self.value.weight.dims()[1];
        Tensor::zeros([batch, self.features(), d + 1], device)
    }

    /// What the store returns for each row (to be added to it).
    ///
    /// # Shapes
    /// - rows: `[batch, n, d]`
    /// - store: `[batch, features, d + 1]`
    /// - output: `[batch, n, d]`
    pub fn read(&self, rows: Tensor<3>, store: Tensor<3>) -> Tensor<3> {
        self.lookup_rows(rows, store, false)
    }

    /// `rows` with what the store returns for each added: the residual stream after the read.
    /// On wgpu the addition is part of the read's kernel.
    ///
    /// # Shapes
    /// as [`AssociativeMemory::read`]
    pub fn read_added(&self, rows: Tensor<3>, store: Tensor<3>) -> Tensor<3> {
        self.lookup_rows(rows, store, true)
    }

    /// [`AssociativeMemory::read`], with `rows` added to it when `add`.
    fn lookup_rows(&self, rows: Tensor<3>, store: Tensor<3>, add: bool) -> Tensor<3> {
        let normalised = self.rule == StoreRule::Normalised;
        let residual = add.then(|| rows.clone());
        // Streaming on wgpu: DPFP and the lookup in one kernel (`crate::ops::store_read`).
        if crate::ops::store_read::serves(&rows) {
            let keys = linear(&self.query, rows);
            return crate::ops::store_read::store_read(keys, store, residual, normalised);
        }
        // Training on wgpu: the same kernel, and two for its backward.
        if crate::ops::store_read::serves_training(&rows) {
            let keys = linear(&self.query, rows);
            return crate::ops::store_read::store_read_train(keys, store, residual, normalised);
        }
        let q = dpfp(linear(&self.query, rows), &self.picks);
        let read = match self.rule {
            StoreRule::Normalised => lookup(q, store).0,
            StoreRule::Delta => {
                let d = store.dims()[2] - 1;
                matmul(q, store.slice(s![.., .., 0..d]))
            }
        };
        match residual {
            Some(rows) => rows + read,
            None => read,
        }
    }

    /// The key (before DPFP), value and strength (before the sigmoid) projections of memory
    /// rows side by side, from the rows already at unit root-mean-square ([`scaled_rows`]):
    /// one product, with the weights packed for the session or the training step where they
    /// are.
    ///
    /// # Shapes
    /// - scaled: `[batch, M, d]`
    /// - output: `[batch, M, key_dim + d + 1]`
    pub(crate) fn projections(&self, scaled: Tensor<3>) -> Tensor<3> {
        let (w, b) = match &self.packed {
            // An inference copy's packed weights serve inference only; a training step's
            // (tracked) serve that step.
            Some((w, b)) if w.is_autodiff() == scaled.is_autodiff() => (w.clone(), b.clone()),
            _ => self.pack(),
        };
        linear_with(scaled, w, b)
    }

    /// The store after writing the memory rows `rows` into it.
    ///
    /// # Shapes
    /// - rows: `[batch, M, d]`
    /// - store and output: `[batch, features, d + 1]`
    pub fn write(&self, rows: Tensor<3>, store: Tensor<3>) -> Tensor<3> {
        let m = rows.dims()[1];
        self.write_rows(rows, 0..m, store)
    }

    /// The store after writing rows `range` of a layer's rows `h` (its memory rows) into it:
    /// on wgpu the rows are read where they lie ([`scaled_rows`]), not sliced out first.
    ///
    /// # Shapes
    /// - h: `[batch, n, d]`, with `range` within `0..n`
    /// - store and output: `[batch, features, d + 1]`
    pub fn write_rows(&self, h: Tensor<3>, range: Range<usize>, store: Tensor<3>) -> Tensor<3> {
        let d = store.dims()[2] - 1;
        let (key_dim, normalised) = (
            self.key.weight.dims()[1],
            self.rule == StoreRule::Normalised,
        );
        let rows = scaled_rows(h, range);
        // Streaming on wgpu: all after the projections in one kernel (`crate::ops::store_write`).
        if crate::ops::store_write::serves(&rows, key_dim) {
            return crate::ops::store_write::store_write(self.projections(rows), store, normalised);
        }
        // Training on wgpu: the same kernel, and one for its backward.
        if crate::ops::store_write::serves_training(&rows, key_dim) {
            let projections = self.projections(rows);
            return crate::ops::store_write::store_write_train(projections, store, normalised);
        }
        let k = dpfp(linear(&self.key, rows.clone()), &self.picks);
        let v = linear(&self.value, rows.clone());
        let beta = sigmoid(linear(&self.strength, rows));
        // How much each key shares with the others written alongside it (1 when it shares
        // nothing, M when all M are one key): each update is divided by it, so keys written
        // together never overshoot.
        let shared = matmul(k.clone(), k.clone().swap_dims(1, 2)).sum_dim(2);
        if self.rule == StoreRule::Delta {
            let (a, z) = (
                store.clone().slice(s![.., .., 0..d]),
                store.slice(s![.., .., d..]),
            );
            let old = matmul(k.clone(), a.clone());
            let update = beta * (v - old) / shared;
            return Tensor::cat(vec![a + matmul(k.swap_dims(1, 2), update), z], 2);
        }
        // What the store returns for each key now, and the value it should return after.
        let (old, norm) = lookup(k.clone(), store.clone());
        let stored = old.clone() * (norm.clone() + EPS);
        let target = old.clone() + beta * (v - old);
        let gamma = ((norm.neg() + 1.0).clamp(0.0, 1.0) / shared.clone()).detach();
        let z =
            store.clone().slice(s![.., .., d..d + 1]) + matmul(k.clone().swap_dims(1, 2), gamma);
        let grown = matmul(k.clone(), z.clone());
        let update = (target * grown - stored) / shared;
        let a = store.slice(s![.., .., 0..d]) + matmul(k.swap_dims(1, 2), update);
        Tensor::cat(vec![a, z], 2)
    }
}

/// Rows `range` of a layer's rows `h` (its memory rows) at unit root-mean-square, as a store is
/// written from them: what the store holds cannot grow with the residual stream it is read
/// back into.
///
/// # Shapes
/// - h: `[batch, n, d]`
/// - output: `[batch, range.len(), d]`
pub(crate) fn scaled_rows(h: Tensor<3>, range: Range<usize>) -> Tensor<3> {
    // On wgpu one kernel each way, reading the rows in place (`crate::ops::unit_rms`); the CPU
    // keeps Burn's operations.
    if crate::ops::unit_rms::serves(&h) {
        return crate::ops::unit_rms::unit_rms_rows(h, range.start, range.len(), 1e-6);
    }
    let rows = h.slice(s![.., range, ..]);
    rows.clone() / (rows.powi_scalar(2).mean_dim(2) + 1e-6).sqrt()
}

/// The value stored under each feature vector, and its normaliser `z·k`.
///
/// # Shapes
/// - keys: `[batch, n, features]`
/// - store: `[batch, features, d + 1]`
/// - output: `[batch, n, d]`, `[batch, n, 1]`
fn lookup(keys: Tensor<3>, store: Tensor<3>) -> (Tensor<3>, Tensor<3>) {
    let d = store.dims()[2] - 1;
    let both = matmul(keys, store);
    let norm = both.clone().slice(s![.., .., d..d + 1]);
    let values = both.slice(s![.., .., 0..d]) / (norm.clone() + EPS);
    (values, norm)
}

/// DPFP-ν features of `x`, unit length: `r = [relu(x), relu(-x)]`, then `r * roll(r, j)` for
/// `j = 1..=ν` side by side (`roll` moves entry `i` to `i + j`, cyclically).
///
/// Each feature is the product of two entries of `r`, and each entry of `r` is an entry of `x`
/// or its negative, rectified: the features are `relu(x·L) * relu(x·R)` for two fixed matrices
/// ([`pick_matrix`]) whose columns each hold one ±1. Two small products replace the rolls'
/// slices and joins, which wgpu ran as a dozen copy kernels per call; a product whose columns
/// hold one ±1 each is exact, so the features are the same numbers. `picks` keeps the
/// matrices, uploaded once per key width and device.
///
/// # Shapes
/// - x: `[batch, n, key_dim]`
/// - output: `[batch, n, 2 * ν * key_dim]`
pub fn dpfp(x: Tensor<3>, picks: &Constants) -> Tensor<3> {
    let k = x.dims()[2];
    let device = x.device();
    let [left, right] =
        [0, 1].map(|side| picks.tensor(&[k, side], &device, || pick_matrix(k, side, &device)));
    let phi = relu(linear_with(x.clone(), left, None)) * relu(linear_with(x, right, None));
    let length = (phi.clone().powi_scalar(2).sum_dim(2) + 1e-12).sqrt();
    phi / length
}

/// One of DPFP's picking matrices `[k, 2νk]` for keys of width `k`. With `r = [x, -x]` (`w = 2k`
/// entries), column `(j - 1)·w + i` picks `r[i]` (side 0) or `r[(i - j) mod w]` (side 1): a 1 in
/// the row of that entry of `x`, or a −1 for the negated half.
fn pick_matrix(k: usize, side: usize, device: &Device) -> Tensor<2> {
    Tensor::from_data(
        TensorData::new(pick_values(k, side), [k, 2 * NU * k]),
        device,
    )
}

/// The entries of [`pick_matrix`], row by row.
pub(crate) fn pick_values(k: usize, side: usize) -> Vec<f32> {
    let w = 2 * k;
    let mut m = vec![0f32; k * NU * w];
    for j in 1..=NU {
        for i in 0..w {
            let e = if side == 0 { i } else { (i + w - j) % w };
            m[(e % k) * NU * w + (j - 1) * w + i] = if e < k { 1.0 } else { -1.0 };
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    fn host(t: Tensor<3>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
    }

    /// DPFP against the definition written out entry by entry.
    #[test]
    fn dpfp_matches_its_definition() {
        let device = Device::flex();
        let x = [0.5f32, -1.0, 2.0, 0.25, -0.75];
        let got = host(dpfp(
            Tensor::from_data(TensorData::new(x.to_vec(), [1, 1, 5]), &device),
            &Constants::default(),
        ));
        let r: Vec<f32> = x
            .iter()
            .map(|v| v.max(0.0))
            .chain(x.iter().map(|v| (-v).max(0.0)))
            .collect();
        let w = r.len();
        let mut want: Vec<f32> = (1..=NU)
            .flat_map(|j| (0..w).map(move |i| (i, j)))
            .map(|(i, j)| r[i] * r[(i + w - j) % w])
            .collect();
        let length = want.iter().map(|v| v * v).sum::<f32>().sqrt();
        want.iter_mut().for_each(|v| *v /= length);
        assert_eq!(got.len(), 2 * NU * 5);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }

    /// A memory whose keys are a row's first four features, whose values are the whole row
    /// (at unit root-mean-square), and whose writes are at full strength.
    fn identity_memory(rule: StoreRule, device: &Device) -> AssociativeMemory {
        let mut memory = AssociativeMemory::new(8, 4, rule, &mut Init::new(1, device));
        let first_four: Vec<f32> = (0..8)
            .flat_map(|i| (0..4).map(move |j| if i == j { 1.0 } else { 0.0 }))
            .collect();
        let pick = Tensor::<2>::from_data(TensorData::new(first_four, [8, 4]), device);
        memory.query.weight = Param::from_tensor(pick.clone());
        memory.key.weight = Param::from_tensor(pick);
        memory.value.weight = Param::from_tensor(Tensor::eye(8, device));
        memory.strength = Linear {
            weight: Param::from_tensor(Tensor::zeros([8, 1], device)),
            bias: Some(Param::from_tensor(Tensor::full([1], 40.0, device))),
        };
        memory
    }

    /// A row at unit root-mean-square: what the store holds for it.
    fn unit(row: [f32; 8]) -> Vec<f32> {
        let rms = (row.iter().map(|v| v * v).sum::<f32>() / 8.0).sqrt();
        row.iter().map(|v| v / rms).collect()
    }

    /// A read equals `want` at unit root-mean-square (what the store holds for it).
    fn assert_reads(got: Tensor<3>, want: [f32; 8], what: &str) {
        let (got, want) = (host(got), unit(want));
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-3, "{what}: read {got:?}, want {want:?}");
        }
    }

    fn rows(rows: &[[f32; 8]], device: &Device) -> Tensor<3> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [1, rows.len(), 8]), device)
    }

    /// The delta rule: writing a key again replaces its value and leaves the other keys'
    /// values as they were; an empty store reads zero.
    #[test]
    fn a_rewritten_key_returns_its_new_value_and_the_others_keep_theirs() {
        let device = Device::flex();
        for rule in [StoreRule::Normalised, StoreRule::Delta] {
            rewrite(rule, &device);
        }
    }

    fn rewrite(rule: StoreRule, device: &Device) {
        let memory = identity_memory(rule, device);
        // Keys A = [1, 1, 0, 0] and B = [0, 0, 1, 1] have disjoint DPFP features.
        let a1 = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let b = [0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0];
        let a2 = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 3.0, 0.0];
        let ask_a = rows(&[[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], device);
        let ask_b = rows(&[[0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0]], device);
        let empty = memory.empty(1, device);
        assert!(
            host(memory.read(ask_a.clone(), empty.clone()))
                .iter()
                .all(|v| *v == 0.0)
        );

        let once = memory.write(rows(&[a1, b], device), empty);
        let twice = memory.write(rows(&[a2], device), once.clone());
        assert_reads(memory.read(ask_a.clone(), once), a1, "A after one write");
        assert_reads(memory.read(ask_a, twice.clone()), a2, "A after its rewrite");
        assert_reads(memory.read(ask_b, twice), b, "B after A's rewrite");
    }

    /// M memory rows writing one key at once take one step, not M: the store returns the new
    /// value, where adding the M updates would return `M·new − (M − 1)·old`.
    #[test]
    fn keys_written_together_take_one_step() {
        let device = Device::flex();
        for rule in [StoreRule::Normalised, StoreRule::Delta] {
            together(rule, &device);
        }
    }

    fn together(rule: StoreRule, device: &Device) {
        let memory = identity_memory(rule, device);
        let old = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0];
        let new = [1.0, 1.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0];
        let ask = rows(&[[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], device);
        let once = memory.write(rows(&[old], device), memory.empty(1, device));
        let thrice = memory.write(rows(&[new, new, new], device), once);
        assert_reads(memory.read(ask, thrice), new, "the rewritten key");
    }

    /// A write at strength `β` moves the stored value that fraction of the way: at `β = 1/2`
    /// the store returns the mean of the old value and the new.
    #[test]
    fn a_write_moves_the_value_by_its_strength() {
        let device = Device::flex();
        for rule in [StoreRule::Normalised, StoreRule::Delta] {
            let full = identity_memory(rule, &device);
            let mut half = full.clone();
            half.strength.bias = Some(Param::from_tensor(Tensor::zeros([1], &device)));
            let old = [1.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0];
            let new = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0];
            let once = full.write(rows(&[old], &device), full.empty(1, &device));
            let twice = half.write(rows(&[new], &device), once);
            let ask = rows(&[[1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], &device);
            let got = host(full.read(ask, twice));
            let (old, new) = (unit(old), unit(new));
            for i in 0..8 {
                let want = (old[i] + new[i]) / 2.0;
                assert!((got[i] - want).abs() < 1e-3, "{rule:?}: read {got:?}");
            }
        }
    }

    /// d/d(rows) and d/d(store) of a read after a write, autodiff against central
    /// differences.
    #[test]
    fn gradients_agree_with_finite_differences() {
        for rule in [StoreRule::Normalised, StoreRule::Delta] {
            gradients(rule);
        }
    }

    fn gradients(rule: StoreRule) {
        let device = Device::flex().autodiff();
        let memory = AssociativeMemory::new(6, 3, rule, &mut Init::new(7, &device));
        let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
        device.seed(7);
        let m0 = Tensor::<3>::random([1, 2, 6], normal, &device).detach();
        // A normaliser above 1 for every key: a write adds nothing to it (`γ` = 0 where it is
        // clipped, so the detached `γ` is no approximation here).
        let values = Tensor::<3>::random([1, 18, 6], normal, &device);
        let norms = Tensor::<3>::random([1, 18, 1], normal, &device).abs() + 5.0;
        let s0 = Tensor::cat(vec![values, norms], 2).detach();
        let x = Tensor::<3>::random([1, 3, 6], normal, &device).detach();
        let w = Tensor::<3>::random([1, 3, 6], normal, &device).detach();
        let f = |m: Tensor<3>, s: Tensor<3>| {
            (memory.read(x.clone(), memory.write(m, s)) * w.clone()).sum()
        };
        let (m, s) = (m0.clone().require_grad(), s0.clone().require_grad());
        let grads = f(m.clone(), s.clone()).backward();
        let analytic = [host(m.grad(&grads).unwrap()), host(s.grad(&grads).unwrap())];
        let eps = 1e-2f32;
        for (which, grad) in analytic.iter().enumerate() {
            let base = host(if which == 0 { m0.clone() } else { s0.clone() });
            let shape = if which == 0 { [1, 2, 6] } else { [1, 18, 7] };
            let scale = grad.iter().fold(1e-3f32, |a, g| a.max(g.abs()));
            for i in 0..base.len() {
                let at = |delta: f32| -> f32 {
                    let mut v = base.clone();
                    v[i] += delta;
                    let t = Tensor::<3>::from_data(TensorData::new(v, shape), &device);
                    let (m, s) = if which == 0 {
                        (t, s0.clone())
                    } else {
                        (m0.clone(), t)
                    };
                    f(m, s).into_scalar::<f32>()
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                assert!(
                    (numeric - grad[i]).abs() <= 3e-2 * scale,
                    "{} entry {i}: autodiff {} vs finite difference {numeric}",
                    ["memory rows", "store"][which],
                    grad[i]
                );
            }
        }
    }

    /// A store of `features x (d + 1)` random entries: `A` standard normal, every normaliser
    /// entry `z` (the last column) equal to `z`.
    fn random_store(memory: &AssociativeMemory, z: f32, device: &Device) -> Tensor<3> {
        let features = memory.features();
        let d = memory.value.weight.dims()[1];
        let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
        let a = Tensor::<3>::random([1, features, d], normal, device);
        Tensor::cat(vec![a, Tensor::full([1, features, 1], z, device)], 2)
    }

    fn size(store: &Tensor<3>) -> f32 {
        let d = store.dims()[2] - 1;
        let a = store.clone().slice(s![.., .., 0..d]);
        a.powi_scalar(2).sum().sqrt().into_scalar::<f32>()
    }

    /// Writing zero values only ever shrinks a delta store (`A' = A (I − P)` with `P`
    /// between 0 and the identity: nothing stored is magnified), where the normalised rule
    /// magnifies what a key with a small normaliser reads and keeps it: the same write of
    /// nothing grows that store.
    #[test]
    fn writing_nothing_never_grows_a_delta_store_but_grows_a_normalised_one() {
        let device = Device::flex();
        let normal = burn::tensor::Distribution::Normal(0.0, 1.0);
        for rule in [StoreRule::Delta, StoreRule::Normalised] {
            let mut memory = AssociativeMemory::new(16, 4, rule, &mut Init::new(3, &device));
            memory.value.weight = Param::from_tensor(Tensor::zeros([16, 16], &device));
            device.seed(5);
            let mut store = random_store(&memory, 0.05, &device);
            let mut grew = 0;
            for _ in 0..200 {
                let before = size(&store);
                store = memory.write(Tensor::random([1, 4, 16], normal, &device), store);
                let after = size(&store);
                if after > before * (1.0 + 1e-5) {
                    grew += 1;
                }
                if rule == StoreRule::Delta {
                    assert!(after <= before * (1.0 + 1e-5), "{before} -> {after}");
                }
            }
            if rule == StoreRule::Normalised {
                assert!(grew > 0, "no write of nothing grew the normalised store");
            }
        }
    }
}
