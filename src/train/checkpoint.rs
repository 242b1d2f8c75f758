//! Checkpoints: one file holding the run's config, progress, weights and optimiser state.
//!
//! Layout: magic, format version, then three length-prefixed parts (JSON header, model record,
//! optimiser record), then an FNV-1a checksum of everything before it. A file is written next to
//! its destination, synced, and renamed over it, so a run killed mid-write leaves the previous
//! checkpoint whole.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::RunConfig;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"REMEMCK\0";
const VERSION: u32 = 1;

/// Where a run stands, saved with its weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimiser steps done.
    pub step: usize,
    /// Segments of the current curriculum stage.
    pub segments: usize,
    /// Training accuracies of the last steps (the curriculum's window).
    pub recent_accuracy: Vec<f64>,
    /// Wall-clock seconds spent training so far.
    pub elapsed_s: f64,
}

/// What a checkpoint file holds.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// The resolved run config (vocabulary filled in).
    pub config: RunConfig,
    /// Progress at the time of writing.
    pub progress: Progress,
    /// The model's burnpack record.
    pub model: Vec<u8>,
    /// The optimiser's burnpack record.
    pub optimizer: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    remem_version: String,
    fingerprint: String,
    config: RunConfig,
    progress: Progress,
}

/// FNV-1a, 64 bits: the checksum of checkpoints and the weights hash in a session's model id.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Checkpoint {
    /// Serialise to bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = serde_json::to_vec(&Header {
            remem_version: env!("CARGO_PKG_VERSION").to_string(),
            fingerprint: self.config.model.fingerprint(),
            config: self.config.clone(),
            progress: self.progress.clone(),
        })
        .expect("header serialises");
        let mut out =
            Vec::with_capacity(header.len() + self.model.len() + self.optimizer.len() + 48);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        for part in [&header, &self.model, &self.optimizer] {
            out.extend_from_slice(&(part.len() as u64).to_le_bytes());
            out.extend_from_slice(part);
        }
        let sum = fnv1a(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// Parse bytes read from `path` (named in errors).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::Checkpoint {
            path: path.to_path_buf(),
            reason,
        };
        if bytes.len() < MAGIC.len() + 4 + 8 || &bytes[..8] != MAGIC {
            return Err(bad("not a remem checkpoint (bad magic bytes)".into()));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 8);
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        // The checksum first: a damaged file's version field is as damaged as the rest.
        let intact = fnv1a(body) == u64::from_le_bytes(sum.try_into().expect("8 bytes"));
        if (1..VERSION).contains(&version) {
            return Err(bad(format!(
                "written by an earlier remem build (checkpoint format {version}; this build \
                 reads {VERSION}): retrain, or export it with the build that wrote it"
            )));
        }
        if !intact {
            return Err(bad(
                "checksum mismatch: the file is truncated or corrupt".into()
            ));
        }
        if version != VERSION {
            return Err(bad(format!(
                "checkpoint format {version}, this build reads {VERSION} (written by a newer remem?)"
            )));
        }
        let mut pos = 12;
        let mut parts = Vec::new();
        for name in ["header", "model", "optimizer"] {
            let len = body
                .get(pos..pos + 8)
                .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize)
                .ok_or_else(|| bad(format!("truncated before the {name}")))?;
            let part = pos
                .checked_add(8)
                .and_then(|s| s.checked_add(len).map(|e| (s, e)))
                .and_then(|(s, e)| body.get(s..e))
                .ok_or_else(|| bad(format!("truncated inside the {name}")))?;
            parts.push(part);
            pos += 8 + len;
        }
        let header: Header =
            serde_json::from_slice(parts[0]).map_err(|e| bad(format!("unreadable header: {e}")))?;
        if header.fingerprint != header.config.model.fingerprint() {
            return Err(bad("header fingerprint does not match its config".into()));
        }
        Ok(Checkpoint {
            config: header.config,
            progress: header.progress,
            model: parts[1].to_vec(),
            optimizer: parts[2].to_vec(),
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
        write_atomic(path, &self.to_bytes())
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
        Checkpoint {
            config,
            progress: Progress {
                step: 7,
                segments: 3,
                recent_accuracy: vec![0.5],
                elapsed_s: 1.5,
            },
            model: vec![1, 2, 3],
            optimizer: vec![4, 5],
        }
    }

    #[test]
    fn round_trip_and_every_truncation_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.remem");
        let ck = sample();
        ck.save(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back.progress, ck.progress);
        assert_eq!(back.model, ck.model);
        assert_eq!(back.optimizer, ck.optimizer);
        assert!(!tmp_path(&path).exists());

        let bytes = ck.to_bytes();
        for cut in 0..bytes.len() {
            assert!(
                Checkpoint::from_bytes(&bytes[..cut], &path).is_err(),
                "cut at {cut}"
            );
        }
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        let err = Checkpoint::from_bytes(&flipped, &path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("corrupt"), "{err}");
    }
}
