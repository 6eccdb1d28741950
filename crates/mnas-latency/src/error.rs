use std::path::PathBuf;

use mnas_export::ExportError;
use mnas_model::ModelError;
use mnas_space::SpaceError;
use thiserror::Error;

/// Everything that can stop a measurement or a store access.
#[derive(Debug, Error)]
pub enum LatencyError {
    /// A measurement option out of range (runs, threads, core, ...).
    #[error("invalid latency option: {0}")]
    Option(String),
    #[error("cannot measure: {0}")]
    Arch(#[from] SpaceError),
    #[error("cannot build the model: {0}")]
    Model(#[from] ModelError),
    /// BN folding refused a tensor (non-finite after folding).
    #[error("cannot build the inference model: {0}")]
    Fold(#[from] ExportError),
    /// The engine failed while running the model.
    #[error("inference failed: {0}")]
    Engine(String),
    /// ONNX Runtime could not be loaded or refused the model.
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    /// Pinning a thread to a core, or building the thread pool, failed.
    #[error("cannot pin the measurement: {0}")]
    Pin(String),
    #[error("latency store {path}: is a directory, expected a SQLite file")]
    StoreIsDir { path: PathBuf },
    #[error("latency store {path}: not a SQLite database (move it away or pass another --store)")]
    NotADatabase { path: PathBuf },
    #[error("latency store {path}: {reason}")]
    Store { path: PathBuf, reason: String },
}

pub type Result<T, E = LatencyError> = std::result::Result<T, E>;
