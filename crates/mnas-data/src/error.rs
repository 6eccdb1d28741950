use std::path::PathBuf;

use thiserror::Error;

/// Everything that can be wrong with a dataset on disk. Every variant names the file or folder.
#[derive(Debug, Error)]
pub enum DataError {
    #[error("{path}: no such file or directory")]
    NotFound { path: PathBuf },
    #[error("cannot read {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot decode image: {reason}")]
    Decode { path: String, reason: String },
    #[error("{path}: class folder holds no JPEG or PNG images")]
    EmptyClass { path: String },
    #[error("{path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: found no images; expected class subfolders of JPEG/PNG files (ImageFolder), CIFAR-10 binary batches, or IDX files")]
    NoImages { path: PathBuf },
    #[error("invalid option: {0}")]
    Invalid(String),
}
