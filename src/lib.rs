//! remem: memory-augmented transformers on Burn.
//!
//! - [`model`]: the Recurrent Memory Transformer behind one segment-step interface
//!   ([`model::Model::init_state`], [`model::Model::step`]), with a [`model::State`] that detaches
//!   and serialises itself.
//! - [`infer`]: streaming sessions: feed inputs of any length, save and restore the memory,
//!   predict and generate.
//! - [`task`]: the RMT paper's synthetic tasks as Burn datasets.
//! - [`train`]: the training loop, evaluation, metrics and checkpoints.
//! - [`device`]: choosing wgpu (any GPU vendor) or the CPU (`flex`) at run time.
//! - [`tokenizer`]: text to token ids and back (bytes, characters, ids).
//! - [`bench`](mod@bench): training and streaming figures, FLOPs counted from a config.
//! - [`heap`]: keeping freed memory in the process (fewer page faults on the CPU).
//! - [`threads`]: running a command on the CPU thread pool's workers (fewer thread wake-ups).
//! - [`nn`]: attention that can return its weights, the transformer block, masks.
//!
//! The `train` feature (on by default) adds training, `bench`, `compare` and the command line,
//! with Burn's autodiff; without it the library streams and infers only (the web page's build).

#[cfg(feature = "train")]
pub mod bench;
#[cfg(feature = "train")]
pub mod compare;
pub mod device;
pub mod error;
pub mod gguf;
pub mod heap;
pub mod infer;
pub mod io;
pub mod model;
pub mod nn;
pub mod ops;
pub mod task;
pub mod threads;
pub mod tokenizer;
pub mod train;

pub use device::{DeviceChoice, SelectedDevice};
pub use error::{Error, Result};
pub use model::{Model, ModelConfig, SegmentModel, State, StepOutput};
