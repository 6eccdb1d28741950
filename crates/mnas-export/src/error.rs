use std::path::PathBuf;

use mnas_space::SpaceError;
use thiserror::Error;

/// Everything that can stop an export. Nothing is written to disk when one is returned.
#[derive(Debug, Error)]
pub enum ExportError {
    /// The model's architecture is invalid.
    #[error("cannot export: {0}")]
    Arch(#[from] SpaceError),
    /// The model's modules do not match what its architecture says they should be.
    #[error("cannot export: {0}")]
    Structure(String),
    /// A tensor that cannot be written as-is (non-finite after BN folding, wrong size).
    #[error("cannot export tensor `{tensor}`: {reason}")]
    Tensor { tensor: String, reason: String },
    /// An export option out of range.
    #[error("invalid export option: {0}")]
    Option(String),
    /// protobuf caps a message, hence a single-file ONNX model, at 2 GiB.
    #[error(
        "the ONNX model would hold {bytes} bytes of weights; a single-file ONNX model is limited to 2 GiB \
         (external data is not supported)"
    )]
    TooLarge { bytes: u64 },
    #[error("cannot write {path}: directory {dir} does not exist")]
    MissingDir { path: PathBuf, dir: PathBuf },
    #[error("cannot write {path}: it is a directory")]
    IsDir { path: PathBuf },
    #[error("cannot write {path}")]
    Write { path: PathBuf, source: std::io::Error },
}
