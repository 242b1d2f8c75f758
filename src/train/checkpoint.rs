//! Checkpoints: one safetensors file holding the run's config, progress, weights and optimiser
//! state (see [`crate::io`] for the layout every remem file shares).
//!
//! The weights are f32 tensors named by module path; the run's config, progress, tokenizer,
//! model id and the weights' parameter ids are metadata; a training checkpoint adds the
//! optimiser's state as the `u8` tensor [`crate::io::OPTIMIZER`]. A file is written next to its
//! destination, synced, and renamed over it, so a run killed mid-write leaves the previous
//! checkpoint whole.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::config::RunConfig;
use crate::error::{Error, Result};
use crate::io::{self, FileKind, Named};
use crate::model::Model;

/// RMT's memory tokens' initial values: the one tensor `--init-from` may grow.
const MEMORY: &str = "memory";

pub use crate::io::fnv1a;

/// Where a run stands, saved with its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimiser steps done.
    pub step: usize,
    /// Segments of the current curriculum stage.
    pub segments: usize,
    /// The curriculum's measure (answer-token accuracy or exact match) over the last steps
    /// (its window).
    pub recent_accuracy: Vec<f64>,
    /// Wall-clock seconds spent training so far.
    pub elapsed_s: f64,
    /// Bytes each training stream has read (`train.carry_memory`; 0 otherwise).
    #[serde(default)]
    pub streamed: u64,
}

/// What a checkpoint file holds.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The resolved run config (vocabulary filled in).
    pub config: RunConfig,
    /// Progress at the time of writing.
    pub progress: Progress,
    /// The model's weights, named by module path.
    pub weights: Vec<Named>,
    /// The weights' parameter ids, which key the optimiser's state.
    pub param_ids: BTreeMap<String, u64>,
    /// The optimiser's state as Burn's record bytes; empty in files `remem export` writes.
    pub optimizer: Vec<u8>,
    /// The memory a run that carries it (`train.carry_memory`) takes into its next window,
    /// as a saved state's bytes ([`crate::model::State::to_bytes`]); empty otherwise and in
    /// files `remem export` writes.
    pub carried: Vec<u8>,
}

/// The id of a model: its architecture fingerprint and the hash of its weights. A saved state
/// names the model it belongs to with it.
pub fn model_id(config: &crate::model::ModelConfig, weights_hash: u64) -> String {
    format!("{}-w{weights_hash:016x}", config.fingerprint())
}

/// The names of the weights a checkpoint leaves out: a frozen backbone's (read from its file).
fn frozen_prefix(model: &crate::model::ModelConfig) -> Option<&'static str> {
    model
        .backbone
        .as_ref()
        .filter(|b| !b.train)
        .map(|_| crate::model::rmt_llama::BACKBONE)
}

impl Checkpoint {
    /// A checkpoint of `model` (on any device) with `config`, `progress` and the optimiser's
    /// record bytes (empty for weights only).
    pub fn new(
        model: &Model,
        config: RunConfig,
        progress: Progress,
        optimizer: Vec<u8>,
    ) -> Result<Self> {
        let (mut weights, mut param_ids) = io::module_tensors(model).map_err(Error::State)?;
        // A frozen backbone is read from its own file, not copied into every checkpoint.
        if let Some(prefix) = frozen_prefix(&config.model) {
            weights.retain(|(name, _)| !name.starts_with(prefix));
            param_ids.retain(|name, _| !name.starts_with(prefix));
        }
        Ok(Checkpoint {
            config,
            progress,
            weights,
            param_ids,
            optimizer,
            carried: Vec::new(),
        })
    }

    /// The same checkpoint holding `carried` (see [`Checkpoint::carried`]).
    pub fn with_carried(mut self, carried: Vec<u8>) -> Self {
        self.carried = carried;
        self
    }

    /// The id of the model these weights make (see [`model_id`]).
    pub fn model_id(&self) -> Result<String> {
        let hash = io::weights_hash(&self.weights).map_err(Error::State)?;
        Ok(model_id(&self.config.model, hash))
    }

