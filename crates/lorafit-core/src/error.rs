//! The one error type of lorafit-core: every message names what was wrong and what is allowed.

/// Everything lorafit-core can reject.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A model `config.json` that cannot describe a supported model.
    #[error("model config: {0}")]
    ModelConfig(String),
    /// A configuration key with a value outside what it allows.
    #[error("`{key}: {value}` is not allowed: {allowed}")]
    BadValue {
        key: String,
        value: String,
        allowed: String,
    },
    /// Two keys that cannot be used together.
    #[error("conflicting keys: {0}")]
    Conflict(String),
    /// A key that must be present is missing.
    #[error("`{0}` is required")]
    Missing(String),
    /// A model or GPU id that is not in the catalog.
    #[error("unknown {kind} `{id}`{hint}")]
    Unknown {
        kind: &'static str,
        id: String,
        hint: String,
    },
    /// The configuration text itself does not parse.
    #[error("configuration: {0}")]
    Syntax(String),
}

impl Error {
    pub(crate) fn bad(
        key: &str,
        value: impl std::fmt::Display,
        allowed: impl Into<String>,
    ) -> Self {
        Error::BadValue {
            key: key.to_string(),
            value: value.to_string(),
            allowed: allowed.into(),
        }
    }
}
