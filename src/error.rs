//! The library's error type. Every error names what is wrong in one line.

use std::path::PathBuf;

/// Everything that can go wrong in remem on user input, files or devices.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is invalid; `field` is its dotted path (`model.d_model`).
    #[error("invalid config: {field}: {reason}")]
    Config {
        /// Dotted path of the offending field.
        field: String,
        /// Why the value cannot work.
        reason: String,
    },
    /// A config file could not be parsed (TOML syntax, unknown key, wrong type).
    #[error("cannot read config {path}: {reason}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// The parser's message, on one line.
        reason: String,
    },
    /// The requested device cannot be used.
    #[error("device: {0}")]
    Device(String),
    /// A checkpoint is missing, truncated, corrupt or belongs to another model.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A pretrained model's file (weights, config, tokenizer) is missing, unreadable, or does
    /// not fit the architecture it claims.
    #[error("backbone {path}: {reason}")]
    Backbone {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Another process is training in the run folder (it holds the folder's lock).
    #[error(
        "run folder {} is in use by another remem process: wait for it to end, or choose another --run-dir",
        .0.display()
    )]
    Busy(PathBuf),
    /// A serialised memory state cannot be read or does not fit the model.
    #[error("state: {0}")]
    State(String),
    /// A token id outside the model's vocabulary, or an input of the wrong length.
    #[error("input: {0}")]
    Input(String),
    /// A file or folder could not be read or written.
    ///
    /// The message already says why, so the io error is not also chained as a `source` (an
    /// `anyhow` report would print it twice).
    #[error("{}: {error}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
}

impl Error {
    /// A [`Error::Config`] for `field`.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error,
        }
    }
}

/// `text` on one line, cut to `max` characters with a note of how many were left out, so an
/// error quoting a long list (every tensor of a record, say) stays readable.
pub fn summarise(text: &str, max: usize) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let len = line.chars().count();
    if len <= max {
        return line;
    }
    let cut: String = line.chars().take(max).collect();
    format!("{cut}... ({} more characters)", len - max)
}

/// `Result` with remem's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    #[test]
    fn summarise_keeps_short_text_and_cuts_long_text() {
        assert_eq!(super::summarise("a\n  b", 10), "a b");
        let long = "x".repeat(1000);
        let short = super::summarise(&long, 100);
        assert!(short.starts_with(&"x".repeat(100)), "{short}");
        assert!(short.ends_with("(900 more characters)"), "{short}");
    }
}