    /// Serialise to the bytes of a safetensors file.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        fn json(v: &impl Serialize) -> String {
            serde_json::to_string(v).expect("metadata serialises")
        }
        let mut metadata = BTreeMap::new();
        metadata.insert("config".to_string(), json(&self.config));
        metadata.insert("model".to_string(), json(&self.config.model));
        metadata.insert("tokenizer".to_string(), json(&self.config.model.tokenizer));
        metadata.insert("progress".to_string(), json(&self.progress));
        metadata.insert("param_ids".to_string(), json(&self.param_ids));
        metadata.insert("model_id".to_string(), self.model_id()?);
        let mut tensors = self.weights.clone();
        for (name, bytes) in [
            (io::OPTIMIZER, &self.optimizer),
            (io::CARRIED, &self.carried),
        ] {
            if !bytes.is_empty() {
                tensors.push((
                    name.to_string(),
                    TensorData::new(bytes.clone(), [bytes.len()]),
                ));
            }
        }
        io::write(FileKind::Checkpoint, &tensors, metadata).map_err(Error::State)
    }

    /// Parse the bytes of a checkpoint file read from `path` (named in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        let mut contents = io::read(bytes, FileKind::Checkpoint).map_err(bad)?;
        let config: RunConfig = contents.json("config").map_err(bad)?;
        let progress: Progress = contents.json("progress").map_err(bad)?;
        let param_ids = contents.json("param_ids").map_err(bad)?;
        let id = contents.meta("model_id").map_err(bad)?;
        if !id.starts_with(&format!("{}-w", config.model.fingerprint())) {
            return Err(bad(format!(
                "its model id `{id}` does not match its config"
            )));
        }
        let mut bytes = |name| match contents.take(name) {
            Some(data) => data.into_bytes().to_vec(),
            None => Vec::new(),
        };
        let optimizer = bytes(io::OPTIMIZER);
        let carried = bytes(io::CARRIED);
        Ok(Checkpoint {
            config,
            progress,
            weights: contents.tensors.into_iter().collect(),
            param_ids,
            optimizer,
            carried,
        })
    }

    /// Read a checkpoint file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path).map_err(|e| Error::Checkpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::from_bytes(&bytes, path)
    }

    /// Write atomically (see [`write_atomic`]).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// The model these weights make, on `device`; weights that do not fit the config (missing,
    /// extra or wrongly shaped tensors, named) are an error. `path` names the file in errors.
    pub fn load_model(&self, path: &Path, device: &Device) -> Result<Model> {
        let model = Model::build(&self.config.model, self.config.seed, device)?;
        let kept = frozen_prefix(&self.config.model).unwrap_or("");
        io::load_module_except(model, &self.weights, &self.param_ids, kept)
            .map_err(|e| self.misfit(path, e))
    }

    /// These weights in a new model built from `config` (`train.init_from`: fine-tuning with
    /// other settings, or with new parts). The tokenizers must agree, and every weight here
    /// must be one of the new model's, of the same shape (a mismatch is named), except two
    /// that may grow: RMT's memory (more memory tokens keep the trained ones first and add
    /// fresh ones; rotary positions, as learned ones tie their table to the memory's size) and
    /// ARMT's key projections (a wider `key_dim` keeps the trained key and query columns first
    /// and adds fresh ones: the stores' features change, so the stores are relearnt, and every
    /// other weight carries over). Tensors the new model has and these weights lack (RMT's
    /// memory, over a Transformer's weights) keep their fresh values: their names are
    /// returned.
    pub fn init_into(
        &self,
        config: &crate::model::ModelConfig,
        seed: u64,
        path: &Path,
        device: &Device,
    ) -> Result<(Model, Vec<String>)> {
        if config.tokenizer != self.config.model.tokenizer {
            return Err(Error::Checkpoint {
                path: path.to_path_buf(),
                reason: crate::error::summarise(
                    &format!(
                        "its model reads {:?} tokens, the new one {:?}: the weights cannot carry \
                         over",
                        self.config.model.tokenizer, config.tokenizer
                    ),
                    300,
                ),
            });
        }
        let model = Model::build(config, seed, device)?;
        let (weights, widened) = self.widen(&model).map_err(|e| self.misfit(path, e))?;
        let (model, fresh) = io::load_module_adding(model, &weights, &self.param_ids)
            .map_err(|e| self.misfit(path, e))?;
        let fresh: Vec<String> = widened.into_iter().chain(fresh).collect();
        // A backbone's weights are read from its own file (frozen or trained), never fresh.
        let from_file = config
            .backbone
            .as_ref()
            .map(|_| crate::model::rmt_llama::BACKBONE);
        let fresh = fresh
            .into_iter()
            .filter(|n| from_file.is_none_or(|k| !n.starts_with(k)))
            .collect();
        Ok((model, fresh))
    }

    /// These weights grown to `model`'s where it is wider in one of two ways, the trained
    /// values first and the new model's fresh ones after them, named among the fresh tensors:
    /// RMT's memory with more tokens of the same width (`memory[8..16]`), and ARMT's stores
    /// with wider keys (`model.key_dim`), whose key and query projections gain columns
    /// (`stores.0.key.weight[.., 16..32]`). Any other weights, or these when they do not grow,
    /// are returned as they are (a mismatch is then named on loading).
    fn widen(&self, model: &Model) -> std::result::Result<(Vec<Named>, Vec<String>), String> {
        let (tensors, _) = io::module_tensors(model)?;
        let fresh: BTreeMap<&str, &TensorData> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut weights = self.weights.clone();
        let mut widened = Vec::new();
        for (name, old) in weights.iter_mut() {
            let axis = if name == MEMORY {
                0
            } else if name.starts_with("stores.")
                && (name.ends_with(".key.weight") || name.ends_with(".query.weight"))
            {
                1
            } else {
                continue;
            };
            let Some(new) = fresh.get(name.as_str()) else {
                continue;
            };
            if let Some((grown, from, to)) = grow(old, new, axis, name)? {
                *old = grown;
                widened.push(match axis {
                    0 => format!("{name}[{from}..{to}]"),
                    _ => format!("{name}[.., {from}..{to}]"),
                });
            }
        }
        Ok((weights, widened))
    }

    /// The error for weights that do not fit a model.
    fn misfit(&self, path: &Path, e: String) -> Error {
        Error::Checkpoint {
            path: path.to_path_buf(),
            reason: crate::error::summarise(&format!("weights do not fit the model: {e}"), 300),
        }
    }

    /// Read a checkpoint written by an earlier remem build (remem's own format 1, a
    /// `checkpoint.remem`), for `remem export` to convert. Its optimiser state is not carried
    /// over (it was keyed to the old format's parameter ids).
    pub fn from_legacy_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        legacy::read(bytes, path)
    }

    /// Whether `bytes` start like a checkpoint of an earlier remem build (format 1).
    pub fn is_legacy(bytes: &[u8]) -> bool {
        bytes.starts_with(legacy::MAGIC)
    }
}

