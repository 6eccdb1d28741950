use thiserror::Error;

/// Everything that can be wrong with an architecture description.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum SpaceError {
    #[error("unknown model `{name}`; known models: {known}")]
    UnknownModel { name: String, known: String },
    #[error("bad block string `{input}`: {reason}")]
    BlockString { input: String, reason: String },
    #[error("invalid architecture: `{field}` {reason}")]
    InvalidArch { field: String, reason: String },
    #[error("invalid architecture JSON: {0}")]
    Json(String),
    #[error("bad token list: {0}")]
    Tokens(String),
}
