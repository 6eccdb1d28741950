//! Core affinity: which cores this process may run on, and pinning a thread to one of them.

use crate::error::{LatencyError, Result};

/// The cores this process may run on (its affinity mask), ascending.
#[cfg(target_os = "linux")]
pub fn allowed_cores() -> Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most sizeof(cpu_set_t) bytes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Err(LatencyError::Pin(format!("sched_getaffinity: {}", std::io::Error::last_os_error())));
        }
        Ok((0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect())
    }
}

/// Pins the calling thread to `core`.
#[cfg(target_os = "linux")]
pub fn pin_current_thread(core: usize) -> Result<()> {
    if core >= libc::CPU_SETSIZE as usize {
        return Err(LatencyError::Pin(format!("core {core} is beyond the CPU set size")));
    }
    // SAFETY: as above; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(LatencyError::Pin(format!(
                "sched_setaffinity to core {core}: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

/// Runs `f` with the calling thread allowed on all of `cores`, then restores its own affinity:
/// threads that `f` starts inherit the wider set. (ONNX Runtime's intra-op pool, started by a
/// thread pinned to one core, would otherwise crowd onto that core.)
#[cfg(target_os = "linux")]
pub fn with_threads_spawned_on<T>(cores: &[usize], f: impl FnOnce() -> T) -> Result<T> {
    // SAFETY: cpu_set_t is plain data; pid 0 is the calling thread; sizes match the type.
    unsafe {
        let mut saved: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut saved) != 0 {
            return Err(LatencyError::Pin(format!("sched_getaffinity: {}", std::io::Error::last_os_error())));
        }
        let mut wide: libc::cpu_set_t = std::mem::zeroed();
        for &c in cores.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(c, &mut wide);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &wide) != 0 {
            return Err(LatencyError::Pin(format!(
                "sched_setaffinity to {cores:?}: {}",
                std::io::Error::last_os_error()
            )));
        }
        let out = f();
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &saved) != 0 {
            return Err(LatencyError::Pin(format!("restoring affinity: {}", std::io::Error::last_os_error())));
        }
        Ok(out)
    }
}

#[cfg(not(target_os = "linux"))]
pub fn with_threads_spawned_on<T>(_cores: &[usize], f: impl FnOnce() -> T) -> Result<T> {
    Ok(f())
}

/// Elsewhere affinity is not set: every core counts as allowed and pinning is a no-op.
#[cfg(not(target_os = "linux"))]
pub fn allowed_cores() -> Result<Vec<usize>> {
    Ok((0..std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).collect())
}

#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(core: usize) -> Result<()> {
    tracing::warn!(core, "thread pinning is only implemented on Linux; measuring unpinned");
    Ok(())
}

/// The cores `threads` measuring threads go to: from `first` on when given (it must be allowed),
/// else the last `threads` allowed cores (core 0 tends to take more interrupts).
pub fn choose_cores(allowed: &[usize], threads: usize, first: Option<usize>) -> Result<Vec<usize>> {
    if threads == 0 {
        return Err(LatencyError::Option("threads must be at least 1".into()));
    }
    if threads > allowed.len() {
        return Err(LatencyError::Option(format!(
            "{threads} threads but only {} core{} available to this process ({})",
            allowed.len(),
            if allowed.len() == 1 { " is" } else { "s are" },
            list(allowed)
        )));
    }
    let start = match first {
        Some(core) => allowed.iter().position(|&c| c == core).ok_or_else(|| {
            LatencyError::Option(format!("core {core} is not available to this process (allowed: {})", list(allowed)))
        })?,
        None => allowed.len() - threads,
    };
    Ok((0..threads).map(|i| allowed[(start + i) % allowed.len()]).collect())
}

fn list(cores: &[usize]) -> String {
    cores.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_cores() {
        assert_eq!(choose_cores(&[0, 1, 2, 3], 1, None).unwrap(), vec![3]);
        assert_eq!(choose_cores(&[0, 1, 2, 3], 2, None).unwrap(), vec![2, 3]);
        assert_eq!(choose_cores(&[0, 1, 2, 3], 2, Some(3)).unwrap(), vec![3, 0]);
        assert_eq!(choose_cores(&[4, 6], 1, Some(4)).unwrap(), vec![4]);
        let e = choose_cores(&[0, 1], 3, None).unwrap_err().to_string();
        assert!(e.contains("3 threads") && e.contains("only 2 cores"), "{e}");
        let e = choose_cores(&[0, 1], 1, Some(5)).unwrap_err().to_string();
        assert!(e.contains("core 5"), "{e}");
        assert!(choose_cores(&[0], 0, None).is_err());
    }

    #[test]
    fn pins_a_thread_to_an_allowed_core() {
        let allowed = allowed_cores().unwrap();
        assert!(!allowed.is_empty());
        let core = *allowed.last().unwrap();
        let seen = std::thread::spawn(move || {
            pin_current_thread(core).unwrap();
            allowed_cores().unwrap()
        })
        .join()
        .unwrap();
        if cfg!(target_os = "linux") {
            assert_eq!(seen, vec![core]);
        }
    }

    /// What ONNX Runtime's pool depends on: threads started inside get every measuring core, and
    /// the pinned caller gets its own core back afterwards.
    #[cfg(target_os = "linux")]
    #[test]
    fn threads_started_in_the_wider_set_inherit_it() {
        let allowed = allowed_cores().unwrap();
        let first = allowed[0];
        let (inner, spawned, after) = std::thread::spawn(move || {
            pin_current_thread(first).unwrap();
            let (inner, spawned) = with_threads_spawned_on(&allowed, || {
                (allowed_cores().unwrap(), std::thread::spawn(|| allowed_cores().unwrap()).join().unwrap())
            })
            .unwrap();
            (inner, spawned, allowed_cores().unwrap())
        })
        .join()
        .unwrap();
        let all = allowed_cores().unwrap();
        assert_eq!(inner, all);
        assert_eq!(spawned, all, "a thread started inside inherits the whole set");
        assert_eq!(after, vec![first], "the caller is pinned again");
    }
}
