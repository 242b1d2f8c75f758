//! The infinity-former (Martins, Marinho, Martins, ACL 2022, arXiv 2109.00301): Transformer-XL
//! ([`super::xl`]) plus a long-term memory per layer ([`crate::nn::LongTermMemory`]).
//!
//! The states that leave a layer's cache in one segment are fitted into that layer's continuous
//! signal at the start of the next (inside its graph, so the gate before the fit is trained);
//! the layer's queries then read the signal with Gaussian attention, and the read is added to
//! the cache attention's output before the residual. The stored coefficients are detached: no
//! gradient crosses segments. With sticky sampling the next fit samples the old signal where
//! this segment's queries attended.
//!
//! The fit ([`fitted`]) and what a layer keeps after its read ([`remember`]) are shared with the
//! long-term memory on a pretrained decoder ([`super::ltm_llama`]).

use burn::prelude::*;

use super::state::LtmState;
use super::xl::Input;
use crate::nn::{Block, BlockOutput, Density, LongTermMemory, LtmRead, LtmSampling};

/// What one infinity-former layer gives back.
pub(super) struct Layer {
    /// The block's output.
    pub out: BlockOutput,
    /// The layer's long-term memory after the read.
    pub memory: Remembered,
}

/// A layer's long-term memory after a segment read it.
pub(super) struct Remembered {
    /// The layer's long-term memory for the next segment.
    pub state: LtmState,
    /// The weighted KL term of the densities, when the config asks for one (`[1]`).
    pub regulariser: Option<Tensor<1>>,
    /// Where each query read the memory, detached, when attention is asked for.
    pub density: Option<Density>,
}

/// Every layer's empty long-term memory (the zero signal, nothing pending).
pub(super) fn empty(ltm: &[LongTermMemory], batch: usize, device: &Device) -> Vec<LtmState> {
    ltm.iter()
        .map(|ltm| LtmState {
            coeffs: ltm.empty(batch, device),
            pending: None,
            attended: None,
        })
        .collect()
}

/// The signal a layer reads in this segment: its stored coefficients with the states the last
/// segment left (`state.pending`) fitted in, and where the last segment's queries attended
/// (for sticky sampling).
///
/// # Shapes
/// output: `[batch, N, d_model]`
pub(super) fn fitted(ltm: &LongTermMemory, state: LtmState) -> Tensor<3> {
    let LtmState {
        coeffs,
        pending,
        attended,
    } = state;
    match pending {
        Some(new) => ltm.write(coeffs, attended, new),
        None => coeffs,
    }
}

/// What a layer keeps after reading the signal `coeffs` with `read`: the coefficients
/// (detached), this segment's `evicted` states for the next fit, the histogram of where it
/// attended (sticky sampling), and the KL term and densities when asked for.
///
/// # Shapes
/// - coeffs: `[batch, N, d_model]`
/// - evicted: `[batch, E, d_model]`, `E <= segment_len`
pub(super) fn remember(
    ltm: &LongTermMemory,
    coeffs: Tensor<3>,
    read: &LtmRead,
    evicted: Option<Tensor<3>>,
    return_attention: bool,
) -> Remembered {
    let cfg = ltm.config();
    let regulariser =
        (cfg.kl_weight > 0.0).then(|| read.density.kl_to(cfg.kl_sigma).mul_scalar(cfg.kl_weight));
    let density = return_attention.then(|| Density {
        mu: read.density.mu.clone().detach(),
        variance: read.density.variance.clone().detach(),
    });
    Remembered {
        state: LtmState {
            coeffs: coeffs.detach(),
            pending: evicted,
            attended: (cfg.sampling == LtmSampling::Sticky)
                .then(|| read.density.histogram(cfg.bins).detach()),
        },
        regulariser,
        density,
    }
}

/// One layer of an infinity-former step: fit last segment's evictions (`state.pending`) into
/// the signal, run `block` with the memory read beside its attention, and keep this segment's
/// `evicted` states for the next fit.
///
/// # Shapes
/// - input hidden: `[batch, t, d_model]` (no memory tokens: every row is a segment token)
/// - evicted: `[batch, E, d_model]`, `E <= t`
pub(super) fn layer(
    block: &Block,
    ltm: &LongTermMemory,
    state: LtmState,
    evicted: Option<Tensor<3>>,
    input: Input<'_>,
) -> Layer {
    let coeffs = fitted(ltm, state);
    let mut read: Option<LtmRead> = None;
    let mut side = |normed: Tensor<3>| {
        let r = ltm.read(normed, coeffs.clone());
        let context = r.context.clone();
        read = Some(r);
        context
    };
    let out = block.forward_with(
        input.h,
        input.cache,
        input.bias,
        Some(input.rope),
        input.return_attention,
        Some(&mut side),
        0,
    );
    let read = read.expect("the block reads the long-term memory");
    Layer {
        out,
        memory: remember(ltm, coeffs, &read, evicted, input.return_attention),
    }
}
