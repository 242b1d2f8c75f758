//! A segment's layout rows (memory rows and token embeddings, each plus its learned position)
//! as one autodiff operation: one WGSL kernel forward and one backward on wgpu.
//!
//! RMT's step starts by building `[read memory | segment | write memory]` and adding the
//! position table. From Burn's operations that is a copy of the segment's token ids, the
//! embedding's gather, the join of the memory and the tokens, and the positions' add forward,
//! and backward a zero-filled table with a scatter into it, the join's split, the two memory
//! gradients' sum and the positions' sum over the batch: about fourteen kernels per segment of
//! a training step on wgpu. [`embed_layout`] records one operation: on wgpu one dispatch writes
//! the rows (`shaders/embed.wgsl`) and one writes all three gradients
//! (`shaders/embed_backward.wgsl`), each element summing what reached it in a fixed order
//! ([`wgpu`]). The CPU and other GPU runtimes take the reference written with Burn's
//! operations (the models call this only on GPUs; the CPU keeps Burn's operations).

mod wgpu;

#[cfg(feature = "train")]
use burn::backend::Autodiff;
#[cfg(feature = "train")]
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::wgpu::CubeBackend;
use burn::backend::{
    Backend, Dispatch, Flex, TensorMetadata, backend_extension,
    tensor::{FloatTensor, IntTensor},
};
use burn::prelude::*;
use burn::tensor::Slice;

use crate::ops::wgsl::{agrees, check_on, read};

/// A segment's layout rows as a backend operation, so autodiff records one node.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait EmbedBackend: Backend {
    /// `[memory | table[tokens] | memory]` (the last part only when `write`) plus each row's
    /// position: rows `r < M + T` take position `r`, the write rows the table's last `M`.
    /// `table` `[V, D]`, `tokens` `[B, T]`, `memory` `[B, M, D]`, `positions` `[P, D]` with
    /// `P >= 2M + T` when `write`, else `P >= M + T`: `[B, L, D]`, `L = M + T (+ M)`.
    #[fusion(dtype = table, shape = rows_shape(tokens, memory, write))]
    fn embed_layout(
        table: FloatTensor<Self>,
        tokens: IntTensor<Self>,
        memory: FloatTensor<Self>,
        positions: FloatTensor<Self>,
        write: bool,
    ) -> FloatTensor<Self> {
        reference::<Self>(table, tokens, memory, positions, write)
    }

    /// The gradients of the table, the memory (`memory` rows) and the positions from the
    /// rows' gradient `grad` (`[B, L, D]`; with write rows when `L > M + T`). The table and
    /// the positions only give their shapes.
    #[fusion(meta = gradient_specs)]
    fn embed_layout_backward(
        table: FloatTensor<Self>,
        tokens: IntTensor<Self>,
        positions: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        memory: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        backward_from_ops::<Self>(table, tokens, positions, grad, memory)
    }
}

/// The rows' shape `[B, M + T (+ M), D]`, for the fusion stream.
fn rows_shape(tokens: &Shape, memory: &Shape, write: &bool) -> Shape {
    let m = memory[1];
    Shape::new([
        memory[0],
        m + tokens[1] + usize::from(*write) * m,
        memory[2],
    ])
}

/// The gradients' shapes and type, for the fusion stream: the table's, the memory's, the
/// positions'.
fn gradient_specs(
    table: &TensorSpec,
    _tokens: &TensorSpec,
    positions: &TensorSpec,
    grad: &TensorSpec,
    memory: &usize,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    let (batch, d) = (grad.shape[0], grad.shape[2]);
    (
        table.clone(),
        TensorSpec::new(Shape::new([batch, *memory, d]), grad.dtype),
        positions.clone(),
    )
}

/// A segment's layout rows: the memory, the tokens' embeddings and (when `write`) the memory
/// again, each row plus its learned position; the write rows take the position table's last
/// `M` rows, where they sit in a whole segment.
///
/// # Shapes
/// - table: `[vocab, d]`
/// - tokens: `[batch, t]`
/// - memory: `[batch, m, d]`, `m >= 1`
/// - positions: `[p, d]`, `p >= 2m + t` when `write`, else `p >= m + t`
/// - output: `[batch, m + t (+ m), d]`
pub fn embed_layout(
    table: Tensor<2>,
    tokens: Tensor<2, Int>,
    memory: Tensor<3>,
    positions: Tensor<2>,
    write: bool,
) -> Tensor<3> {
    let [batch, t] = tokens.dims();
    let [mem_batch, m, d] = memory.dims();
    let [p, pd] = positions.dims();
    assert!(
        mem_batch == batch && m >= 1 && table.dims()[1] == d && pd == d,
        "embed_layout: table {:?}, tokens {:?}, memory {:?}, positions {:?} do not fit",
        table.dims(),
        tokens.dims(),
        memory.dims(),
        positions.dims()
    );
    assert!(
        p >= m + t + usize::from(write) * m,
        "embed_layout: {p} positions for {m} memory rows and {t} tokens"
    );
    check_kernel(&table.device());
    if table.is_autodiff() {
        check_backward_kernel(&table.device());
    }
    Tensor::from_dispatch(<Dispatch as EmbedBackend>::embed_layout(
        table.into_dispatch(),
        tokens.into_dispatch(),
        memory.into_dispatch(),
        positions.into_dispatch(),
        write,
    ))
}

