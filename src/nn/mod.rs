//! Pieces every model shares: attention that can return its weights, the pre-norm block, masks.

pub mod attention;
pub mod block;
pub mod mask;

pub use attention::{Attention, AttentionConfig, AttentionOutput};
pub use block::{Block, BlockConfig, BlockOutput};
pub use mask::{Mask, causal_mask};
