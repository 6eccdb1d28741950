//! mnas-latency: what a network costs on this machine, measured, never proxied (DESIGN §1).
//!
//! - the built-in engine is mnas-engine's inference form (BN folded into the convs, activations fused);
//! - [`measure`]: pinned threads, warm-up, N timed batch forwards, median / p10 / p90 / CV, and a
//!   re-measurement when the spread is too wide;
//! - [`fingerprint`]: the device, engine and build every measurement carries;
//! - [`store`]: the SQLite table a search reuses, so a measured arch costs nothing the second time;
//! - [`lut`] / [`lut_build`]: the per-layer lookup-table predictor (microseconds per arch), judged
//!   by how well it ranks (Kendall tau, from mnas-stats);
//! - [`protocol`] / [`agent`] / [`pool`]: measuring on other machines through `mnas agent`;
//! - [`engine`]: measuring with an external command (`--engine cmd:...`) on an exported ONNX model.

pub mod agent;
pub mod broker_devices;
pub mod engine;
pub mod engines;
pub mod error;
pub mod fingerprint;
pub mod lut;
pub mod lut_build;
pub mod measure;
pub mod ort_engine;
pub mod pin;
pub mod pool;
pub mod protocol;
pub mod source;
pub mod stats;
pub mod store;

use mnas_space::Arch;

pub use error::{LatencyError, Result};
pub use fingerprint::{Fingerprint, ENGINE, ENGINE_VERSION};
pub use lut::{Lut, LutError};
pub use measure::{measure_on, BuiltIn, LocalEngine, MeasureOptions, Measurement, Progress, StageTime};
pub use ort_engine::OrtEngine;
pub use source::{LatencySource, SourceError};
pub use stats::Stats;
pub use store::{Key, Store};

/// Measures `arch` on this machine (no store).
pub fn measure_arch(arch: &Arch, opts: &MeasureOptions) -> Result<Measurement> {
    measure::measure(arch, opts, &|_| {})
}

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
    measure_cached_with(store, arch, opts, measure_arch)
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
/// A stored measurement whose spread stayed above the accepted CV is measured again, never
/// served.
pub fn measure_cached_on(
    store: &Store,
    engine: &dyn LocalEngine,
    arch: &Arch,
    opts: &MeasureOptions,
    measure: impl FnOnce(&Arch, &MeasureOptions) -> Result<Measurement>,
) -> Result<(Measurement, bool)> {
    opts.validate()?;
    arch.validate()?;
    if !opts.per_layer {
        if let Some(m) = store.get(&key_on(engine, arch, opts))? {
            if m.stats.runs >= opts.runs && m.stable {
                tracing::info!(arch = %m.arch, median_ms = m.stats.median_ms, "latency from the store");
                return Ok((m, true));
            }
            tracing::info!(
                stored = m.stats.runs,
                wanted = opts.runs,
                stable = m.stable,
                "stored measurement not reusable; measuring again"
            );
        }
    }
    let m = measure(arch, opts)?;
    store.put(&m)?;
    Ok((m, false))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

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
    fn bad_options_fail_before_measuring() {
        let store = Store::in_memory().unwrap();
        let arch = mnas_space::lookup("mnasnet-a1").unwrap();
        let opts = MeasureOptions { runs: 0, ..Default::default() };
        let e = measure_cached_with(&store, &arch, &opts, |_, _| panic!("must not measure")).unwrap_err();
        assert!(e.to_string().contains("runs"), "{e}");
    }
}
