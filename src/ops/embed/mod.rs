//! A segment's layout rows (memory rows and token embeddings, each plus its learned position)
//! as one autodiff operation: one WGSL kernel forward and one backward on wgpu.
//!
//! RMT's step starts by building `[read memory | segment | write memory]` and adding the
//! position table; ARMT's builds `[segment | memory]` the same way (no read rows). From Burn's
//! operations that is a copy of the segment's token ids, the embedding's gather, the join of
//! the memory and the tokens, and the positions' add forward, and backward a zero-filled table
//! with a scatter into it, the join's split, the two memory gradients' sum and the positions'
//! sum over the batch: about fourteen kernels per segment of a training step on wgpu. [`embed_layout`] records one operation: on wgpu one dispatch writes
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
    /// `[memory | table[tokens] | memory]` (the first part only when `read`, the last only
    /// when `write`) plus each row's position: the rows before the write rows take their own
    /// index, the write rows the table's last `M`. `table` `[V, D]`, `tokens` `[B, T]`,
    /// `memory` `[B, M, D]`, `positions` `[P, D]` with `P` at least the rows:
    /// `[B, L, D]`, `L = (M) + T (+ M)`.
    #[fusion(dtype = table, shape = rows_shape(tokens, memory, read, write))]
    fn embed_layout(
        table: FloatTensor<Self>,
        tokens: IntTensor<Self>,
        memory: FloatTensor<Self>,
        positions: FloatTensor<Self>,
        read: bool,
        write: bool,
    ) -> FloatTensor<Self> {
        reference::<Self>(table, tokens, memory, positions, read, write)
    }

    /// The gradients of the table, the memory (`memory` rows) and the positions from the
    /// rows' gradient `grad` (`[B, L, D]`; with read rows when `read`, and write rows when
    /// `L` has room for them). The table and the positions only give their shapes.
    #[fusion(meta = gradient_specs)]
    fn embed_layout_backward(
        table: FloatTensor<Self>,
        tokens: IntTensor<Self>,
        positions: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        memory: usize,
        read: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        backward_from_ops::<Self>(table, tokens, positions, grad, memory, read)
    }
}

