//! Two engines of this machine side by side: the same model timed alternately on each (so that a
//! change of load hits both), and the rank agreement of their latencies over sampled models,
//! which is what a search scored on one engine needs from the other.

use mnas_space::{Arch, SearchSpace};
use mnas_stats::{bootstrap_interval, tau_b};

use crate::error::Result;
use crate::measure::{measure_on, pinned_pool, planned_cores, time_runs, LocalEngine, MeasureOptions, Runnable};
use crate::stats::{mean_over_pairs, median};

/// Medians of alternating measurements of one model on two engines.
#[derive(Debug, Clone, PartialEq)]
pub struct SideBySide {
    /// Per round: (engine a, engine b) medians, ms.
    pub rounds: Vec<(f64, f64)>,
}

impl SideBySide {
    pub fn a_ms(&self) -> f64 {
        median(&self.rounds.iter().map(|r| r.0).collect::<Vec<_>>())
    }

    pub fn b_ms(&self) -> f64 {
        median(&self.rounds.iter().map(|r| r.1).collect::<Vec<_>>())
    }

    /// a / b.
    pub fn ratio(&self) -> f64 {
        self.a_ms() / self.b_ms()
    }
}

/// `rounds` paired measurements of `arch` on `a` and `b` (see [`measure_pair`]).
pub fn side_by_side(
    arch: &Arch,
    opts: &MeasureOptions,
    a: &dyn LocalEngine,
    b: &dyn LocalEngine,
    rounds: usize,
) -> Result<SideBySide> {
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        out.push(measure_pair(arch, opts, a, b)?);
    }
    Ok(SideBySide { rounds: out })
}

/// Timed runs of one engine before the other takes its turn.
const PAIR_BLOCK: usize = 5;

/// Median ms of `arch` on `a` and on `b` (`opts.runs` timed runs each, after `opts.warmup`), the
/// two engines taking turns in blocks of [`PAIR_BLOCK`] runs on the same pinned cores. A VM's
/// speed moves by 10-20 % in spells of seconds: timed one after the other, each engine lands in
/// its own spell and the comparison carries their difference; taking turns every few tens of
/// milliseconds, both see the same spells. Each block starts with one untimed run, so that the
/// timed runs find the caches as back-to-back runs of one engine leave them.
///
/// With more than one thread the engines are measured one after the other instead: after a run
/// each engine's idle threads spin for a while on the cores the other then needs (A1 at 2
/// threads read 5.3-7.9 ms on the built-in engine in turns with ORT, 4.1 ms alone).
pub fn measure_pair(
    arch: &Arch,
    opts: &MeasureOptions,
    a: &dyn LocalEngine,
    b: &dyn LocalEngine,
) -> Result<(f64, f64)> {
    opts.validate()?;
    arch.validate()?;
    let cores = planned_cores(opts)?;
    if cores.len() > 1 {
        let ms_a = measure_on(a, arch, opts, &|_| {})?.stats.median_ms;
        let ms_b = measure_on(b, arch, opts, &|_| {})?.stats.median_ms;
        return Ok((ms_a, ms_b));
    }
    let pool = pinned_pool(&cores, "mnas-pair")?;
    pool.install(|| {
        let mut ma = a.build(arch, opts, &cores)?;
        let mut mb = b.build(arch, opts, &cores)?;
        for _ in 0..opts.warmup {
            ma.run()?;
            mb.run()?;
        }
        let (mut ta, mut tb) = (Vec::with_capacity(opts.runs), Vec::with_capacity(opts.runs));
        while ta.len() < opts.runs {
            let block = PAIR_BLOCK.min(opts.runs - ta.len());
            timed_block(ma.as_mut(), block, &mut ta)?;
            timed_block(mb.as_mut(), block, &mut tb)?;
        }
        Ok((median(&ta), median(&tb)))
    })
}

/// One untimed run, then `runs` timed ones appended to `times` (ms).
fn timed_block(model: &mut dyn Runnable, runs: usize, times: &mut Vec<f64>) -> Result<()> {
    model.run()?;
    time_runs(model, runs, times, &mut |_| {})
}

/// Latencies of `n` sampled models (seeded, at `resolution`) on both engines, and how well they
/// agree on their order.
#[derive(Debug, Clone, PartialEq)]
pub struct RankFidelity {
    /// (arch, engine a ms, engine b ms, MACs); each latency the median of its passes.
    pub rows: Vec<(String, f64, f64, u64)>,
    pub passes: usize,
    pub tau: Option<f64>,
    pub tau_ci: Option<(f64, f64)>,
    /// MACs against engine b, the baseline the paper argues against.
    pub tau_macs: Option<f64>,
    /// Engine b against itself: one pass against another (the mean over pairs of passes), or
    /// with one pass, b measured again after a. The agreement one measurement has with another
    /// here now.
    pub tau_repeat: Option<f64>,
}

