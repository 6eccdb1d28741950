//! Measurements through the store: what it holds is served while it still describes this
//! machine (enough runs, a stable spread, taken at the machine's pace of now), the rest is
//! measured and stored.

use mnas_space::Arch;

use crate::error::Result;
use crate::measure::{self, BuiltIn, LocalEngine, MeasureOptions, Measurement};
use crate::store::{Key, Store};

/// The store key a measurement of `arch` with `opts` would get on this machine's built-in engine.
pub fn key_for(arch: &Arch, opts: &MeasureOptions) -> Key {
    key_on(&BuiltIn, arch, opts)
}

/// The store key a measurement of `arch` with `opts` would get on `engine` here.
pub fn key_on(engine: &dyn LocalEngine, arch: &Arch, opts: &MeasureOptions) -> Key {
    Key::on(&measure::fingerprint_of(engine, opts.threads, Vec::new()), arch, opts)
}

/// The stored measurement of `arch` on this device when there is one with at least `opts.runs`
/// runs (`cached = true`), else a new measurement, stored. A per-layer request always measures
/// (per-layer times are not stored).
pub fn measure_cached(store: &Store, arch: &Arch, opts: &MeasureOptions) -> Result<(Measurement, bool)> {
    measure_cached_with(store, arch, opts, |a, o| measure::measure(a, o, &|_| {}))
}

/// [`measure_cached`] with the measurement supplied by the caller (a progress display, a test).
pub fn measure_cached_with(
    store: &Store,
    arch: &Arch,
    opts: &MeasureOptions,
    measure: impl FnOnce(&Arch, &MeasureOptions) -> Result<Measurement>,
) -> Result<(Measurement, bool)> {
    measure_cached_on(store, &BuiltIn, arch, opts, measure)
}

/// [`measure_cached_with`] for a measurement on `engine` (its key names the engine and build).
/// A stored measurement is measured again, never served, when its spread stayed above the
/// accepted CV, or when it was taken while the machine ran slower than it runs now (its pace, see
/// [`measure::PACE_REFERENCE`], more than `opts.max_slowdown` above the pace timed now).
pub fn measure_cached_on(
    store: &Store,
    engine: &dyn LocalEngine,
    arch: &Arch,
    opts: &MeasureOptions,
    measure: impl FnOnce(&Arch, &MeasureOptions) -> Result<Measurement>,
) -> Result<(Measurement, bool)> {
    let key = key_on(engine, arch, opts);
    serve_or_measure(store, &key, arch, opts, || measure::pace_on(engine, opts), measure)
}

/// [`measure_cached_on`] with the pace of the machine now supplied by the caller (tests).
fn serve_or_measure(
    store: &Store,
    key: &Key,
    arch: &Arch,
    opts: &MeasureOptions,
    pace_now: impl FnOnce() -> Result<f64>,
    measure: impl FnOnce(&Arch, &MeasureOptions) -> Result<Measurement>,
) -> Result<(Measurement, bool)> {
    opts.validate()?;
    arch.validate()?;
    if !opts.per_layer {
        if let Some(m) = store.get(key)? {
            if m.stats.runs >= opts.runs && m.stable {
                // A row without a pace predates paces: served as it always was, without probing.
                let slower = match m.pace_ms {
                    Some(then) => Some(then / pace_now()?),
                    None => None,
                };
                match slower {
                    Some(slower) if slower > 1.0 + opts.max_slowdown => tracing::info!(
                        arch = %m.arch,
                        slower,
                        "the stored latency was measured while this machine ran slower than now; measuring again"
                    ),
                    _ => {
                        tracing::info!(arch = %m.arch, median_ms = m.stats.median_ms, "latency from the store");
                        return Ok((m, true));
                    }
                }
            } else {
                tracing::info!(
                    stored = m.stats.runs,
                    wanted = opts.runs,
                    stable = m.stable,
                    "stored measurement not reusable; measuring again"
                );
            }
        }
    }
    let m = measure(arch, opts)?;
    if let (Some(pace), Some(best)) = (m.pace_ms, store.best_pace(key)?) {
        if pace > best * (1.0 + opts.max_slowdown) {
            warn_slow_once(pace / best, store);
        }
    }
    store.put(&m)?;
    Ok((m, false))
}

