//! Attention masks. Convention everywhere in remem: `true` means "may attend".

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
