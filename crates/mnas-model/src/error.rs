use std::path::PathBuf;

use mnas_space::SpaceError;
use thiserror::Error;

/// Everything that can go wrong building a model or moving its weights.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error(transparent)]
    Arch(#[from] SpaceError),
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid safetensors file: {reason}")]
    Safetensors { path: PathBuf, reason: String },
    #[error("{path}: tensor `{name}` is missing (the file does not hold weights for this architecture)")]
    MissingTensor { path: PathBuf, name: String },
    #[error("{path}: tensor `{name}` has shape {got:?}, the architecture needs {expected:?}")]
    ShapeMismatch { path: PathBuf, name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("{path}: tensor `{name}` has dtype {dtype}, expected F32")]
    Dtype { path: PathBuf, name: String, dtype: String },
    #[error("invalid training configuration: {0}")]
    Config(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
    #[error(transparent)]
    Data(#[from] mnas_data::DataError),
    #[error("{path}: tensor `{name}` holds non-finite values")]
    NonFinite { path: PathBuf, name: String },
}