/// Tells once per process that this machine runs slower than the store has seen it run: the
/// latencies measured now read high, and are measured again at the next request when it is
/// back to speed.
fn warn_slow_once(factor: f64, store: &Store) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "this machine runs {factor:.2}x slower than the fastest measurement in the latency store {} \
             (another load, a VM's neighbours, a power mode?): latencies measured now read high; the store \
             measures them again once it is back to speed",
            store.path().display()
        );
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::fingerprint::Fingerprint;
    use crate::stats::Stats;

    fn fake(arch: &Arch, opts: &MeasureOptions, median: f64) -> Measurement {
        Measurement {
            arch: arch.canonical(),
            name: arch.name.clone(),
            resolution: arch.resolution,
            batch: opts.batch,
            threads: opts.threads,
            stats: Stats {
                median_ms: median,
                p10_ms: median,
                p90_ms: median,
                mean_ms: median,
                min_ms: median,
                cv: 0.0,
                runs: opts.runs,
            },
            warmup: opts.warmup,
            attempts: 1,
            stable: true,
            fingerprint: Fingerprint::current(opts.threads, vec![0]),
            measured_at: mnas_space::timestamp::utc_now(),
            per_layer: None,
            pace_ms: None,
        }
    }

    #[test]
    fn a_second_request_is_served_from_the_store() {
        let store = Store::in_memory().unwrap();
        let arch = mnas_space::lookup("mnasnet-a1").unwrap();
        let opts = MeasureOptions { runs: 5, ..Default::default() };
        let calls = Cell::new(0);
        let counted = |a: &Arch, o: &MeasureOptions| {
            calls.set(calls.get() + 1);
            Ok(fake(a, o, 12.5))
        };
        let (first, cached) = measure_cached_with(&store, &arch, &opts, counted).unwrap();
        assert!(!cached);
        let (second, cached) = measure_cached_with(&store, &arch, &opts, counted).unwrap();
        assert!(cached);
        assert_eq!(calls.get(), 1, "the second request must not measure");
        assert_eq!(first.stats.median_ms, second.stats.median_ms);
        // Fewer runs asked: still cached. More runs, another resolution or thread count: measured.
        let fewer = MeasureOptions { runs: 3, ..opts.clone() };
        assert!(measure_cached_with(&store, &arch, &fewer, counted).unwrap().1);
        assert_eq!(calls.get(), 1);
        let more = MeasureOptions { runs: 50, ..opts.clone() };
        assert!(!measure_cached_with(&store, &arch, &more, counted).unwrap().1);
        let mut small = arch.clone();
        small.resolution = 96;
        assert!(!measure_cached_with(&store, &small, &opts, counted).unwrap().1);
        let two = MeasureOptions { threads: 2, ..opts.clone() };
        assert!(!measure_cached_with(&store, &arch, &two, counted).unwrap().1);
        assert_eq!(calls.get(), 4);
        assert_eq!(store.len().unwrap(), 3);
    }

    #[test]
    fn an_unstable_measurement_is_stored_but_measured_again_next_time() {
        let store = Store::in_memory().unwrap();
        let arch = mnas_space::lookup("mnasnet-a1").unwrap();
        let opts = MeasureOptions { runs: 5, ..Default::default() };
        let calls = Cell::new(0);
        let shaky = |a: &Arch, o: &MeasureOptions| {
            calls.set(calls.get() + 1);
            let m = fake(a, o, 20.0);
            Ok(Measurement { stable: false, stats: Stats { cv: 0.4, ..m.stats }, ..m })
        };
        assert!(!measure_cached_with(&store, &arch, &opts, shaky).unwrap().1);
        assert_eq!(store.len().unwrap(), 1, "stored, marked unstable");
        assert!(!measure_cached_with(&store, &arch, &opts, shaky).unwrap().1, "not served");
        assert_eq!(calls.get(), 2);
        let steady = |a: &Arch, o: &MeasureOptions| Ok(fake(a, o, 12.0));
        assert!(!measure_cached_with(&store, &arch, &opts, steady).unwrap().1);
        let (m, cached) = measure_cached_with(&store, &arch, &opts, |_, _| panic!("must be served")).unwrap();
        assert!(cached && m.stable && m.stats.median_ms == 12.0);
    }

    #[test]
    fn a_latency_measured_while_the_machine_ran_slow_is_measured_again() {
        let store = Store::in_memory().unwrap();
        let arch = mnas_space::lookup("mnasnet-a1").unwrap();
        let opts = MeasureOptions { runs: 5, ..Default::default() };
        let key = key_for(&arch, &opts);
        let paced = |median: f64, pace: f64| {
            move |a: &Arch, o: &MeasureOptions| Ok(Measurement { pace_ms: Some(pace), ..fake(a, o, median) })
        };
        let unused = || -> Result<f64> { panic!("nothing stored: no pace to compare") };
        // Taken in a slow spell: 10 ms, the reference at 1.7 ms.
        assert!(!serve_or_measure(&store, &key, &arch, &opts, unused, paced(10.0, 1.7)).unwrap().1);
        // Still as slow now (or within the tolerance): served.
        let (m, cached) =
            serve_or_measure(&store, &key, &arch, &opts, || Ok(1.5), |_, _| panic!("must be served")).unwrap();
        assert!(cached && m.stats.median_ms == 10.0);
        // Back to speed: the reference at 1.0 ms, so the stored 10 ms is stale.
        let (m, cached) = serve_or_measure(&store, &key, &arch, &opts, || Ok(1.0), paced(6.0, 1.0)).unwrap();
        assert!(!cached && m.stats.median_ms == 6.0);
        assert_eq!(store.get(&key).unwrap().and_then(|m| m.pace_ms), Some(1.0), "replaced, with its pace");
        // Measured fast, asked while the machine is slow: the fast value is the machine's, served.
        let (m, cached) =
            serve_or_measure(&store, &key, &arch, &opts, || Ok(1.7), |_, _| panic!("must be served")).unwrap();
        assert!(cached && m.stats.median_ms == 6.0);
        // A record without a pace (an older mnas, an external command) is served without timing one.
        let other = mnas_space::lookup("mnasnet-b1").unwrap();
        let other_key = key_for(&other, &opts);
        assert!(!serve_or_measure(&store, &other_key, &other, &opts, unused, |a, o| Ok(fake(a, o, 7.0))).unwrap().1);
        assert!(serve_or_measure(&store, &other_key, &other, &opts, unused, |_, _| panic!("served")).unwrap().1);
        // A tolerance that accepts any slowdown serves even the slow-spell figure.
        store.put(&paced(10.0, 1.7)(&arch, &opts).unwrap()).unwrap();
        let lenient = MeasureOptions { max_slowdown: f64::INFINITY, ..opts.clone() };
        let (m, cached) = serve_or_measure(&store, &key, &arch, &lenient, || Ok(1.0), |_, _| panic!("served")).unwrap();
        assert!(cached && m.stats.median_ms == 10.0);
    }

    #[test]
    fn a_local_measurement_through_the_store_records_its_pace() {
        let store = Store::in_memory().unwrap();
        let mut arch = mnas_space::lookup("mnasnet-small").unwrap();
        arch.resolution = 32;
        let opts = MeasureOptions { runs: 3, warmup: 1, max_cv: 10.0, ..Default::default() };
        let (m, cached) = measure_cached(&store, &arch, &opts).unwrap();
        assert!(!cached);
        let pace = m.pace_ms.expect("paced");
        assert_eq!(store.get(&key_for(&arch, &opts)).unwrap().and_then(|s| s.pace_ms), Some(pace));
        assert_eq!(store.best_pace(&key_for(&arch, &opts)).unwrap(), Some(pace));
    }

    #[test]
    fn bad_options_fail_before_measuring() {
        let store = Store::in_memory().unwrap();
        let arch = mnas_space::lookup("mnasnet-a1").unwrap();
        let opts = MeasureOptions { runs: 0, ..Default::default() };
        let e = measure_cached_with(&store, &arch, &opts, |_, _| panic!("must not measure")).unwrap_err();
        assert!(e.to_string().contains("runs"), "{e}");
    }
}
