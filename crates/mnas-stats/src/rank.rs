//! Spearman's rho, bootstrap confidence intervals over paired samples, and the overlap of the
//! best fractions of two rankings.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Ranks with ties given their mean rank (1-based).
fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = mean;
        }
        i = j + 1;
    }
    out
}

/// Spearman's rho (Pearson correlation of the ranks); `None` when undefined (lengths differ,
/// fewer than 2 pairs, non-finite values, a constant side).
pub fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len();
    if n != y.len() || n < 2 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let (rx, ry) = (ranks(x), ranks(y));
    let mean = (n as f64 + 1.0) / 2.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for i in 0..n {
        let (a, b) = (rx[i] - mean, ry[i] - mean);
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

/// A percentile bootstrap interval of `stat` over paired samples: `reps` resamples of the pairs
/// with replacement (seeded), the `(1 - level) / 2` and `(1 + level) / 2` quantiles of the
/// statistic where it is defined. `None` if it is defined in fewer than half the resamples.
pub fn bootstrap_interval(
    x: &[f64],
    y: &[f64],
    stat: impl Fn(&[f64], &[f64]) -> Option<f64>,
    reps: usize,
    level: f64,
    seed: u64,
) -> Option<(f64, f64)> {
    let n = x.len();
    if n != y.len() || n < 2 {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut bx, mut by) = (vec![0.0; n], vec![0.0; n]);
    let mut values = Vec::with_capacity(reps);
    for _ in 0..reps {
        for i in 0..n {
            let k = rng.gen_range(0..n);
            bx[i] = x[k];
            by[i] = y[k];
        }
        if let Some(v) = stat(&bx, &by) {
            values.push(v);
        }
    }
    if values.len() * 2 < reps.max(1) {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((q * (values.len() - 1) as f64).round() as usize).min(values.len() - 1)];
    Some((at((1.0 - level) / 2.0), at((1.0 + level) / 2.0)))
}

/// The share of the `fraction` best items (largest values) of `x` that are also among the
/// `fraction` best of `y` (at least one item each).
pub fn top_overlap(x: &[f64], y: &[f64], fraction: f64) -> Option<f64> {
    let n = x.len();
    if n != y.len() || n == 0 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let k = ((n as f64 * fraction).round() as usize).clamp(1, n);
    let top = |v: &[f64]| {
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
        order.truncate(k);
        order
    };
    let (tx, ty) = (top(x), top(y));
    Some(tx.iter().filter(|i| ty.contains(i)).count() as f64 / k as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_known_values_and_ties() {
        // d = (2, 2, -2, -2, 0): rho = 1 - 6 * 16 / (5 * 24) = 0.2.
        let rho = spearman(&[1.0, 2.0, 3.0, 4.0, 5.0], &[3.0, 4.0, 1.0, 2.0, 5.0]).expect("defined");
        assert!((rho - 0.2).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0], &[30.0, 20.0, 10.0]).expect("defined") + 1.0).abs() < 1e-12);
        // Ties take the mean rank: x ranks (1.5, 1.5, 3), y ranks (1, 2, 3).
        let tied = spearman(&[5.0, 5.0, 7.0], &[1.0, 2.0, 3.0]).expect("defined");
        assert!((tied - 0.866_025_403_784_438_6).abs() < 1e-12, "{tied}");
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
    }

    #[test]
    fn bootstrap_interval_brackets_the_statistic_and_is_seeded() {
        let x: Vec<f64> = (0..30).map(|i| i as f64).collect();
        let y: Vec<f64> = (0..30).map(|i| i as f64 + if i % 3 == 0 { 8.0 } else { 0.0 }).collect();
        let tau = crate::tau_b(&x, &y).expect("defined");
        let (lo, hi) = bootstrap_interval(&x, &y, crate::tau_b, 1000, 0.95, 1).expect("defined");
        assert!(lo < tau && tau < hi && hi <= 1.0 && lo > 0.0, "{lo} {tau} {hi}");
        assert_eq!(bootstrap_interval(&x, &y, crate::tau_b, 1000, 0.95, 1), Some((lo, hi)));
        // Perfect agreement: every resample gives 1.
        assert_eq!(bootstrap_interval(&x, &x, crate::tau_b, 200, 0.95, 2), Some((1.0, 1.0)));
    }

    #[test]
    fn top_overlap_counts_shared_leaders() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let y = [8.0, 7.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        assert_eq!(top_overlap(&x, &x, 0.25), Some(1.0));
        assert_eq!(top_overlap(&x, &y, 0.25), Some(0.0));
        let z = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 0.0];
        assert_eq!(top_overlap(&x, &z, 0.25), Some(0.5));
    }
}
