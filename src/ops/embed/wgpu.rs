//! The wgpu launchers of `shaders/embed.wgsl` and `shaders/embed_backward.wgsl`: a segment's
//! layout rows, and the gradients of the table, the memory and the positions, one dispatch
//! each.

use burn::backend::TensorMetadata;
use burn::backend::wgpu::CubeTensor;
use burn::cubecl::prelude::CubeCount;
use burn::cubecl::server::Handle;
use burn::prelude::Shape;
use burn::tensor::DType;

use crate::ops::wgsl::{self, Wgsl};

/// Invocations per workgroup (the shaders' `@workgroup_size`).
const THREADS: usize = 64;
/// Workgroups along one dispatch axis at most (WebGPU's guaranteed limit).
const MAX_GROUPS: usize = 65_535;
/// The largest vocabulary the backward kernel serves: each table element loops over the
/// segment's tokens, which pays while the table is small (bytes, a task's symbols).
const MAX_VOCAB: usize = 4096;

/// The sizes and token lookup both kernels share (`shaders/embed_sizes.wgsl`), put first.
const SIZES: &str = include_str!("../../../shaders/embed_sizes.wgsl");

/// The forward kernel's name in logs and launch counts.
pub(super) const NAME: &str = "remem::embed";
/// The backward kernel's name.
pub(super) const BACKWARD: &str = "remem::embed_backward";

/// Whether `kernel` serves this table and these tokens: an `f32` table of at most
/// [`MAX_VOCAB`] rows on wgpu, `i32` token ids, sizes within a `u32`, and the kernel's check
/// on this device passed (or has not run: the check itself calls here).
pub(super) fn serves(kernel: &'static str, table: &CubeTensor, tokens: &CubeTensor) -> bool {
    let shape = table.shape();
    wgsl::serves(table)
        && tokens.dtype == DType::I32
        && shape[0] <= MAX_VOCAB
        && tokens.shape().num_elements() > 0
        && tokens.shape().num_elements() * shape[1] * 4 <= u32::MAX as usize
        && !wgsl::failed(kernel, &table.device)
}

/// The sizes every launch binds: batch, rows, width, memory, tokens, positions, vocabulary,
/// then the strides the kernels read the tokens and the memory with: the tokens' rows, the
/// memory's batch and rows; last the memory rows before the tokens (the memory's or none).
struct Sizes {
    rows: Shape,
    memory: usize,
    tokens: usize,
    positions: usize,
    vocab: usize,
    strides: [usize; 3],
    lead: usize,
}

impl Sizes {
    /// The sizes as the kernels' `info` buffer, on the device of `like`.
    fn info(&self, like: &CubeTensor) -> Handle {
        let r = &self.rows;
        let [a, b, c] = self.strides;
        let values = [
            r[0],
            r[1],
            r[2],
            self.memory,
            self.tokens,
            self.positions,
            self.vocab,
            a,
            b,
            c,
            self.lead,
        ];
        wgsl::info(&like.client, &values.map(|v| v as u32))
    }
}

/// `x` as it is when its last axis is dense (a slice of rows, a batch broadcast), else a
/// contiguous copy; with its strides. The kernels index such views directly, so a segment's
/// token ids and the memory sliced from the previous segment's rows need no copy.
fn rows_view(x: CubeTensor) -> (CubeTensor, Vec<usize>) {
    let x = match x.meta.strides().last() {
        Some(1) => x,
        _ => burn_cubecl::kernel::into_contiguous(x),
    };
    let strides = x.meta.strides().to_vec();
    (x, strides)
}

/// `[memory | table[tokens] | memory]` (the first only when `read`, the last only when
/// `write`) plus the positions.
pub(super) fn embed_layout(
    table: CubeTensor,
    tokens: CubeTensor,
    memory: CubeTensor,
    positions: CubeTensor,
    read: bool,
    write: bool,
) -> CubeTensor {
    let [table, positions] = [table, positions].map(burn_cubecl::kernel::into_contiguous);
    let (tokens, token_strides) = rows_view(tokens);
    let (memory, memory_strides) = rows_view(memory);
    let (t, [batch, m, d]) = (tokens.shape()[1], dims3(&memory));
    let lead = usize::from(read) * m;
    let rows = Shape::new([batch, lead + t + usize::from(write) * m, d]);
    let out = wgsl::empty_like(&table, rows.clone());
    let client = table.client.clone();
    let info = Sizes {
        rows: rows.clone(),
        memory: m,
        tokens: t,
        positions: positions.shape()[0],
        vocab: table.shape()[0],
        strides: [token_strides[0], memory_strides[0], memory_strides[1]],
        lead,
    }
    .info(&out);
    Wgsl::new(
        NAME,
        &[SIZES, include_str!("../../../shaders/embed.wgsl")],
        &[],
        THREADS as u32,
    )
    .launch(
        &client,
        groups(rows.num_elements()),
        vec![
            table.handle.clone(),
            tokens.handle.clone(),
            memory.handle.clone(),
            positions.handle.clone(),
            out.handle.clone(),
            info,
        ],
    );
    out
}

/// The table's, the memory's and the positions' gradients from the rows' gradient.
pub(super) fn embed_layout_backward(
    table: CubeTensor,
    tokens: CubeTensor,
    positions: CubeTensor,
    grad: CubeTensor,
    m: usize,
    read: bool,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let (tokens, token_strides) = rows_view(tokens);
    let grad = burn_cubecl::kernel::into_contiguous(grad);
    let rows = grad.shape();
    let (batch, d) = (rows[0], rows[2]);
    let (table_shape, positions_shape) = (table.shape(), positions.shape());
    let dtable = wgsl::empty_like(&grad, table_shape.clone());
    let dmemory = wgsl::empty_like(&grad, Shape::new([batch, m, d]));
    let dpositions = wgsl::empty_like(&grad, positions_shape.clone());
    let client = grad.client.clone();
    let info = Sizes {
        rows: rows.clone(),
        memory: m,
        tokens: tokens.shape()[1],
        positions: positions_shape[0],
        vocab: table_shape[0],
        strides: [token_strides[0], 0, 0],
        lead: usize::from(read) * m,
    }
    .info(&grad);
    let work = table_shape.num_elements() + batch * m * d + positions_shape.num_elements();
    Wgsl::new(
        BACKWARD,
        &[SIZES, include_str!("../../../shaders/embed_backward.wgsl")],
        &[],
        THREADS as u32,
    )
    .launch(
        &client,
        groups(work),
        vec![
            grad.handle.clone(),
            tokens.handle.clone(),
            dtable.handle.clone(),
            dmemory.handle.clone(),
            dpositions.handle.clone(),
            info,
        ],
    );
    (dtable, dmemory, dpositions)
}

/// `[a, b, c]` of a 3-d tensor.
fn dims3(x: &CubeTensor) -> [usize; 3] {
    let shape = x.shape();
    [shape[0], shape[1], shape[2]]
}

/// Workgroups for `n` invocations, spread over the dispatch's first two axes.
fn groups(n: usize) -> CubeCount {
    let groups = n.div_ceil(THREADS);
    CubeCount::Static(
        groups.min(MAX_GROUPS) as u32,
        groups.div_ceil(MAX_GROUPS) as u32,
        1,
    )
}
