use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum PipelineError {
    #[error(transparent)]
    Data(#[from] mnas_data::DataError),
    #[error(transparent)]
    Space(#[from] mnas_space::SpaceError),
    #[error(transparent)]
    Engine(#[from] mnas_engine::EngineError),
    #[error("invalid proxy setting: {0}")]
    Proxy(String),
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    Reference { path: PathBuf, reason: String },
    #[error("invalid benchmark setting: {0}")]
    Bench(String),
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
