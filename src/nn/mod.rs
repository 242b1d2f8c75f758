//! Pieces every model shares: attention that can return its weights, the pre-norm block, masks,
//! and the infinity-former's continuous long-term memory.

pub mod attention;
pub mod basis;
pub mod block;
pub mod gelu;
pub mod ltm;
pub mod mask;

pub use attention::{Attention, AttentionConfig, AttentionOutput};
pub use basis::Basis;
pub use block::{Block, BlockConfig, BlockOutput};
pub use gelu::gelu;
pub use ltm::{Density, LongTermMemory, LtmConfig, LtmRead, LtmSampling};
pub use mask::{Mask, causal_mask};
