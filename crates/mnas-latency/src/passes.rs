//! Measuring a set of archs in passes over all of them. One measurement lasts a fraction of a
//! second and lands in whatever speed the machine has then (a VM's moves by 10-20 % in spells of
//! seconds); passes minutes apart see other spells, and the median of an arch's passes is its
//! latency. A table's overhead fit and its report both measure this way.

use mnas_space::Arch;

use crate::cached::measure_cached_on;
use crate::error::LatencyError;
use crate::measure::{measure_on, LocalEngine, MeasureOptions};
use crate::stats::median;
use crate::store::Store;

/// What the passes measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Passes {
    /// `[arch][pass]`: the median of each measurement's runs, ms.
    pub ms: Vec<Vec<f64>>,
    /// The CV of each arch's first measurement.
    pub first_cv: Vec<f64>,
    /// How many first measurements the store served.
    pub cached: usize,
    /// The machine's pace recorded with each measurement (see `measure::pace_on`).
    pub paces: Vec<f64>,
}

impl Passes {
    /// Each arch's latency: the median of its passes.
    pub fn medians(&self) -> Vec<f64> {
        self.ms.iter().map(|m| median(m)).collect()
    }

    /// Every arch's measurement in pass `i`.
    pub fn pass(&self, i: usize) -> Vec<f64> {
        self.ms.iter().map(|m| m[i]).collect()
    }

    /// The machine's pace over the passes (median), if the engine records one.
    pub fn pace_ms(&self) -> Option<f64> {
        (!self.paces.is_empty()).then(|| median(&self.paces))
    }
}

/// Measures every arch of `archs` once per pass, pass after pass. With a `store`, the first pass
/// is served from it where it can (and stores what it measures); later passes always measure
/// afresh: a stored value is one measurement, taken in one spell. `after_each(arch, pass)` runs
/// after every measurement, while the caches hold what the measurement left in them.
pub fn measure_in_passes<E: From<LatencyError>>(
    engine: &dyn LocalEngine,
    archs: &[Arch],
    opts: &MeasureOptions,
    passes: usize,
    store: Option<&Store>,
    after_each: &mut dyn FnMut(usize, usize) -> Result<(), E>,
) -> Result<Passes, E> {
    let mut out = Passes {
        ms: vec![Vec::with_capacity(passes); archs.len()],
        first_cv: Vec::with_capacity(archs.len()),
        cached: 0,
        paces: Vec::with_capacity(archs.len() * passes),
    };
    let measure = |a: &Arch, o: &MeasureOptions| measure_on(engine, a, o, &|_| {});
    for pass in 0..passes.max(1) {
        for (i, arch) in archs.iter().enumerate() {
            let m = match store {
                Some(store) if pass == 0 => {
                    let (m, cached) = measure_cached_on(store, engine, arch, opts, measure)?;
                    out.cached += usize::from(cached);
                    m
                }
                _ => measure(arch, opts)?,
            };
            tracing::debug!(arch = %m.arch, pass, measured_ms = m.stats.median_ms, "measured");
            if pass == 0 {
                out.first_cv.push(m.stats.cv);
            }
            out.ms[i].push(m.stats.median_ms);
            out.paces.extend(m.pace_ms);
            after_each(i, pass)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BuiltIn;

    #[test]
    fn every_arch_is_measured_in_every_pass_and_the_store_serves_only_the_first() {
        let dir = std::env::temp_dir().join(format!("mnas-passes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::open(&dir.join("store.sqlite")).unwrap();
        let space = mnas_space::SearchSpace { resolution: 32, num_classes: 10, ..Default::default() };
        let archs: Vec<Arch> = space.sample(3, 2).into_iter().map(|(_, a)| a).collect();
        // Served whatever the spread and the pace: this is about which pass the store serves.
        let opts =
            MeasureOptions { runs: 2, warmup: 1, max_cv: 1000.0, max_slowdown: f64::INFINITY, ..Default::default() };
        let mut calls = Vec::new();
        let mut note = |i: usize, pass: usize| -> Result<(), LatencyError> {
            calls.push((i, pass));
            Ok(())
        };
        let first = measure_in_passes(&BuiltIn, &archs, &opts, 3, Some(&store), &mut note).unwrap();
        assert_eq!(calls, vec![(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)], "pass after pass");
        assert_eq!((first.ms.len(), first.ms[0].len(), first.first_cv.len(), first.cached), (2, 3, 2, 0));
        assert_eq!(first.pass(2), vec![first.ms[0][2], first.ms[1][2]]);
        assert!(first.medians().iter().all(|m| *m > 0.0) && first.pace_ms().is_some(), "{first:?}");

        let again =
            measure_in_passes(&BuiltIn, &archs, &opts, 2, Some(&store), &mut |_, _| Ok::<_, LatencyError>(())).unwrap();
        assert_eq!(again.cached, 2, "the store serves the first pass");
        assert_eq!(again.pass(0), first.pass(0), "served, not measured again");

        let stop = measure_in_passes(&BuiltIn, &archs, &opts, 2, None, &mut |i, _| {
            if i == 1 {
                Err(LatencyError::Engine("stop".into()))
            } else {
                Ok(())
            }
        });
        assert!(stop.is_err(), "an error from the hook ends the passes");
        std::fs::remove_dir_all(&dir).ok();
    }
}
