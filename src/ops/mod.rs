//! Fused operations, one folder each: the backend extension trait with its reference written in
//! Burn's tensor operations, the CPU (flex) kernel, the wgpu launcher of its hand-written WGSL
//! kernel in `shaders/`, and the backward.
//!
//! The modules in [`crate::nn`] call these; the models never see which device runs what.
//! On wgpu each kernel is checked once per device before its first use ([`wgsl`]): an adapter
//! that cannot compile or run it takes the reference path, with one message saying so.

pub mod attention;
pub mod layer_norm;
pub(crate) mod wgsl;

pub use wgsl::fallbacks;
