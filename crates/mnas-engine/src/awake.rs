//! Keeping a pool's other threads awake for the length of one inference.
//!
//! An inference at batch 1 is a hundred parallel ops of tens of microseconds each. Between two
//! of them rayon's idle threads go to sleep, and each op then waits for a thread to be woken
//! (on a VM, for a halted virtual CPU to be resumed): MnasNet-A1 on 2 threads of a Xeon VM took
//! 5.3 ms where ONNX Runtime, whose pool threads spin between ops, took 4.0. Here the other
//! threads spin for the length of the pass and take its work as it appears.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The longest wait for the other threads to pick up their spinning task before `f` starts
/// anyway (a thread busy elsewhere joins late, or not at all).
const START_WAIT: Duration = Duration::from_micros(200);

/// The longest a thread spins. A thread that took the task while waiting inside other work of
/// the pool (two passes at once in one pool) holds that work back while it spins; past this,
/// it returns to it, and the rest of a long pass runs as rayon runs it, with idle threads asleep.
const MOST_SPIN: Duration = Duration::from_millis(100);

/// Runs `f` on this thread while the other threads of its rayon pool spin, executing the pool's
/// pending work, until `f` returns. Outside a pool, or in a pool of one thread, just runs `f`.
pub fn with_pool_awake<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    let threads = rayon::current_num_threads();
    let Some(caller) = rayon::current_thread_index() else { return f() };
    if threads < 2 {
        return f();
    }
    let done = AtomicBool::new(false);
    let spinning = AtomicUsize::new(0);
    rayon::scope(|s| {
        for _ in 1..threads {
            s.spawn(|_| {
                // The caller takes a spinner back from its own queue when it waits inside `f`
                // (or when the scope ends): spinning there would wait for itself.
                if rayon::current_thread_index() == Some(caller) {
                    return;
                }
                spinning.fetch_add(1, Ordering::AcqRel);
                let since = Instant::now();
                while !done.load(Ordering::Acquire) && since.elapsed() < MOST_SPIN {
                    if !matches!(rayon::yield_now(), Some(rayon::Yield::Executed)) {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        let start = Instant::now();
        while spinning.load(Ordering::Acquire) < threads - 1 && start.elapsed() < START_WAIT {
            std::hint::spin_loop();
        }
        let out = f();
        done.store(true, Ordering::Release);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// The pass's parallel work is done (by either thread) and the spinners stop when it ends,
    /// also when the other thread is busy elsewhere and never spins.
    #[test]
    fn work_runs_and_the_spinners_stop() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
        let sum = pool.install(|| with_pool_awake(|| (0..10_000u64).into_par_iter().map(|i| i * i).sum::<u64>()));
        assert_eq!(sum, (0..10_000u64).map(|i| i * i).sum::<u64>());
        // Many passes in a row: none may hang on a spinner left behind.
        let total: u64 =
            pool.install(|| (0..200).map(|_| with_pool_awake(|| (0..100u64).into_par_iter().sum::<u64>())).sum());
        assert_eq!(total, 200 * 4950);
        // The other thread busy with a long task: the pass still runs (on the caller alone).
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        pool.spawn(move || {
            let _ = rx.recv_timeout(Duration::from_secs(5));
        });
        let alone = pool.install(|| with_pool_awake(|| (0..1000u64).into_par_iter().sum::<u64>()));
        assert_eq!(alone, 499_500);
        drop(tx);
        // Outside any pool: runs as is.
        assert_eq!(with_pool_awake(|| 7), 7);
    }
}
