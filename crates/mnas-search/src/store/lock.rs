//! The one-writer rule of a run directory: an exclusive `flock` on `RUN/lock`.
//!
//! `flock` locks belong to an open file description, so the kernel drops the lock when the holder
//! exits for any reason (kill -9 included) and no stale lock file can block a resume. Two opens in
//! one process are two descriptions and conflict too, which keeps tests honest. The holder writes
//! its pid into the file only so that the refusal can name it. Local filesystems only: on NFS
//! `flock` may be emulated or ignored.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use crate::error::{Result, SearchError};

pub const LOCK_FILE: &str = "lock";

/// Held while alive; dropping it (or the process dying) releases the lock.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Takes the lock of run directory `dir` without waiting.
    pub fn acquire(dir: &Path) -> Result<WriterLock> {
        let path = dir.join(LOCK_FILE);
        let io_err = |what: &str, e: std::io::Error| SearchError::Run {
            dir: dir.display().to_string(),
            message: format!("cannot {what} {}: {e}", path.display()),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io_err("open", e))?;
        // SAFETY: flock on a descriptor this function owns; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                // The holder may be between taking the lock and writing its pid: say so, do not guess.
                let pid = match file.read_to_string(&mut text) {
                    Ok(_) if !text.trim().is_empty() => text.trim().to_string(),
                    _ => "unknown".to_string(),
                };
                return Err(SearchError::Run {
                    dir: dir.display().to_string(),
                    message: format!("in use by another mnas process (pid {pid})"),
                });
            }
            return Err(io_err("lock", e));
        }
        let pid = std::process::id();
        file.set_len(0)
            .and_then(|_| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{pid}"))
            .map_err(|e| io_err("write", e))?;
        tracing::debug!(path = %path.display(), pid, "took the run lock");
        Ok(WriterLock { _file: file })
    }
}
