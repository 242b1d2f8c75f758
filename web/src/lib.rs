//! remem in the browser: a trained model reads a question segment by segment on WebGPU (or the
//! CPU), writes its answer, and hands the page each segment's attention and memory.
//!
//! The model, its state and the streaming all come from the `remem` library
//! ([`remem::infer::Session`]); [`demo`] turns what a session returns into what the page draws,
//! and `bindings` (built for wasm32 only) is the thin wasm-bindgen layer the page's JavaScript
//! calls.

pub mod demo;
pub mod retention;

// Only the browser build needs the JavaScript bindings; leaving them (and wasm-bindgen) out of
// native builds keeps the workspace's native feature set equal to the `remem` crate's, so
// `cargo test --workspace` reuses the Burn that `cargo run` built.
#[cfg(target_arch = "wasm32")]
pub mod bindings;
