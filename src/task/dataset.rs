//! A task as a Burn [`Dataset`]: item `i` is generated from `(seed, i)`, so any split is
//! reproducible and can be indexed in any order.

use std::convert::Infallible;

use burn::data::dataset::Dataset;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Sample, Task};

/// `len` samples of `task`, drawn from `seed`.
#[derive(Debug, Clone)]
pub struct TaskDataset {
    task: Task,
    seed: u64,
    len: usize,
}

impl TaskDataset {
    /// A dataset of `len` samples.
    pub fn new(task: Task, seed: u64, len: usize) -> Self {
        Self { task, seed, len }
    }

    /// Sample `index` (any index: the dataset's length only bounds iteration).
    pub fn sample(&self, index: usize) -> Sample {
        self.task.sample(&mut self.rng(index))
    }

    /// Whether sample `index` is a late story ([`Task::is_late`]).
    pub fn is_late(&self, index: usize) -> bool {
        self.task.is_late(&mut self.rng(index))
    }

    /// Sample `index`, or the error of a text file that can no longer be read.
    pub fn try_sample(&self, index: usize) -> crate::error::Result<Sample> {
        self.task.try_sample(&mut self.rng(index))
    }

    /// The generator sample `index` is drawn from.
    fn rng(&self, index: usize) -> StdRng {
        StdRng::seed_from_u64(mix(self.seed, index as u64))
    }

    /// The task the samples come from.
    pub fn task(&self) -> &Task {
        &self.task
    }
}

/// SplitMix64: spreads `(seed, index)` over the RNG's seed space.
pub(crate) fn mix(seed: u64, index: u64) -> u64 {
    let mut z = seed ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Generating a sample cannot fail.
impl Dataset<Sample, Infallible> for TaskDataset {
    fn get(&self, index: usize) -> Result<Sample, Infallible> {
        assert!(
            index < self.len,
            "index {index} past the dataset's {} items",
            self.len
        );
        Ok(self.sample(index))
    }

    fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskConfig;

    #[test]
    fn same_seed_same_items_other_seed_other_items() {
        let task = Task::new(TaskConfig::default(), 8).unwrap();
        let a = TaskDataset::new(task.clone(), 7, 10);
        let b = TaskDataset::new(task.clone(), 7, 10);
        let c = TaskDataset::new(task, 8, 10);
        assert_eq!(a.get(3), b.get(3));
        assert_ne!(a.get(3), c.get(3));
        assert_ne!(a.get(3), a.get(4));
        assert_eq!(a.len(), 10);
        assert_eq!(a.get(9).unwrap(), a.sample(9));
    }
}