/// Measures the sampled models on both engines in pairs (see [`measure_pair`]), in `passes`
/// passes over all of them: a pair lasts a fraction of a second and lands in whatever speed the
/// machine has then (a VM's moves by 10-20 % in spells of seconds); passes minutes apart average
/// the spells out.
#[allow(clippy::too_many_arguments)]
pub fn rank_fidelity(
    space: &SearchSpace,
    n: usize,
    seed: u64,
    opts: &MeasureOptions,
    passes: usize,
    a: &dyn LocalEngine,
    b: &dyn LocalEngine,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RankFidelity> {
    let passes = passes.max(1);
    let archs: Vec<Arch> = space.sample(seed, n).into_iter().map(|(_, arch)| arch).collect();
    // [pass][arch]
    let (mut on_a, mut on_b) = (vec![Vec::with_capacity(n); passes], vec![Vec::with_capacity(n); passes]);
    let mut again = Vec::new();
    for pass in 0..passes {
        for (i, arch) in archs.iter().enumerate() {
            let (ms_a, ms_b) = measure_pair(arch, opts, a, b)?;
            on_a[pass].push(ms_a);
            on_b[pass].push(ms_b);
            if passes == 1 {
                again.push(measure_on(b, arch, opts, &|_| {})?.stats.median_ms);
            }
            progress(pass * n + i + 1, passes * n);
        }
    }
    let median_of = |per_pass: &[Vec<f64>], i: usize| median(&per_pass.iter().map(|p| p[i]).collect::<Vec<_>>());
    let rows: Vec<(String, f64, f64, u64)> = archs
        .iter()
        .enumerate()
        .map(|(i, arch)| (arch.canonical(), median_of(&on_a, i), median_of(&on_b, i), mnas_space::count(arch).macs))
        .collect();
    let xa: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let xb: Vec<f64> = rows.iter().map(|r| r.2).collect();
    let macs: Vec<f64> = rows.iter().map(|r| r.3 as f64).collect();
    let tau_repeat =
        if passes == 1 { tau_b(&again, &on_b[0]) } else { mean_over_pairs(passes, |i, j| tau_b(&on_b[j], &on_b[i])) };
    Ok(RankFidelity {
        tau: tau_b(&xa, &xb),
        tau_ci: bootstrap_interval(&xa, &xb, tau_b, 2000, 0.95, seed),
        tau_macs: tau_b(&macs, &xb),
        tau_repeat,
        passes,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BuiltIn;

    #[test]
    fn rank_fidelity_measures_every_arch_in_every_pass() {
        let space = SearchSpace { resolution: 32, num_classes: 10, ..Default::default() };
        let opts = MeasureOptions { runs: 2, warmup: 1, max_cv: 1000.0, ..MeasureOptions::default() };
        let mut calls = Vec::new();
        let r = rank_fidelity(&space, 3, 5, &opts, 2, &BuiltIn, &BuiltIn, &mut |done, total| calls.push((done, total)))
            .expect("measures");
        assert_eq!(calls, (1..=6).map(|d| (d, 6)).collect::<Vec<_>>(), "one progress step per arch and pass");
        assert_eq!((r.rows.len(), r.passes), (3, 2));
        let names: Vec<String> = space.sample(5, 3).into_iter().map(|(_, a)| a.canonical()).collect();
        for (row, name) in r.rows.iter().zip(&names) {
            assert_eq!(&row.0, name);
            assert!(row.1 > 0.0 && row.2 > 0.0 && row.3 > 0, "{row:?}");
        }
        assert!(r.tau_repeat.is_some_and(|t| (-1.0..=1.0).contains(&t)), "{:?}", r.tau_repeat);
    }

    #[test]
    fn a_pair_times_both_engines_and_refuses_bad_options() {
        let mut arch = mnas_space::lookup("mnasnet-small").expect("zoo");
        arch.resolution = 32;
        // 7 runs: a block of 5 and one of 2 per engine.
        let opts = MeasureOptions { runs: 7, warmup: 1, ..MeasureOptions::default() };
        let (a, b) = measure_pair(&arch, &opts, &BuiltIn, &BuiltIn).expect("measures");
        assert!(a > 0.0 && b > 0.0 && a.is_finite() && b.is_finite(), "{a} {b}");
        let s = side_by_side(&arch, &opts, &BuiltIn, &BuiltIn, 2).expect("measures");
        assert_eq!(s.rounds.len(), 2);
        assert!(s.ratio() > 0.0);
        let none = MeasureOptions { runs: 0, ..opts };
        assert!(measure_pair(&arch, &none, &BuiltIn, &BuiltIn).is_err());
    }
}
