//! Summary statistics of a set of run times.

use serde::{Deserialize, Serialize};

/// Summary of timed runs, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    /// Coefficient of variation: sample standard deviation / mean.
    pub cv: f64,
    pub runs: usize,
}

/// The q-quantile (0..=1) of sorted values, interpolating linearly between order statistics
/// (NumPy's default), so that p50 of an even count is the mean of the middle two.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let pos = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let (lo, frac) = (pos.floor() as usize, pos.fract());
            if lo + 1 >= n {
                sorted[n - 1]
            } else {
                sorted[lo] + (sorted[lo + 1] - sorted[lo]) * frac
            }
        }
    }
}

/// The median of unsorted values (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    quantile(&sorted, 0.5)
}

/// Every pair `(i, j)` with `i < j < n` (one pass against another, say).
pub fn pairs(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).flat_map(move |i| (i + 1..n).map(move |j| (i, j)))
}

/// The mean of `values`; `None` when there is none or one of them is `None`.
pub fn mean_of(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let values: Option<Vec<f64>> = values.into_iter().collect();
    values.filter(|v| !v.is_empty()).map(|v| v.iter().sum::<f64>() / v.len() as f64)
}

/// The mean of `f(i, j)` over every pair `i < j` of `n` items; `None` when there is no pair or
/// `f` has no value for one of them.
pub fn mean_over_pairs(n: usize, f: impl Fn(usize, usize) -> Option<f64>) -> Option<f64> {
    mean_of(pairs(n).map(|(i, j)| f(i, j)))
}

impl Stats {
    /// Statistics of `samples_ms`; `None` for an empty slice or one with non-finite values.
    pub fn of(samples_ms: &[f64]) -> Option<Stats> {
        if samples_ms.is_empty() || samples_ms.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut sorted = samples_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let var = if n > 1 { sorted.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        let cv = if mean > 0.0 { var.sqrt() / mean } else { 0.0 };
        Some(Stats {
            median_ms: quantile(&sorted, 0.5),
            p10_ms: quantile(&sorted, 0.1),
            p90_ms: quantile(&sorted, 0.9),
            mean_ms: mean,
            min_ms: sorted[0],
            cv,
            runs: n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn stats_of_a_known_sample() {
        // 1..=10 in shuffled order: median 5.5, p10 1.9, p90 9.1 (NumPy linear), mean 5.5,
        // sample std sqrt(55/6).
        let s = Stats::of(&[7.0, 3.0, 10.0, 1.0, 5.0, 9.0, 2.0, 8.0, 4.0, 6.0]).unwrap();
        assert!(close(s.median_ms, 5.5) && close(s.p10_ms, 1.9) && close(s.p90_ms, 9.1), "{s:?}");
        assert!(close(s.mean_ms, 5.5) && close(s.min_ms, 1.0) && s.runs == 10, "{s:?}");
        assert!(close(s.cv, (55.0f64 / 6.0).sqrt() / 5.5), "{s:?}");
    }

    #[test]
    fn the_mean_over_pairs_visits_each_pair_once() {
        // Pairs of 4: (0,1) (0,2) (0,3) (1,2) (1,3) (2,3); i * 10 + j sums to 54 over them.
        let mean = mean_over_pairs(4, |i, j| Some((i * 10 + j) as f64)).unwrap();
        assert!(close(mean, 54.0 / 6.0), "{mean}");
        assert_eq!(mean_over_pairs(1, |_, _| Some(1.0)), None, "one item has no pair");
        assert_eq!(mean_over_pairs(3, |i, _| (i == 0).then_some(1.0)), None, "a pair without a value");
    }

    #[test]
    fn odd_single_and_degenerate_samples() {
        let s = Stats::of(&[3.0, 1.0, 2.0]).unwrap();
        assert!(close(s.median_ms, 2.0) && close(s.p10_ms, 1.2) && close(s.p90_ms, 2.8), "{s:?}");
        let one = Stats::of(&[4.0]).unwrap();
        assert!(close(one.median_ms, 4.0) && close(one.p90_ms, 4.0) && one.cv == 0.0);
        let flat = Stats::of(&[2.0; 5]).unwrap();
        assert_eq!(flat.cv, 0.0);
        assert!(Stats::of(&[]).is_none());
        assert!(Stats::of(&[1.0, f64::NAN]).is_none());
    }
}
