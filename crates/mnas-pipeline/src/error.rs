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
    #[error(transparent)]
    Measure(#[from] mnas_latency::LatencyError),
    #[error("latency device: {0}")]
    Latency(String),
    #[error(transparent)]
    Search(#[from] mnas_search::SearchError),
    /// A setting given to a resumed search that differs from the stored one.
    #[error("the {setting} {given} contradicts this run's stored setting {stored}; a resumed search keeps its settings (start a new run to change them)")]
    Contradicts { setting: &'static str, given: String, stored: String },
    #[error("{0}")]
    Broker(String),
    /// A search setting out of range, or a run that cannot start.
    #[error("{0}")]
    Run(String),
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;