/// `old` grown along `axis` (0: rows, 1: columns) to `new`'s size when both are matrices of
/// the same size on the other axis and `new` is larger: `old`'s values first, then `new`'s
/// beyond them, with the range that is fresh. `None` when it does not grow.
fn grow(
    old: &TensorData,
    new: &TensorData,
    axis: usize,
    name: &str,
) -> std::result::Result<Option<(TensorData, usize, usize)>, String> {
    let (from, to) = (
        old.shape().as_slice().to_vec(),
        new.shape().as_slice().to_vec(),
    );
    let other = 1 - axis;
    if from.len() != 2 || to.len() != 2 || from[other] != to[other] || from[axis] >= to[axis] {
        return Ok(None);
    }
    let (kept, grown) = (old.try_to_vec::<f32>(), new.try_to_vec::<f32>());
    let (kept, grown) = kept
        .ok()
        .zip(grown.ok())
        .ok_or_else(|| format!("{name} is not stored as f32"))?;
    let values: Vec<f32> = if axis == 0 {
        kept.into_iter()
            .chain(grown[from[0] * from[1]..].iter().copied())
            .collect()
    } else {
        let (a, b) = (from[1], to[1]);
        (0..to[0])
            .flat_map(|r| {
                kept[r * a..(r + 1) * a]
                    .iter()
                    .chain(&grown[r * b + a..(r + 1) * b])
                    .copied()
            })
            .collect()
    };
    Ok(Some((
        TensorData::new(values, [to[0], to[1]]),
        from[axis],
        to[axis],
    )))
}

/// remem's format-1 checkpoints: magic, version, three length-prefixed parts (JSON header,
/// Burn model record, optimiser record), FNV-1a checksum.
mod legacy {
    use burn::store::ModuleRecord;
    use burn::tensor::Bytes;

    use super::*;

    pub(super) const MAGIC: &[u8] = b"REMEMCK\0";

