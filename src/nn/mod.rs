//! Pieces every model shares: attention that can return its weights, the pre-norm block, masks,
//! and the infinity-former's continuous long-term memory.

pub mod attention;
pub mod basis;
pub mod block;
pub(crate) mod checked;
pub(crate) mod cpu;
pub mod dropout;
pub mod gelu;
pub mod init;
pub mod linear;
pub mod ltm;
pub mod mask;
pub mod matmul;
pub mod norm;
pub mod softmax;

pub use crate::ops::attention::{fused_attention, fused_attention_with_weights};
pub use attention::{Attention, AttentionConfig, AttentionOutput};
pub use basis::Basis;
pub use block::{Block, BlockConfig, BlockOutput};
pub use dropout::Dropout;
pub use gelu::gelu;
pub use init::{Init, Noise};
pub use linear::{linear, scaled_identity};
pub use ltm::{Density, LongTermMemory, LtmConfig, LtmRead, LtmSampling};
pub use mask::{BiasCache, Mask, causal_mask};
pub use matmul::matmul;
pub use norm::{LayerNorm, LayerNormConfig, layer_norm};
pub use softmax::masked_softmax;
