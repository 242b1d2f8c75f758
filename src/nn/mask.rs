//! Attention masks. Convention everywhere in remem: `true` means "may attend".

use std::sync::{Arc, Mutex};

use burn::prelude::*;

/// A square or rectangular attention mask kept on the host (rows = queries, columns = keys).
///
/// Masks are small (a few hundred rows) and built once per segment shape, so they live as plain
/// booleans until [`Mask::bias`] turns them into the additive bias the attention adds to its
/// scores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    rows: usize,
    cols: usize,
    allowed: Vec<bool>,
}

/// The score given to blocked positions before the softmax; exp() of it is exactly 0 in f32.
/// Kernels treat a bias at or below it as a blocked key and may skip it.
pub(crate) const BLOCKED: f32 = -1.0e9;

impl Mask {
    /// A mask where nothing may attend to anything; open it up with [`Mask::allow`].
    pub fn blocked(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            allowed: vec![false; rows * cols],
        }
    }

    /// A mask where every query may attend to every key (an encoder's).
    pub fn open(rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            allowed: vec![true; rows * cols],
        }
    }

    /// Allow query `row` to attend to key `col`.
    pub fn allow(&mut self, row: usize, col: usize) {
        assert!(
            row < self.rows && col < self.cols,
            "mask index out of range"
        );
        self.allowed[row * self.cols + col] = true;
    }

    /// Whether query `row` may attend to key `col`.
    pub fn allowed(&self, row: usize, col: usize) -> bool {
        self.allowed[row * self.cols + col]
    }

    /// `[rows, cols]`.
    pub fn dims(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }

    /// The mask as rows of booleans, for tests and pictures.
    pub fn to_rows(&self) -> Vec<Vec<bool>> {
        self.allowed
            .chunks(self.cols)
            .map(<[bool]>::to_vec)
            .collect()
    }

    /// The mask as text, one string per row: `1` = may attend, `.` = blocked.
    pub fn to_text(&self) -> Vec<String> {
        self.allowed
            .chunks(self.cols)
            .map(|r| r.iter().map(|&a| if a { '1' } else { '.' }).collect())
            .collect()
    }

    /// The additive bias for attention scores: 0 where allowed, a large negative number where not.
    ///
    /// # Shapes
    /// - output: `[rows, cols]`
    pub fn bias(&self, device: &Device) -> Tensor<2> {
        let values: Vec<f32> = self
            .allowed
            .iter()
            .map(|&a| if a { 0.0 } else { BLOCKED })
            .collect();
        Tensor::from_data(TensorData::new(values, [self.rows, self.cols]), device)
    }
}

/// Constant tensors a model has built, by key: attention biases ([`Constants::get`]) and other
/// fixed matrices (DPFP's picks, [`Constants::tensor`]), each built on the host and uploaded
/// once per key and device, not once per segment. A model's clones share its cache.
#[derive(Debug, Clone, Default)]
pub struct Constants(Arc<Mutex<Vec<Cached>>>);

#[derive(Debug)]
struct Cached {
    key: Vec<usize>,
    device: Device,
    autodiff: bool,
    tensor: Tensor<2>,
}

/// Distinct keys kept; a stream has at most a few (full segments, one partial last segment).
const CACHED_SHAPES: usize = 16;

impl Constants {
    /// The bias of the mask `build` makes for shape `key`, on `device`: built and uploaded the
    /// first time, then reused.
    pub fn get(&self, key: &[usize], device: &Device, build: impl FnOnce() -> Mask) -> Tensor<2> {
        self.tensor(key, device, || build().bias(device))
    }

    /// The matrix `build` makes for `key` on `device`: built the first time, then reused. A
    /// cache serves one kind of constant, so its keys need only tell shapes apart.
    pub fn tensor(
        &self,
        key: &[usize],
        device: &Device,
        build: impl FnOnce() -> Tensor<2>,
    ) -> Tensor<2> {
        let autodiff = device.is_autodiff();
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let hit = cache
            .iter()
            .find(|c| c.key == key && c.autodiff == autodiff && &c.device == device);
        if let Some(c) = hit {
            return c.tensor.clone();
        }
        let tensor = build();
        if cache.len() == CACHED_SHAPES {
            cache.remove(0);
        }
        cache.push(Cached {
            key: key.to_vec(),
            device: device.clone(),
            autodiff,
            tensor: tensor.clone(),
        });
        tensor
    }
}

/// The usual causal mask over `len` positions: position `i` sees `0..=i`.
pub fn causal_mask(len: usize) -> Mask {
    let mut mask = Mask::blocked(len, len);
    for i in 0..len {
        for j in 0..=i {
            mask.allow(i, j);
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_builds_each_shape_once_per_device() {
        let cache = Constants::default();
        let device = Device::flex();
        let mut built = 0;
        for len in [3, 3, 2, 3] {
            let bias = cache.get(&[len], &device, || {
                built += 1;
                causal_mask(len)
            });
            assert_eq!(bias.into_data(), causal_mask(len).bias(&device).into_data());
        }
        assert_eq!(built, 2, "shapes 3 and 2, once each");
        cache.get(&[3], &device.clone().autodiff(), || {
            built += 1;
            causal_mask(3)
        });
        assert_eq!(built, 3, "an autodiff device gets its own tensor");
    }

    #[test]
    fn causal_mask_is_lower_triangular() {
        let rows = causal_mask(3).to_rows();
        assert_eq!(
            rows,
            vec![
                vec![true, false, false],
                vec![true, true, false],
                vec![true, true, true]
            ]
        );
    }
}
