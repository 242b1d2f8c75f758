//! Pieces every model shares: attention that can return its weights, the pre-norm block, masks,
//! the infinity-former's continuous long-term memory and ARMT's associative memory.

pub mod associative;
pub mod attention;
pub mod basis;
pub mod block;
pub mod dropout;
pub mod init;
pub mod linear;
pub mod ltm;
pub mod mask;
pub mod norm;

pub use crate::ops::attention::{
    fused_attention, fused_attention_over, fused_attention_with_weights,
};
pub use crate::ops::gelu::gelu;
pub use crate::ops::matmul::matmul;
pub use crate::ops::softmax::masked_softmax;
pub use associative::{AssociativeMemory, StoreRule};
pub use attention::{Attention, AttentionConfig, AttentionOutput};
pub use basis::Basis;
pub use block::{Block, BlockConfig, BlockOutput};
pub use dropout::Dropout;
pub use init::{Init, Noise};
pub use linear::{linear, scaled_identity};
pub use ltm::{Density, LongTermMemory, LtmConfig, LtmRead, LtmSampling};
pub use mask::{Constants, Mask, causal_mask};
pub use norm::{LayerNorm, LayerNormConfig, layer_norm};
