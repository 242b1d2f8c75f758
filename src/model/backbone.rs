//! Which pretrained model a backbone path holds: a Llama-family decoder (a GGUF file, or a
//! Hugging Face folder whose `config.json` says `llama`) or a BERT encoder (a folder whose
//! `config.json` says `bert`).

use std::path::Path;

use super::bert::BertConfig;
use super::llama::LlamaConfig;
use crate::error::{Error, Result};

/// A backbone's architecture, as its files state it.
#[derive(Debug, Clone, PartialEq)]
pub enum Architecture {
    /// A Llama-family decoder.
    Llama(LlamaConfig),
    /// A BERT encoder.
    Bert(BertConfig),
}

impl Architecture {
    /// Read the architecture of the model at `path` (its config only, not its weights).
    pub fn open(path: &Path) -> Result<Self> {
        match bert_config(path)? {
            Some(bert) => Ok(Architecture::Bert(bert)),
            None => Ok(Architecture::Llama(LlamaConfig::open(path)?)),
        }
    }

    /// The most positions one forward pass can read.
    pub fn max_positions(&self) -> usize {
        match self {
            Architecture::Llama(c) => c.max_position_embeddings,
            Architecture::Bert(c) => c.max_position_embeddings,
        }
    }
}

/// The BERT config of a Hugging Face folder whose `config.json` says `"model_type": "bert"`;
/// `None` for anything else (a GGUF file is not opened).
pub fn bert_config(path: &Path) -> Result<Option<BertConfig>> {
    let json = path.join("config.json");
    if !(path.is_dir() && json.is_file()) {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&json).map_err(|e| Error::io(&json, e))?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::ConfigFile {
        path: json.clone(),
        reason: format!("not JSON: {e}"),
    })?;
    if value.get("model_type").and_then(|v| v.as_str()) != Some("bert") {
        return Ok(None);
    }
    Ok(Some(BertConfig::from_file(&json)?))
}

/// The backbone `module` as `config` trains it: as loaded with `[model.backbone] train = true`,
/// otherwise frozen (its weights get no gradient and checkpoints leave them out).
pub fn as_configured<M: burn::module::Module>(config: &super::ModelConfig, module: M) -> M {
    match config.backbone.as_ref().is_some_and(|b| b.train) {
        true => module,
        false => module.no_grad(),
    }
}
