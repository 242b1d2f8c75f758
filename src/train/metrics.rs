//! Metrics as JSON lines in the run folder (`metrics.jsonl`), one object per event.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// Appends one JSON object per line.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Open `path` for appending. When `keep_until` is set (a resumed run), lines of steps after
    /// it (written after the checkpoint the run resumes from) are dropped first.
    pub fn open(path: &Path, keep_until: Option<usize>) -> Result<Self> {
        if let Some(step) = keep_until
            && path.exists()
        {
            let kept: Vec<String> =
                BufReader::new(File::open(path).map_err(|e| Error::io(path, e))?)
                    .lines()
                    .map_while(std::result::Result::ok)
                    .filter(|line| {
                        serde_json::from_str::<serde_json::Value>(line)
                            .ok()
                            .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64))
                            .is_some_and(|s| s as usize <= step)
                    })
                    .collect();
            let mut text = kept.join("\n");
            if !text.is_empty() {
                text.push('\n');
            }
            // Whole or not at all: a run killed here keeps its metrics.
            super::checkpoint::write_atomic(path, text.as_bytes())?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Write one record.
    pub fn write(&mut self, record: &impl Serialize) -> Result<()> {
        let mut line = serde_json::to_string(record).expect("metrics serialise");
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| Error::io(&self.path, e))
    }
}
