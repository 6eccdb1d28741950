//! Judging a lookup table: held-out archs of its space measured end to end in passes (see
//! [`crate::passes`]) against its predictions, with each pass alone and one pass against another
//! beside it, so that the table's error can be told from the noise of one measurement.

use std::collections::HashSet;
use std::time::Instant;

use mnas_space::Arch;
use serde::Serialize;

use crate::lut::{Accuracy, Lut, LutError, LutResult};
use crate::measure::{LocalEngine, MeasureOptions};
use crate::passes::measure_in_passes;
use crate::stats::{mean_of, pairs};
use crate::store::Store;

/// `n` archs of the table's space drawn with `seed`, none of them one its overhead fit measured
/// (those are not held out).
pub fn held_out(lut: &Lut, seed: u64, n: usize) -> LutResult<Vec<Arch>> {
    let fit = lut.fit.as_ref().ok_or(LutError::Incomplete { have: lut.entries.len(), want: lut.configs })?;
    if seed == fit.seed {
        return Err(LutError::Option(format!(
            "seed {seed} is the table's fit seed: pick another so that the archs are held out"
        )));
    }
    if n < 2 {
        return Err(LutError::Option(format!(
            "a report needs at least 2 archs (a rank correlation needs pairs), got {n}"
        )));
    }
    let fit_set: HashSet<&str> = fit.points.iter().map(|p| p.arch.as_str()).collect();
    Ok(lut
        .space()
        .sample(seed, n * 2)
        .into_iter()
        .map(|(_, arch)| arch)
        .filter(|arch| !fit_set.contains(arch.canonical().as_str()))
        .take(n)
        .collect())
}

/// One held-out arch: the table's prediction and its measurements.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    pub arch: String,
    pub predicted: f64,
    pub layer_sum: f64,
    /// The median of `passes`.
    pub measured: f64,
    /// The spread of the first measurement's runs.
    pub cv: f64,
    pub macs: u64,
    /// The prediction's time, right after a measurement had evicted the table from the caches.
    pub predict_us: f64,
    /// Each pass's measurement (median of its runs), in pass order.
    pub passes: Vec<f64>,
}

/// How well one pass's measurements match another's, averaged over every pair of passes.
#[derive(Debug, Clone, Serialize)]
pub struct PassAgreement {
    pub pairs: usize,
    pub within_10pct: f64,
    pub tau: Option<f64>,
}

/// A table judged on held-out archs.
#[derive(Debug, Clone, Serialize)]
pub struct LutReport {
    pub rows: Vec<Judged>,
    pub passes: usize,
    /// First measurements the store served.
    pub cached: usize,
    /// Measuring time.
    pub seconds: f64,
    /// The table against the median of the passes.
    pub accuracy: Accuracy,
    /// The table against each pass alone, as a report of one pass would judge it.
    pub per_pass: Vec<Accuracy>,
    /// Every later pass "predicting" an earlier one: how far one measurement is from another; `None`
    /// with one pass.
    pub pass_agreement: Option<PassAgreement>,
    /// The machine's pace during the report (see `measure::pace_on`).
    pub pace_ms: Option<f64>,
    pub mean_predict_us: f64,
    /// Predictions back to back, as a search scores a step's candidates.
    pub warm_predict_us: f64,
    pub warm_predictions: usize,
}

/// Rounds of back-to-back predictions over the archs for the warm prediction time.
const WARM_ROUNDS: usize = 5;

/// Measures `archs` on `engine` in `passes` passes (the first through `store`, if any) and judges
/// `lut`'s predictions against them; `progress(done, total)` follows every measurement.
pub fn judge(
    lut: &Lut,
    engine: &dyn LocalEngine,
    archs: &[Arch],
    opts: &MeasureOptions,
    passes: usize,
    store: Option<&Store>,
    progress: &mut dyn FnMut(usize, usize),
) -> LutResult<LutReport> {
    let passes = passes.max(1);
    let mut rows = Vec::with_capacity(archs.len());
    for arch in archs {
        let (layer_sum, _) = lut.layer_sum(arch)?;
        let predicted = lut.predict(arch)?;
        let passes = Vec::with_capacity(passes);
        let macs = mnas_space::count(arch).macs;
        rows.push(Judged {
            arch: arch.canonical(),
            predicted,
            layer_sum,
            measured: 0.0,
            cv: 0.0,
            macs,
            predict_us: 0.0,
            passes,
        });
    }
    let total = archs.len() * passes;
    let started = Instant::now();
    let measured = measure_in_passes(engine, archs, opts, passes, store, &mut |i, pass| {
        if pass == 0 {
            let t = Instant::now();
            std::hint::black_box(lut.predict(&archs[i])?);
            rows[i].predict_us = t.elapsed().as_secs_f64() * 1e6;
        }
        progress(pass * archs.len() + i + 1, total);
        Ok::<_, LutError>(())
    })?;
    let seconds = started.elapsed().as_secs_f64();
    for ((row, ms), cv) in rows.iter_mut().zip(&measured.ms).zip(&measured.first_cv) {
        row.passes = ms.clone();
        row.cv = *cv;
    }
    for (row, m) in rows.iter_mut().zip(measured.medians()) {
        row.measured = m;
    }
    let col = |f: &dyn Fn(&Judged) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let (predicted, macs) = (col(&|r| r.predicted), col(&|r| r.macs as f64));
    let accuracy = Accuracy::of(&predicted, &col(&|r| r.layer_sum), &macs, &col(&|r| r.measured));
    let per_pass = (0..passes).map(|i| Accuracy::of(&predicted, &predicted, &macs, &measured.pass(i))).collect();
    let pairs: Vec<Accuracy> = pairs(passes)
        .map(|(i, j)| Accuracy::of(&measured.pass(j), &measured.pass(j), &macs, &measured.pass(i)))
        .collect();
    let pass_agreement = (passes > 1).then(|| PassAgreement {
        pairs: pairs.len(),
        within_10pct: mean_of(pairs.iter().map(|a| Some(a.within_10pct))).unwrap_or(f64::NAN),
        tau: mean_of(pairs.iter().map(|a| a.tau_prediction)),
    });
    let mean_predict_us = rows.iter().map(|r| r.predict_us).sum::<f64>() / rows.len().max(1) as f64;
    let t = Instant::now();
    for _ in 0..WARM_ROUNDS {
        for arch in archs {
            std::hint::black_box(lut.predict(arch)?);
        }
    }
    let warm_predictions = WARM_ROUNDS * archs.len();
    let warm_predict_us = t.elapsed().as_secs_f64() * 1e6 / warm_predictions.max(1) as f64;
    Ok(LutReport {
        rows,
        passes,
        cached: measured.cached,
        seconds,
        accuracy,
        per_pass,
        pass_agreement,
        pace_ms: measured.pace_ms(),
        mean_predict_us,
        warm_predict_us,
        warm_predictions,
    })
}
