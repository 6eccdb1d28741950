//! The accuracy/latency Pareto front: the models no other model beats on both counts.

use crate::trial::{Trial, TrialStatus};

/// Accuracy and latency of an ok trial with real measurements.
fn point(t: &Trial) -> Option<(f64, f64)> {
    match (t.status, t.accuracy, t.latency_ms) {
        (TrialStatus::Ok, Some(a), Some(l)) if a.is_finite() && l.is_finite() => Some((a, l)),
        _ => None,
    }
}

/// The non-dominated ok trials (maximise accuracy, minimise latency), sorted by latency, so
/// accuracy increases along the front too.
///
/// A trial is dominated when another is at least as accurate and at least as fast, better in one.
/// Trials with identical (accuracy, latency) — most often one arch reused — appear once, as the
/// earliest by (step, index). Failed trials and ok ones without measurements are ignored.
pub fn pareto_front(trials: &[Trial]) -> Vec<&Trial> {
    let mut points: Vec<(f64, f64, &Trial)> = trials.iter().filter_map(|t| point(t).map(|(a, l)| (a, l, t))).collect();
    // Fastest first; at equal latency the most accurate first, then the earliest, so the sweep
    // below keeps exactly the first of every group of equals.
    points.sort_by(|x, y| {
        x.1.total_cmp(&y.1).then(y.0.total_cmp(&x.0)).then((x.2.step, x.2.index).cmp(&(y.2.step, y.2.index)))
    });
    let mut front = Vec::new();
    let mut best = f64::NEG_INFINITY;
    for (accuracy, _, t) in points {
        // Everything seen so far is at least as fast, so only a strictly better accuracy survives.
        if accuracy > best {
            best = accuracy;
            front.push(t);
        }
    }
    front
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(step: u64, index: u64, accuracy: f64, latency: f64) -> Trial {
        Trial {
            step,
            index,
            tokens: vec![],
            arch: format!("arch{step}.{index}"),
            arch_json: serde_json::Value::Null,
            params: 0,
            macs: 0,
            accuracy: Some(accuracy),
            quality: None,
            latency_ms: Some(latency),
            fingerprint: None,
            reward: accuracy,
            status: TrialStatus::Ok,
            reason: None,
            train_seconds: 0.0,
            latency_seconds: 0.0,
            reused: false,
            finished_at: String::new(),
        }
    }

    fn keys(front: &[&Trial]) -> Vec<(u64, u64)> {
        front.iter().map(|t| (t.step, t.index)).collect()
    }

    /// Every pair checked directly: the front is exactly the set of undominated points.
    fn brute_force(trials: &[Trial]) -> Vec<(f64, f64)> {
        let pts: Vec<(f64, f64)> = trials.iter().filter_map(point).collect();
        let mut out: Vec<(f64, f64)> = pts
            .iter()
            .filter(|&&(a, l)| !pts.iter().any(|&(b, m)| b >= a && m <= l && (b > a || m < l)))
            .copied()
            .collect();
        out.sort_by(|x, y| x.1.total_cmp(&y.1));
        out.dedup();
        out
    }

    #[test]
    fn front_of_a_small_set() {
        let trials = vec![
            t(0, 0, 0.70, 20.0), // front
            t(0, 1, 0.60, 25.0), // dominated by (0,0)
            t(0, 2, 0.75, 30.0), // front
            t(1, 0, 0.65, 10.0), // front: fastest
            t(1, 1, 0.75, 35.0), // same accuracy, slower: dominated
            t(1, 2, 0.80, 50.0), // front: most accurate
            t(2, 0, 0.55, 10.0), // same latency, less accurate: dominated
        ];
        let front = pareto_front(&trials);
        assert_eq!(keys(&front), vec![(1, 0), (0, 0), (0, 2), (1, 2)]);
        let lat: Vec<f64> = front.iter().map(|t| t.latency_ms.unwrap()).collect();
        assert!(lat.windows(2).all(|w| w[0] < w[1]), "{lat:?}");
    }

    #[test]
    fn exact_ties_appear_once_as_the_earliest() {
        let trials = vec![t(3, 1, 0.7, 12.0), t(1, 4, 0.7, 12.0), t(2, 0, 0.7, 12.0), t(0, 0, 0.5, 8.0)];
        assert_eq!(keys(&pareto_front(&trials)), vec![(0, 0), (1, 4)]);
    }

    #[test]
    fn failed_and_unmeasured_trials_are_ignored() {
        let mut broken = t(0, 0, 0.99, 1.0);
        broken.status = TrialStatus::Failed;
        let mut nan = t(0, 1, f64::NAN, 2.0);
        nan.accuracy = Some(f64::NAN);
        let mut missing = t(0, 2, 0.9, 3.0);
        missing.latency_ms = None;
        let trials = vec![broken, nan, missing, t(1, 0, 0.4, 9.0)];
        assert_eq!(keys(&pareto_front(&trials)), vec![(1, 0)]);
        assert!(pareto_front(&[]).is_empty());
    }

    #[test]
    fn agrees_with_brute_force_on_a_grid_with_many_ties() {
        // Deterministic pseudo-random points on a coarse grid, so equal coordinates are common.
        let mut x = 12345u64;
        let mut next = |n: u64| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        // Accuracy grows with latency plus noise, as in a real search, so the front is not one corner.
        let trials: Vec<Trial> = (0..300)
            .map(|i| {
                let lat = 1 + next(15);
                t(i / 10, i % 10, (lat + next(8)) as f64 / 25.0, lat as f64)
            })
            .collect();
        let front: Vec<(f64, f64)> =
            pareto_front(&trials).iter().map(|t| (t.accuracy.unwrap(), t.latency_ms.unwrap())).collect();
        assert_eq!(front, brute_force(&trials));
        assert!(front.len() > 2, "{front:?}");
    }
}