/// `n` entries of `x` along `dim` from `start`.
fn rows<B: Backend>(x: FloatTensor<B>, dim: usize, start: usize, n: usize) -> FloatTensor<B> {
    let mut slices = vec![Slice::full(); x.shape().num_dims()];
    slices[dim] = Slice::new(start as isize, Some((start + n) as isize), 1);
    B::float_slice(x, &slices)
}

/// [`EmbedBackend::embed_layout`] from the backend's tensor operations.
fn reference<B: Backend>(
    table: FloatTensor<B>,
    tokens: IntTensor<B>,
    memory: FloatTensor<B>,
    positions: FloatTensor<B>,
    write: bool,
) -> FloatTensor<B> {
    let (m, t, p) = (memory.shape()[1], tokens.shape()[1], positions.shape()[0]);
    let x = B::embedding(table, tokens);
    let (h, pos) = match write {
        true => (
            B::float_cat(vec![memory.clone(), x, memory], 1),
            B::float_cat(
                vec![
                    rows::<B>(positions.clone(), 0, 0, m + t),
                    rows::<B>(positions, 0, p - m, m),
                ],
                0,
            ),
        ),
        false => (
            B::float_cat(vec![memory, x], 1),
            rows::<B>(positions, 0, 0, m + t),
        ),
    };
    let pos_shape = pos.shape();
    let pos = B::float_reshape(pos, Shape::new([1, pos_shape[0], pos_shape[1]]));
    B::float_add(h, pos)
}

/// [`EmbedBackend::embed_layout_backward`] from the backend's tensor operations.
fn backward_from_ops<B: Backend>(
    table: FloatTensor<B>,
    tokens: IntTensor<B>,
    positions: FloatTensor<B>,
    grad: FloatTensor<B>,
    m: usize,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let t = tokens.shape()[1];
    let rows_len = grad.shape()[1];
    let write = rows_len > m + t;
    let dtable = B::embedding_backward(table, rows::<B>(grad.clone(), 1, m, t), tokens);
    let mut dmemory = rows::<B>(grad.clone(), 1, 0, m);
    if write {
        dmemory = B::float_add(dmemory, rows::<B>(grad.clone(), 1, m + t, m));
    }
    // Each row's gradient summed over the batch, put at its position.
    let summed = B::float_sum_dim(grad, 0);
    let summed = B::float_reshape(summed.clone(), Shape::new([rows_len, summed.shape()[2]]));
    let pshape = positions.shape();
    let p = pshape[0];
    let mut dpositions = B::float_zeros(pshape, &summed.device(), summed.dtype().into());
    let at = |x: FloatTensor<B>, start: usize, n: usize, value: FloatTensor<B>| {
        B::float_slice_assign(
            x,
            &[Slice::new(start as isize, Some((start + n) as isize), 1)],
            value,
        )
    };
    dpositions = at(dpositions, 0, m + t, rows::<B>(summed.clone(), 0, 0, m + t));
    if write {
        dpositions = at(dpositions, p - m, m, rows::<B>(summed, 0, m + t, m));
    }
    (dtable, dmemory, dpositions)
}

/// The checks' input: a vocabulary of 11 rows of width 70 (not a multiple of the workgroup),
/// a batch of 3, 2 memory rows, a partial segment of 3 tokens out of 5 (so the write rows'
/// positions are not the ones after the tokens), nine of the eleven ids (two table rows get no
/// gradient).
fn check_input() -> [TensorData; 4] {
    let (vocab, d, batch, m, t, t_max) = (11, 70, 3, 2, 3, 5);
    let value = |i: usize, salt: usize| ((i * 7919 + salt) % 1013) as f32 / 500.0 - 1.0;
    let table = (0..vocab * d).map(|i| value(i, 1)).collect();
    let tokens: Vec<i64> = (0..batch * t).map(|i| ((i * 4) % vocab) as i64).collect();
    let memory = (0..batch * m * d).map(|i| value(i, 2)).collect();
    let p = 2 * m + t_max;
    let positions = (0..p * d).map(|i| value(i, 3)).collect();
    [
        TensorData::new(table, [vocab, d]),
        TensorData::new(tokens, [batch, t]),
        TensorData::new(memory, [batch, m, d]),
        TensorData::new(positions, [p, d]),
    ]
}

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]), with write rows and without; elsewhere, and in a browser, nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let [table, tokens, memory, positions] = check_input();
        let run = |device: &Device, write: bool| {
            Tensor::<3>::from_dispatch(<Dispatch as EmbedBackend>::embed_layout(
                Tensor::<2>::from_data(table.clone(), device).into_dispatch(),
                Tensor::<2, Int>::from_data(tokens.clone(), device).into_dispatch(),
                Tensor::<3>::from_data(memory.clone(), device).into_dispatch(),
                Tensor::<2>::from_data(positions.clone(), device).into_dispatch(),
                write,
            ))
        };
        for write in [true, false] {
            agrees(
                "rows",
                &read(run(device, write))?,
                &read(run(&Device::flex(), write))?,
            )?;
        }
        Ok(())
    });
}