    #[derive(Deserialize)]
    struct Header {
        config: RunConfig,
        progress: Progress,
    }

    pub(super) fn read(bytes: &[u8], path: &Path) -> Result<Checkpoint> {
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() < 20 || !bytes.starts_with(MAGIC) {
            return Err(bad("not a checkpoint of an earlier remem build".into()));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        if fnv1a(body) != u64::from_le_bytes(sum.try_into().expect("8 bytes"))
            || body[8..12] != 1u32.to_le_bytes()
        {
            return Err(bad(
                "checksum mismatch: the file is truncated or corrupt".into()
            ));
        }
        let mut pos = 12;
        let mut parts = Vec::new();
        for name in ["header", "model"] {
            let len = body
                .get(pos..pos + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
                .ok_or_else(|| bad(format!("truncated before the {name}")))?;
            let part = body
                .get(pos + 8..(pos + 8).saturating_add(len))
                .ok_or_else(|| bad(format!("truncated inside the {name}")))?;
            parts.push(part);
            pos += 8 + len;
        }
        let header: Header =
            serde_json::from_slice(parts[0]).map_err(|e| bad(format!("unreadable header: {e}")))?;
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(parts[1].to_vec()))
            .map_err(|e| bad(format!("unreadable weights: {e}")))?;
        let device = Device::flex();
        let model = Model::new(&header.config.model, header.config.seed, &device)
            .try_load_record(record)
            .map_err(|e| {
                bad(crate::error::summarise(
                    &format!("weights do not fit: {e}"),
                    300,
                ))
            })?;
        Checkpoint::new(&model, header.config, header.progress, Vec::new())
    }
}

/// Write `bytes` to `path` atomically: a temporary file beside it (`<name>.tmp`), synced, then
/// renamed over it, so a process killed mid-write leaves the previous file whole.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Make the rename itself durable; not every platform can open a directory.
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let mut config = RunConfig::default();
        config.resolve().unwrap();
        let model = Model::new(&config.model, 1, &Device::flex());
        let progress = Progress {
            step: 7,
            segments: 3,
            recent_accuracy: vec![0.5],
            elapsed_s: 1.5,
            streamed: 96,
        };
        Checkpoint::new(&model, config, progress, vec![4, 5])
            .unwrap()
            .with_carried(vec![6, 7, 8])
    }

    /// `--init-from` into an RMT with more memory tokens keeps the trained ones first, adds the
    /// new model's fresh ones after them and names them, and carries every other weight over;
    /// fewer memory tokens are refused, naming the memory.
    #[test]
    fn init_from_grows_the_memory_and_never_shrinks_it() {
        let device = Device::flex();
        let mut config = RunConfig::default();
        config.model.positions = crate::model::Positions::Rotary;
        config.resolve().unwrap();
        let trained = Model::new(&config.model, 1, &device);
        let ck = Checkpoint::new(&trained, config.clone(), sample().progress, vec![]).unwrap();
        let path = Path::new("trained.safetensors");
        let (old, _) = io::module_tensors(&trained).unwrap();
        let m = config.model.memory_tokens;
        let mut wider = config.model.clone();
        wider.memory_tokens = m + 3;
        let (model, fresh) = ck.init_into(&wider, 9, path, &device).unwrap();
        assert_eq!(fresh, [format!("memory[{m}..{}]", m + 3)]);
        let (new, _) = io::module_tensors(&model).unwrap();
        let (blank, _) = io::module_tensors(&Model::new(&wider, 9, &device)).unwrap();
        let values = |tensors: &[Named], name: &str| -> Vec<f32> {
            let (_, data) = tensors.iter().find(|(n, _)| n == name).unwrap();
            data.clone().try_to_vec::<f32>().unwrap()
        };
        let d = config.model.d_model;
        let memory = values(&new, MEMORY);
        assert_eq!(memory.len(), (m + 3) * d);
        assert_eq!(memory[..m * d], values(&old, MEMORY)[..]);
        assert_eq!(memory[m * d..], values(&blank, MEMORY)[m * d..]);
        assert_ne!(memory[m * d..], values(&old, MEMORY)[..3 * d]);
        for (name, _) in old.iter().filter(|(n, _)| n != MEMORY) {
            assert_eq!(values(&new, name), values(&old, name), "{name}");
        }
        let mut narrower = config.model.clone();
        narrower.memory_tokens = m - 1;
        let err = ck
            .init_into(&narrower, 9, path, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains(MEMORY), "{err}");
    }

    /// `--init-from` into an ARMT with wider keys keeps each store's trained key and query
    /// columns first, adds the new model's fresh ones after them and names them, and carries
    /// every other weight over; narrower keys are refused, naming a key projection.
    #[test]
    fn init_from_widens_the_stores_keys_and_never_narrows_them() {
        let device = Device::flex();
        let mut config = RunConfig::default();
        config.model.kind = crate::model::ModelKind::Armt;
        config.model.key_dim = Some(4);
        config.resolve().unwrap();
        let trained = Model::new(&config.model, 1, &device);
        let ck = Checkpoint::new(&trained, config.clone(), sample().progress, vec![]).unwrap();
        let path = Path::new("trained.safetensors");
        let mut wider = config.model.clone();
        wider.key_dim = Some(6);
        let (model, fresh) = ck.init_into(&wider, 9, path, &device).unwrap();
        let keys: Vec<String> = (0..config.model.n_layers)
            .flat_map(|l| {
                [
                    format!("stores.{l}.key.weight"),
                    format!("stores.{l}.query.weight"),
                ]
            })
            .collect();
        let mut expected: Vec<String> = keys.iter().map(|k| format!("{k}[.., 4..6]")).collect();
        let mut fresh = fresh;
        expected.sort();
        fresh.sort();
        assert_eq!(fresh, expected);
        let (old, _) = io::module_tensors(&trained).unwrap();
        let (new, _) = io::module_tensors(&model).unwrap();
        let (blank, _) = io::module_tensors(&Model::new(&wider, 9, &device)).unwrap();
        let values = |tensors: &[Named], name: &str| -> Vec<f32> {
            let (_, data) = tensors.iter().find(|(n, _)| n == name).unwrap();
            data.clone().try_to_vec::<f32>().unwrap()
        };
        for key in &keys {
            let (grown, kept, fresh) = (values(&new, key), values(&old, key), values(&blank, key));
            assert_eq!(grown.len(), config.model.d_model * 6);
            for (r, row) in grown.chunks(6).enumerate() {
                assert_eq!(row[..4], kept[r * 4..r * 4 + 4], "{key} row {r}");
                assert_eq!(row[4..], fresh[r * 6 + 4..r * 6 + 6], "{key} row {r}");
            }
        }
        for (name, _) in old.iter().filter(|(n, _)| !keys.contains(n)) {
            assert_eq!(values(&new, name), values(&old, name), "{name}");
        }
        let mut narrower = config.model.clone();
        narrower.key_dim = Some(3);
        let err = ck
            .init_into(&narrower, 9, path, &device)
            .unwrap_err()
            .to_string();
        assert!(err.contains(".weight"), "{err}");
        assert!(err.contains("stores."), "{err}");
    }

    #[test]
    fn round_trip_and_every_truncation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.safetensors");
        let ck = sample();
        ck.save(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back.progress, ck.progress);
        assert_eq!(back.optimizer, ck.optimizer);
        assert_eq!(back.carried, ck.carried);
        assert_eq!(back.param_ids, ck.param_ids);
        let mut a = back.weights.clone();
        let mut b = ck.weights.clone();
        a.sort_by(|x, y| x.0.cmp(&y.0));
        b.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(a, b);
        assert_eq!(back.model_id().unwrap(), ck.model_id().unwrap());
        assert!(!tmp_path(&path).exists());

        let bytes = ck.to_bytes().unwrap();
        // Every cut in the header and a sample through the data.
        let step = (bytes.len() / 997).max(1);
        for cut in (0..2048.min(bytes.len())).chain((2048..bytes.len()).step_by(step)) {
            assert!(
                Checkpoint::from_bytes(&bytes[..cut], &path).is_err(),
                "cut at {cut}"
            );
        }
        // A flipped bit anywhere in the data is caught by the checksum.
        for at in [bytes.len() - 1, bytes.len() / 2, bytes.len() - 100] {
            let mut flipped = bytes.clone();
            flipped[at] ^= 1;
            let err = Checkpoint::from_bytes(&flipped, &path)
                .unwrap_err()
                .to_string();
            assert!(err.contains("corrupt"), "{err}");
        }
    }
}
