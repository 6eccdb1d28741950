//! Two engines of this machine side by side: the same model timed alternately on each (so that a
//! change of load hits both), and the rank agreement of their latencies over sampled models,
//! which is what a search scored on one engine needs from the other.

use mnas_space::{Arch, SearchSpace};
use mnas_stats::{bootstrap_interval, tau_b};

use crate::error::Result;
use crate::measure::{measure_on, LocalEngine, MeasureOptions};

/// Medians of alternating measurements of one model on two engines.
#[derive(Debug, Clone, PartialEq)]
pub struct SideBySide {
    /// Per round: (engine a, engine b) medians, ms.
    pub rounds: Vec<(f64, f64)>,
}

impl SideBySide {
    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    }

    pub fn a_ms(&self) -> f64 {
        Self::median(self.rounds.iter().map(|r| r.0).collect())
    }

    pub fn b_ms(&self) -> f64 {
        Self::median(self.rounds.iter().map(|r| r.1).collect())
    }

    /// a / b.
    pub fn ratio(&self) -> f64 {
        self.a_ms() / self.b_ms()
    }
}

/// `rounds` alternating measurements of `arch` on `a` then `b`.
pub fn side_by_side(
    arch: &Arch,
    opts: &MeasureOptions,
    a: &dyn LocalEngine,
    b: &dyn LocalEngine,
    rounds: usize,
) -> Result<SideBySide> {
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let ma = measure_on(a, arch, opts, &|_| {})?;
        let mb = measure_on(b, arch, opts, &|_| {})?;
        out.push((ma.stats.median_ms, mb.stats.median_ms));
    }
    Ok(SideBySide { rounds: out })
}

/// Latencies of `n` sampled models (seeded, at `resolution`) on both engines, and how well they
/// agree on their order.
#[derive(Debug, Clone, PartialEq)]
pub struct RankFidelity {
    /// (arch, engine a ms, engine b ms, MACs).
    pub rows: Vec<(String, f64, f64, u64)>,
    pub tau: Option<f64>,
    pub tau_ci: Option<(f64, f64)>,
    /// MACs against engine b, the baseline the paper argues against.
    pub tau_macs: Option<f64>,
    /// Engine b against itself, measured again after engine a: the agreement that measurement
    /// noise alone allows, a ceiling for `tau`.
    pub tau_repeat: Option<f64>,
}

pub fn rank_fidelity(
    space: &SearchSpace,
    n: usize,
    seed: u64,
    opts: &MeasureOptions,
    a: &dyn LocalEngine,
    b: &dyn LocalEngine,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RankFidelity> {
    let mut rows = Vec::with_capacity(n);
    let mut repeat = Vec::with_capacity(n);
    for (i, (_, arch)) in space.sample(seed, n).into_iter().enumerate() {
        let mb = measure_on(b, &arch, opts, &|_| {})?;
        let ma = measure_on(a, &arch, opts, &|_| {})?;
        repeat.push(measure_on(b, &arch, opts, &|_| {})?.stats.median_ms);
        rows.push((arch.canonical(), ma.stats.median_ms, mb.stats.median_ms, mnas_space::count(&arch).macs));
        progress(i + 1, n);
    }
    let xa: Vec<f64> = rows.iter().map(|r| r.1).collect();
    let xb: Vec<f64> = rows.iter().map(|r| r.2).collect();
    let macs: Vec<f64> = rows.iter().map(|r| r.3 as f64).collect();
    Ok(RankFidelity {
        tau: tau_b(&xa, &xb),
        tau_ci: bootstrap_interval(&xa, &xb, tau_b, 2000, 0.95, seed),
        tau_macs: tau_b(&macs, &xb),
        tau_repeat: tau_b(&repeat, &xb),
        rows,
    })
}