/// The rows' shape `[B, (M) + T (+ M), D]`, for the fusion stream.
fn rows_shape(tokens: &Shape, memory: &Shape, read: &bool, write: &bool) -> Shape {
    let m = memory[1];
    Shape::new([
        memory[0],
        usize::from(*read) * m + tokens[1] + usize::from(*write) * m,
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
    _read: &bool,
) -> (TensorSpec, TensorSpec, TensorSpec) {
    let (batch, d) = (grad.shape[0], grad.shape[2]);
    (
        table.clone(),
        TensorSpec::new(Shape::new([batch, *memory, d]), grad.dtype),
        positions.clone(),
    )
}

/// A segment's layout rows: (when `read`) the memory, the tokens' embeddings and (when
/// `write`) the memory again, each row plus its learned position; the rows before the write
/// rows take their own index, the write rows the position table's last `M` rows, where they
/// sit in a whole segment. RMT's decoder reads and writes, its encoder only reads; ARMT's
/// segment only writes (its memory is `M` learned rows, broadcast over the batch).
///
/// # Shapes
/// - table: `[vocab, d]`
/// - tokens: `[batch, t]`
/// - memory: `[batch, m, d]` (may be a broadcast view), `m >= 1`
/// - positions: `[p, d]`, `p` at least the output's rows
/// - output: `[batch, (m) + t (+ m), d]`
pub fn embed_layout(
    table: Tensor<2>,
    tokens: Tensor<2, Int>,
    memory: Tensor<3>,
    positions: Tensor<2>,
    read: bool,
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
    let rows = usize::from(read) * m + t + usize::from(write) * m;
    assert!(
        p >= rows,
        "embed_layout: {p} positions for {rows} rows ({m} memory rows, {t} tokens)"
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
        read,
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
    read: bool,
    write: bool,
) -> FloatTensor<B> {
    let (m, t, p) = (memory.shape()[1], tokens.shape()[1], positions.shape()[0]);
    let lead = usize::from(read) * m;
    let x = B::embedding(table, tokens);
    let mut parts = Vec::with_capacity(3);
    if read {
        parts.push(memory.clone());
    }
    parts.push(x);
    let mut pos = vec![rows::<B>(positions.clone(), 0, 0, lead + t)];
    if write {
        parts.push(memory);
        pos.push(rows::<B>(positions, 0, p - m, m));
    }
    let (h, pos) = (B::float_cat(parts, 1), B::float_cat(pos, 0));
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
    read: bool,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let t = tokens.shape()[1];
    let lead = usize::from(read) * m;
    let rows_len = grad.shape()[1];
    let write = rows_len > lead + t;
    let dtable = B::embedding_backward(table, rows::<B>(grad.clone(), 1, lead, t), tokens);
    let written = || rows::<B>(grad.clone(), 1, lead + t, m);
    let dmemory = match (read, write) {
        (true, true) => B::float_add(rows::<B>(grad.clone(), 1, 0, m), written()),
        (true, false) => rows::<B>(grad.clone(), 1, 0, m),
        (false, true) => written(),
        (false, false) => {
            let shape = Shape::new([grad.shape()[0], m, grad.shape()[2]]);
            B::float_zeros(shape, &grad.device(), grad.dtype().into())
        }
    };
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
    dpositions = at(
        dpositions,
        0,
        lead + t,
        rows::<B>(summed.clone(), 0, 0, lead + t),
    );
    if write {
        dpositions = at(dpositions, p - m, m, rows::<B>(summed, 0, lead + t, m));
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

/// The layouts the checks run: RMT's decoder (read and write rows), its encoder (read rows),
/// ARMT's segment (write rows).
const LAYOUTS: [(bool, bool); 3] = [(true, true), (true, false), (false, true)];

/// On wgpu, check the WGSL kernel against the reference on the CPU once per device (see
/// [`crate::ops::wgsl`]), for each of [`LAYOUTS`]; elsewhere, and in a browser, nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let [table, tokens, memory, positions] = check_input();
        let run = |device: &Device, (lead, write): (bool, bool)| {
            Tensor::<3>::from_dispatch(<Dispatch as EmbedBackend>::embed_layout(
                Tensor::<2>::from_data(table.clone(), device).into_dispatch(),
                Tensor::<2, Int>::from_data(tokens.clone(), device).into_dispatch(),
                Tensor::<3>::from_data(memory.clone(), device).into_dispatch(),
                Tensor::<2>::from_data(positions.clone(), device).into_dispatch(),
                lead,
                write,
            ))
        };
        for layout in LAYOUTS {
            agrees(
                "rows",
                &read(run(device, layout))?,
                &read(run(&Device::flex(), layout))?,
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
        for (lead, write) in LAYOUTS {
            let rows_len = usize::from(lead) * m + t + usize::from(write) * m;
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
                        lead,
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
        read: bool,
        write: bool,
    ) -> FloatTensor<Self> {
        if wgpu::serves(wgpu::NAME, &table, &tokens) {
            wgpu::embed_layout(table, tokens, memory, positions, read, write)
        } else {
            reference::<Self>(table, tokens, memory, positions, read, write)
        }
    }

    fn embed_layout_backward(
        table: FloatTensor<Self>,
        tokens: IntTensor<Self>,
        positions: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        memory: usize,
        read: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if wgpu::serves(wgpu::BACKWARD, &table, &tokens) {
            wgpu::embed_layout_backward(table, tokens, positions, grad, memory, read)
        } else {
            backward_from_ops::<Self>(table, tokens, positions, grad, memory, read)
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
        read: bool,
        write: bool,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct EmbedBackward;

        impl<B: Backend + EmbedBackend> Backward<B, 3> for EmbedBackward {
            /// The table and positions (for their shapes), the tokens, the memory rows and
            /// whether they lead.
            type State = (FloatTensor<B>, IntTensor<B>, FloatTensor<B>, usize, bool);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [table_node, memory_node, positions_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (table, tokens, positions, m, read) = ops.state;
                let (dtable, dmemory, dpositions) =
                    B::embed_layout_backward(table, tokens, positions, grad, m, read);
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
                    read,
                    write,
                );
                prep.finish((table, tokens, positions, m, read), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::embed_layout(
                table.into_primitive(),
                tokens,
                memory.into_primitive(),
                positions.into_primitive(),
                read,
                write,
            )),
        }
    }
}
