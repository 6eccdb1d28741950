//! Writing the model file atomically: a temp file in the target directory, then a rename, so a
//! failed or interrupted export never leaves a half-written model at the target path.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::ExportError;

/// The directory `path` will live in ("." for a bare file name).
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks that `path` can be a file target: its directory exists and it is not a directory.
/// Done before any work, so that a typo in `--out` fails fast.
pub fn check_target(path: &Path) -> Result<(), ExportError> {
    let dir = parent_dir(path);
    if !dir.is_dir() {
        return Err(ExportError::MissingDir { path: path.into(), dir });
    }
    if path.is_dir() || path.file_name().is_none() {
        return Err(ExportError::IsDir { path: path.into() });
    }
    Ok(())
}

/// Writes `bytes` to `path` via a temp file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    check_target(path)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = parent_dir(path).join(format!(".{name}.{}.tmp", std::process::id()));
    let err = |source| ExportError::Write { path: path.into(), source };
    let result = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        // The temp file may or may not exist here; either way it must not stay behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}
