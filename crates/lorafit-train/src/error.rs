//! The one error type of lorafit-train: every message names the file, key or tensor that was wrong
//! and what was expected.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model, reading data or training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] lorafit_core::Error),
    /// Reading or encoding the dataset (lorafit-data).
    #[error(transparent)]
    Dataset(#[from] lorafit_data::Error),
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error("{0}")]
    Unsupported(String),
    #[error("{path}, {what}: {msg}")]
    Data {
        path: PathBuf,
        what: String,
        msg: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the loss is {loss} at step {step}: training stopped; {kept}")]
    NonFiniteLoss { step: u64, loss: f64, kept: String },
    #[error("device error: {0}")]
    Device(String),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn ckpt(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
