//! Rotary positions on the rows of a projection, split into heads as they are turned, as one
//! operation with its gradient: on wgpu one dispatch of `shaders/rotary.wgsl` each way
//! ([`wgpu`]).
//!
//! Burn's `RotaryEncoding::apply` turns the pairs of a `[.., seq, d_head]` tensor with a batched
//! product against a `[2, 4]` sign table, a product with the angle table and a sum: in training
//! on wgpu four kernels for each of the queries and the keys of every layer and segment, the
//! batched product with an inner width of 2 among the slowest kernels of a Transformer-XL step
//! on lavapipe, and as many again backward. Here the turn is one element-wise kernel that reads
//! the projection's rows and writes the heads' layout (a head's pairs are whole within its row),
//! so the attention's products read contiguous heads, and its gradient the transposed turn back
//! into rows, one more. The CPU keeps Burn's rotary encoding (the same
//! bits as before); the reference written with Burn's operations is what the kernel is checked
//! against.

mod wgpu;

#[cfg(feature = "train")]
use burn::backend::Autodiff;
#[cfg(feature = "train")]
use burn::backend::autodiff::{
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::wgpu::CubeBackend;
use burn::backend::{
    Backend, Dispatch, Flex, TensorMetadata, backend_extension, tensor::FloatTensor,
};
use burn::prelude::*;
use burn::tensor::Slice;

use crate::ops::wgsl::{agrees, check_on, on_wgpu, read};

/// The rotary turn of rows of heads as a backend operation, so that autodiff records one node.
#[backend_extension(Flex, Cube, Fusion, Autodiff: cfg(feature = "train"))]
pub trait RotaryBackend: Backend {
    /// `x` `[batch, seq, heads · d_head]` with each head's pairs turned by `table` `[positions,
    /// d_head, 2]` (cos, sin) at positions `start..`, written in the heads' layout (the output
    /// keeps `x`'s shape; its data is `[batch, heads, seq, d_head]`). With `transpose` the
    /// transposed turn (the forward's gradient): `x` holds the heads' layout and the output is
    /// rows. The table carries no gradient.
    #[fusion(dtype = x, shape = x)]
    fn rotary_heads(
        x: FloatTensor<Self>,
        table: FloatTensor<Self>,
        d_head: usize,
        start: usize,
        transpose: bool,
    ) -> FloatTensor<Self> {
        reference::<Self>(x, table, d_head, start, transpose)
    }
}

/// Whether [`rotary_heads`] serves `x`: on wgpu (training or not). Elsewhere callers keep
/// Burn's `RotaryEncoding::apply`.
pub(crate) fn serves(x: &Tensor<3>) -> bool {
    on_wgpu(&x.device())
}

/// The heads of `x` with their pairs `(2j, 2j + 1)` turned as Burn's `RotaryEncoding::apply`
/// turns them, row `i` at position `start + i`: `x'[2j] = x[2j] cos - x[2j + 1] sin`,
/// `x'[2j + 1] = x[2j + 1] cos + x[2j] sin`. `table` is the encoding's `freq_complex`, and its
/// head width is the heads'.
///
/// # Shapes
/// - x: `[batch, seq, heads · d_head]`
/// - table: `[positions, d_head, 2]`, `positions >= start + seq`
/// - output: `[batch, heads, seq, d_head]`
pub fn rotary_heads(x: Tensor<3>, table: Tensor<3>, start: usize) -> Tensor<4> {
    let [batch, seq, width] = x.dims();
    let [positions, d_head, two] = table.dims();
    assert!(
        two == 2 && d_head % 2 == 0 && width.is_multiple_of(d_head) && positions >= start + seq,
        "rotary_heads: a table {:?} does not turn rows {:?} from {start}",
        table.dims(),
        x.dims()
    );
    check_kernel(&x.device());
    let turned = Tensor::<3>::from_dispatch(<Dispatch as RotaryBackend>::rotary_heads(
        x.into_dispatch(),
        table.into_dispatch(),
        d_head,
        start,
        false,
    ));
    turned.reshape([batch, width / d_head, seq, d_head])
}

/// The heads `[batch, heads, seq, d_head]` of `rows` `[batch, seq, heads · d_head]` turned
/// at positions `start..`, from the backend's tensor operations: [`rotary_heads`]'s reference,
/// for the references of other operations that turn their queries and keys.
pub(crate) fn turn_heads<B: Backend>(
    rows: FloatTensor<B>,
    table: FloatTensor<B>,
    d_head: usize,
    start: usize,
) -> FloatTensor<B> {
    let [batch, seq, width] = rows.shape().dims::<3>();
    B::float_reshape(
        reference::<B>(rows, table, d_head, start, false),
        Shape::new([batch, width / d_head, seq, d_head]),
    )
}

/// The transposed turn of `heads` `[batch, heads, seq, d_head]` at positions `start..`, written
/// as rows `[batch, seq, heads · d_head]`: [`turn_heads`]'s gradient, from the backend's tensor
/// operations, for the references of other operations' backward.
pub(crate) fn unturn_heads<B: Backend>(
    heads: FloatTensor<B>,
    table: FloatTensor<B>,
    start: usize,
) -> FloatTensor<B> {
    let [batch, n, seq, d_head] = heads.shape().dims::<4>();
    let heads = B::float_reshape(heads, Shape::new([batch, seq, n * d_head]));
    reference::<B>(heads, table, d_head, start, true)
}

/// [`RotaryBackend::rotary_heads`] from the backend's tensor operations.
fn reference<B: Backend>(
    x: FloatTensor<B>,
    table: FloatTensor<B>,
    d_head: usize,
    start: usize,
    transpose: bool,
) -> FloatTensor<B> {
    let [batch, seq, width] = x.shape().dims::<3>();
    let heads = width / d_head;
    let rows = Shape::new([batch, seq, width]);
    let x = match transpose {
        // The heads' layout back to rows.
        true => B::float_reshape(
            B::float_swap_dims(
                B::float_reshape(x, Shape::new([batch, heads, seq, d_head])),
                1,
                2,
            ),
            rows.clone(),
        ),
        false => x,
    };
    let pairs = B::float_reshape(x, Shape::new([batch, seq, heads, d_head / 2, 2]));
    let member = |m: isize| {
        let mut slices = [Slice::full(); 5];
        slices[4] = Slice::new(m, Some(m + 1), 1);
        B::float_slice(pairs.clone(), &slices)
    };
    let (a, b) = (member(0), member(1));
    let angles = B::float_slice(
        table,
        &[Slice::new(start as isize, Some((start + seq) as isize), 1)],
    );
    // [1, seq, 1, pair, member, cos | sin]
    let angles = B::float_reshape(angles, Shape::new([1, seq, 1, d_head / 2, 2, 2]));
    let entry = |m: isize, c: isize| {
        let mut slices = [Slice::full(); 6];
        slices[4] = Slice::new(m, Some(m + 1), 1);
        slices[5] = Slice::new(c, Some(c + 1), 1);
        B::float_reshape(
            B::float_slice(angles.clone(), &slices),
            Shape::new([1, seq, 1, d_head / 2, 1]),
        )
    };
    let (even, odd) = if transpose {
        (
            B::float_add(
                B::float_mul(a.clone(), entry(0, 0)),
                B::float_mul(b.clone(), entry(1, 1)),
            ),
            B::float_sub(B::float_mul(b, entry(1, 0)), B::float_mul(a, entry(0, 1))),
        )
    } else {
        (
            B::float_sub(
                B::float_mul(a.clone(), entry(0, 0)),
                B::float_mul(b.clone(), entry(0, 1)),
            ),
            B::float_add(B::float_mul(b, entry(1, 0)), B::float_mul(a, entry(1, 1))),
        )
    };
    let turned = B::float_cat(vec![even, odd], 4);
    match transpose {
        true => B::float_reshape(turned, rows),
        // Rows into the heads' layout, in `x`'s shape.
        false => B::float_reshape(
            B::float_swap_dims(
                B::float_reshape(turned, Shape::new([batch, seq, heads, d_head])),
                1,
                2,
            ),
            rows,
        ),
    }
}

/// On wgpu, check the WGSL kernel both ways against the reference on the CPU once per device
/// (see [`crate::ops::wgsl`]): two sequences of 13 rows of 3 heads of 8 from position 5, with
/// Burn's table; elsewhere, and in a browser, nothing.
fn check_kernel(device: &Device) {
    check_on(wgpu::NAME, device, |device| {
        let (batch, seq, heads, d_head, start) = (2, 13, 3, 8, 5);
        let width = heads * d_head;
        let x: Vec<f32> = (0..batch * seq * width)
            .map(|i| ((i * 7919) % 1013) as f32 / 500.0 - 1.0)
            .collect();
        let x = TensorData::new(x, [batch, seq, width]);
        let table = burn::nn::RotaryEncodingConfig::new(start + seq, d_head)
            .init(&Device::flex())
            .freq_complex
            .into_data();
        for transpose in [false, true] {
            let run = |device: &Device| {
                Tensor::<3>::from_dispatch(<Dispatch as RotaryBackend>::rotary_heads(
                    Tensor::<3>::from_data(x.clone(), device).into_dispatch(),
                    Tensor::<3>::from_data(table.clone(), device).into_dispatch(),
                    d_head,
                    start,
                    transpose,
                ))
            };
            agrees("rows", &read(run(device))?, &read(run(&Device::flex()))?)?;
        }
        Ok(())
    });
}

impl RotaryBackend for Flex {}

/// The GPU runtimes: on wgpu the WGSL kernel where it serves, Burn's operations elsewhere.
impl RotaryBackend for CubeBackend {
    fn rotary_heads(
        x: FloatTensor<Self>,
        table: FloatTensor<Self>,
        d_head: usize,
        start: usize,
        transpose: bool,
    ) -> FloatTensor<Self> {
        if wgpu::serves(&x) {
            wgpu::rotary(x, table, d_head, start, transpose)
        } else {
            reference::<Self>(x, table, d_head, start, transpose)
        }
    }
}

#[cfg(feature = "train")]
impl<B: Backend + RotaryBackend, C: CheckpointStrategy> RotaryBackend for Autodiff<B, C> {
    fn rotary_heads(
        x: FloatTensor<Self>,
        table: FloatTensor<Self>,
        d_head: usize,
        start: usize,
        transpose: bool,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct RotaryBackward;

        impl<B: Backend + RotaryBackend> Backward<B, 1> for RotaryBackward {
            /// The table, the head width, the first position and the direction.
            type State = (FloatTensor<B>, usize, usize, bool);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [x_node] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (table, d_head, start, transpose) = ops.state;
                // The turn is linear: its gradient is the transposed turn.
                let dx = B::rotary_heads(grad, table, d_head, start, !transpose);
                if let Some(node) = x_node {
                    grads.register::<B>(node.id, dx);
                }
            }
        }

        let table = table.into_primitive();
        match RotaryBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y =
                    B::rotary_heads(x.into_primitive(), table.clone(), d_head, start, transpose);
                prep.finish((table, d_head, start, transpose), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rotary_heads(
                x.into_primitive(),
                table,
                d_head,
                start,
                transpose,
            )),
        }
    }
}