/// On wgpu, check the WGSL backward kernel against [`backward_from_ops`] on the CPU once per
/// device, as [`check_kernel`] does for the forward.
fn check_backward_kernel(device: &Device) {
    check_on(wgpu::BACKWARD, device, |device| {
        let [table, tokens, memory, positions] = check_input();
        let (memory_shape, t) = (memory.shape(), tokens.shape()[1]);
        let [batch, m, d] = [memory_shape[0], memory_shape[1], memory_shape[2]];
        for write in [true, false] {
            let rows_len = m + t + usize::from(write) * m;
            let grad: Vec<f32> = (0..batch * rows_len * d)
                .map(|i| ((i * 104_729) % 997) as f32 / 500.0 - 1.0)
                .collect();
            let grad = TensorData::new(grad, [batch, rows_len, d]);
            let run = |device: &Device| {
                let (dtable, dmemory, dpositions) =
                    <Dispatch as EmbedBackend>::embed_layout_backward(
                        Tensor::<2>::from_data(table.clone(), device).into_dispatch(),
                        Tensor::<2, Int>::from_data(tokens.clone(), device).into_dispatch(),
                        Tensor::<2>::from_data(positions.clone(), device).into_dispatch(),
                        Tensor::<3>::from_data(grad.clone(), device).into_dispatch(),
                        m,
                    );
                (
                    Tensor::<2>::from_dispatch(dtable),
                    Tensor::<3>::from_dispatch(dmemory),
                    Tensor::<2>::from_dispatch(dpositions),
                )
            };
            let (dtable, dmemory, dpositions) = run(device);
            let (want_table, want_memory, want_positions) = run(&Device::flex());
            agrees("table gradient", &read(dtable)?, &read(want_table)?)?;
            agrees("memory gradient", &read(dmemory)?, &read(want_memory)?)?;
            agrees(
                "position gradient",
                &read(dpositions)?,
                &read(want_positions)?,
            )?;
        }
        Ok(())
    });
}

impl EmbedBackend for Flex {}

/// The GPU runtimes: on wgpu the WGSL kernels where they serve, Burn's operations elsewhere.
impl EmbedBackend for CubeBackend {
    fn embed_layout(
        table: FloatTensor<Self>,
        tokens: IntTensor<Self>,
        memory: FloatTensor<Self>,
        positions: FloatTensor<Self>,
        write: bool,
    ) -> FloatTensor<Self> {
        if wgpu::serves(wgpu::NAME, &table, &tokens) {
            wgpu::embed_layout(table, tokens, memory, positions, write)
        } else {
            reference::<Self>(table, tokens, memory, positions, write)
        }
    }

    fn embed_layout_backward(
        table: FloatTensor<Self>,
        tokens: IntTensor<Self>,
        positions: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        memory: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if wgpu::serves(wgpu::BACKWARD, &table, &tokens) {
            wgpu::embed_layout_backward(table, tokens, positions, grad, memory)
        } else {
            backward_from_ops::<Self>(table, tokens, positions, grad, memory)
        }
    }
}

#[cfg(feature = "train")]
impl<B: Backend + EmbedBackend, C: CheckpointStrategy> EmbedBackend for Autodiff<B, C> {
    fn embed_layout(
        table: FloatTensor<Self>,
        tokens: IntTensor<Self>,
        memory: FloatTensor<Self>,
        positions: FloatTensor<Self>,
        write: bool,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct EmbedBackward;

        impl<B: Backend + EmbedBackend> Backward<B, 3> for EmbedBackward {
            /// The table and positions (for their shapes), the tokens, the memory rows.
            type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>, usize);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [table_node, memory_node, positions_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (table, tokens, positions, m) = ops.state;
                let (dtable, dmemory, dpositions) =
                    B::embed_layout_backward(table, tokens, positions, grad, m);
                for (node, grad) in [
                    (table_node, dtable),
                    (memory_node, dmemory),
                    (positions_node, dpositions),
                ] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let m = memory.primitive().shape()[1];
        match EmbedBackward
            .prepare::<C>([table.node(), memory.node(), positions.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (table, memory, positions) = (
                    table.primitive().clone(),
                    memory.into_primitive(),
                    positions.primitive().clone(),
                );
                let out = B::embed_layout(
                    table.clone(),
                    tokens.clone(),
                    memory,
                    positions.clone(),
                    write,
                );
                prep.finish((table, tokens, positions, m), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::embed_layout(
                table.into_primitive(),
                tokens,
                memory.into_primitive(),
                positions.into_primitive(),
                write,
            )),
        }
    }
}
