//! Fused operations and remem's CPU kernels: the only place with `unsafe` kernel code.
//!
//! An operation with a hand-written WGSL kernel has a folder ([`affine`], [`attention`],
//! [`kv_attention`], [`layer_norm`], [`ltm_read`], [`rotary`], [`cross_entropy`], [`embed`], [`sum_squares`],
//! [`store_read`], [`store_write`], [`unit_rms`]):
//! the backend extension trait with its reference written in Burn's tensor operations, the CPU
//! (flex) kernel, the wgpu launcher of its kernel in `shaders/`, and the backward. [`gelu`],
//! [`softmax`] and [`matmul`] have CPU kernels only (GPU backends run Burn's own); [`cpu`] is
//! what the CPU kernels share, and [`checked`] enforces their `unsafe` invariants in tests.
//!
//! The modules in [`crate::nn`] call these; the models never see which device runs what.
//! On wgpu each kernel is checked once per device before its first use ([`wgsl`]): an adapter
//! that cannot compile or run it takes the reference path, with one message saying so.

pub mod affine;
pub mod attention;
pub(crate) mod checked;
pub(crate) mod cpu;
pub mod cross_entropy;
pub mod embed;
pub mod gelu;
pub mod kv_attention;
pub mod layer_norm;
pub mod ltm_read;
pub mod matmul;
pub mod rotary;
pub mod softmax;
pub mod store_read;
pub mod store_write;
pub mod sum_squares;
pub mod unit_rms;
pub(crate) mod wgsl;

pub use wgsl::{fallbacks, turned_off_names};

/// Panics unless `got` equals `want` within `1e-4` of `want`'s largest magnitude (at least
/// `1e-3`): the written-out backwards' tests against Burn's autodiff.
#[cfg(test)]
pub(crate) fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        diff <= 1e-4 * scale,
        "{what}: differs by {diff} (scale {scale})"
    );
}
