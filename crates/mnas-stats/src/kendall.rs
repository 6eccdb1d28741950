//! Kendall's rank correlation, tau-b (the variant that corrects for ties, as SciPy's default):
//! how often two quantities order a pair of models the same way. A search only needs the latency
//! predictor to *rank* models correctly, so this is the figure that says whether a predictor (or
//! MACs) can stand in for a measurement.

/// Kendall tau-b of two paired samples: `(C - D) / sqrt((n0 - n1) (n0 - n2))` with C / D the
/// concordant / discordant pairs, n0 all pairs, n1 / n2 the pairs tied in `x` / in `y`.
/// `None` when the lengths differ, fewer than two pairs exist, a value is not finite, or one
/// side is constant (the correlation is undefined). O(n^2): fine for the few hundred models a
/// report measures.
pub fn tau_b(x: &[f64], y: &[f64]) -> Option<f64> {
    let n = x.len();
    if n != y.len() || n < 2 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let (mut concordant, mut discordant, mut tied_x, mut tied_y) = (0i64, 0i64, 0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let dx = x[i].total_cmp(&x[j]);
            let dy = y[i].total_cmp(&y[j]);
            match (dx.is_eq(), dy.is_eq()) {
                (true, true) => {
                    tied_x += 1;
                    tied_y += 1;
                }
                (true, false) => tied_x += 1,
                (false, true) => tied_y += 1,
                (false, false) if dx == dy => concordant += 1,
                (false, false) => discordant += 1,
            }
        }
    }
    let pairs = (n * (n - 1) / 2) as i64;
    let denominator = (((pairs - tied_x) as f64) * ((pairs - tied_y) as f64)).sqrt();
    if denominator == 0.0 {
        return None;
    }
    Some((concordant - discordant) as f64 / denominator)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    #[test]
    fn known_example_without_ties() {
        // Pairs of (1..5) vs (3, 4, 1, 2, 5): 6 concordant, 4 discordant of 10 -> 0.2.
        assert!(close(tau_b(&[1.0, 2.0, 3.0, 4.0, 5.0], &[3.0, 4.0, 1.0, 2.0, 5.0]), 0.2));
        // Same and reversed order.
        assert!(close(tau_b(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]), 1.0));
        assert!(close(tau_b(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]), -1.0));
    }

    #[test]
    fn ties_use_the_b_correction() {
        // x = (1, 1, 2, 3), y = (1, 2, 2, 3): 4 concordant, 0 discordant, one pair tied in x and
        // one in y, of 6: tau-b = 4 / sqrt(5 * 5) = 0.8 (tau-a would give 4/6).
        assert!(close(tau_b(&[1.0, 1.0, 2.0, 3.0], &[1.0, 2.0, 2.0, 3.0]), 0.8));
    }

    #[test]
    fn undefined_cases() {
        assert_eq!(tau_b(&[1.0], &[1.0]), None);
        assert_eq!(tau_b(&[1.0, 2.0], &[1.0]), None);
        assert_eq!(tau_b(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
        assert_eq!(tau_b(&[1.0, f64::NAN], &[1.0, 2.0]), None);
    }
}
