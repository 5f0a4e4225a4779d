//! The error type of lorafit-data: every message names the file, row or key that was wrong.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file that cannot be used as a whole (tokenizer, dataset_info.json, a data file).
    #[error("{path}: {msg}")]
    File { path: PathBuf, msg: String },
    /// A row of a data file.
    #[error("{path}, {what}: {msg}")]
    Data {
        path: PathBuf,
        what: String,
        msg: String,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.into(),
        }
    }
    pub fn data(path: impl Into<PathBuf>, what: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            what: what.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
