//! What remem's CPU kernels ([`super::gelu`], [`super::norm`], [`super::softmax`]) share: f32
//! views of flex tensors and a loop over chunks on the thread pool.

use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{Bytes, DType};

/// Whether the kernels in this crate can take `t`: f32. Other dtypes go to Burn's own ops.
pub(crate) fn is_f32(t: &FlexTensor) -> bool {
    t.dtype() == DType::F32
}

/// The elements of the contiguous f32 tensor `t`, in row-major order.
///
/// # Panics
/// if `t` is not contiguous (call [`FlexTensor::to_contiguous`] first)
pub(crate) fn f32s(t: &FlexTensor) -> &[f32] {
    let (start, end) = t.layout().contiguous_offsets().expect("contiguous tensor");
    &t.storage::<f32>()[start..end]
}

/// `t` as a contiguous f32 tensor whose buffer nothing else holds, starting at element 0, so it
/// can be overwritten: `t` itself when it already is one (as at inference, and for most
/// gradients), else a copy.
pub(crate) fn owned(t: FlexTensor) -> FlexTensor {
    let t = t.to_contiguous();
    if t.is_unique() && t.layout().contiguous_offsets().is_some_and(|(s, _)| s == 0) {
        return t;
    }
    new(f32s(&t).to_vec(), &t)
}

/// The elements of an [`owned`] tensor, to overwrite.
pub(crate) fn f32s_mut(t: &mut FlexTensor) -> &mut [f32] {
    let n = t.layout().num_elements();
    &mut t.storage_mut::<f32>()[..n]
}

/// A contiguous f32 tensor of `values` with the shape of `like`.
pub(crate) fn new(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    let shape = like.layout().shape().clone();
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// `g(start, chunk)` over the chunks of `out` of `len` elements (the last may be shorter; `start`
/// is the chunk's first index), on the thread pool when there is more than one chunk (always on
/// the calling thread on wasm). Returns what each call returned, in chunk order.
pub(crate) fn for_chunks<R: Send>(
    out: &mut [f32],
    len: usize,
    g: impl Fn(usize, &mut [f32]) -> R + Sync,
) -> Vec<R> {
    let len = len.max(1);
    let run = |(c, chunk): (usize, &mut [f32])| g(c * len, chunk);
    // One chunk runs on the calling thread: handing it to the pool costs more than it saves.
    #[cfg(not(target_family = "wasm"))]
    if out.len() > len {
        use rayon::prelude::*;
        return out.par_chunks_mut(len).enumerate().map(run).collect();
    }
    out.chunks_mut(len).enumerate().map(run).collect()
}

/// Elements per task on the thread pool: smaller chunks cost more in hand-offs than they gain.
pub(crate) const CHUNK: usize = 1 << 14;

/// A chunk length for [`for_chunks`] that holds whole rows of `row_len` and about [`CHUNK`]
/// elements.
pub(crate) fn rows_chunk(row_len: usize) -> usize {
    row_len.max(1) * (CHUNK / row_len.max(1)).max(1)
}

/// What the kernels' tests share.
#[cfg(test)]
pub(crate) mod tests {
    use burn::prelude::*;

    /// The elements of `t` as f32.
    pub(crate) fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().convert::<f32>().try_to_vec().unwrap()
    }

    /// The largest elementwise difference of `a` and `b`.
    pub(crate) fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }
}
