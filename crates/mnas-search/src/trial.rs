//! One sampled model's evaluation: plain data, written to the store and read by the report.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialStatus {
    /// Trained and measured; `accuracy`, `latency_ms` and `reward` are real.
    Ok,
    /// Training diverged, the arch failed to build, or the device cannot run it; `reason` says
    /// which. The reward is [`crate::reward::FAILED_REWARD`], and the strategy learns from it.
    Failed,
    /// The infrastructure failed (worker lost, device unreachable, broker down) even after a retry:
    /// recorded with the reason, left out of the strategy's update, and tried again when the arch
    /// comes back.
    Unavailable,
}

impl TrialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Ok => "ok",
            TrialStatus::Failed => "failed",
            TrialStatus::Unavailable => "unavailable",
        }
    }
}

/// A finished trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Controller step that proposed it (0-based) and its index within the step.
    pub step: u64,
    pub index: u64,
    /// The 42-token encoding (see `mnas_space::SearchSpace`).
    pub tokens: Vec<usize>,
    /// `Arch::canonical()` at the deployment resolution.
    pub arch: String,
    /// The arch as JSON (what `mnas export-arch` writes).
    pub arch_json: serde_json::Value,
    pub params: u64,
    pub macs: u64,
    /// Held-out top-1 after the proxy training, in [0, 1].
    pub accuracy: Option<f64>,
    /// What the reward multiplies when the proxy scores by something other than accuracy (see
    /// [`crate::search_loop::Scored`]); absent in trials stored before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<f64>,
    /// Median latency at the deployment resolution, batch 1.
    pub latency_ms: Option<f64>,
    /// The device fingerprint of the latency (JSON), so results from different devices never mix.
    pub fingerprint: Option<serde_json::Value>,
    pub reward: f64,
    pub status: TrialStatus,
    pub reason: Option<String>,
    pub train_seconds: f64,
    pub latency_seconds: f64,
    /// True when accuracy and latency came from an earlier trial of the same arch.
    pub reused: bool,
    /// RFC 3339 UTC.
    pub finished_at: String,
}

impl Trial {
    /// What the reward multiplied: the stored quality, or the accuracy for trials scored by it.
    pub fn quality(&self) -> Option<f64> {
        self.quality.or(self.accuracy)
    }

    /// Whether the reward multiplied something other than the accuracy shown (a proxy loss).
    pub fn scored_by_loss(&self) -> bool {
        matches!((self.quality, self.accuracy), (Some(q), Some(a)) if q != a)
    }
}

/// Mean reward over the last quarter of `trials` (in search order): the figure that says whether a
/// strategy learned, since every strategy starts from the same random draws. Failed trials count
/// with the reward the strategy saw.
pub fn last_quarter_mean(trials: &[Trial]) -> Option<f64> {
    if trials.is_empty() {
        return None;
    }
    let tail = &trials[trials.len() - trials.len().div_ceil(4)..];
    Some(tail.iter().map(|t| t.reward).sum::<f64>() / tail.len() as f64)
}

/// The last-quarter mean reward of several runs of one strategy: their mean and its standard
/// error (sample SD / sqrt(runs)), the comparison a claim "strategy A learns better than B" needs.
#[derive(Debug, Clone, PartialEq)]
pub struct StrategySummary {
    pub strategy: String,
    pub runs: usize,
    pub mean: f64,
    /// `None` with a single run (no spread to estimate).
    pub standard_error: Option<f64>,
}

/// One [`StrategySummary`] per strategy, in order of first appearance; runs without trials are
/// left out.
pub fn by_strategy<'a>(runs: impl IntoIterator<Item = (&'a str, &'a [Trial])>) -> Vec<StrategySummary> {
    let mut groups: Vec<(String, Vec<f64>)> = Vec::new();
    for (strategy, trials) in runs {
        let Some(m) = last_quarter_mean(trials) else { continue };
        match groups.iter_mut().find(|(s, _)| s == strategy) {
            Some((_, values)) => values.push(m),
            None => groups.push((strategy.to_string(), vec![m])),
        }
    }
    groups
        .into_iter()
        .map(|(strategy, values)| {
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let standard_error = (values.len() > 1).then(|| {
                let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
                (var / n).sqrt()
            });
            StrategySummary { strategy, runs: values.len(), mean, standard_error }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_are_summarised_over_their_runs() {
        let run = |rewards: &[f64]| rewards.iter().copied().map(with_reward).collect::<Vec<_>>();
        let (a, b, c, d) = (run(&[0.0, 0.2]), run(&[0.0, 0.4]), run(&[0.1, 0.3]), run(&[]));
        let s = by_strategy([("ppo", &a[..]), ("random", &c[..]), ("ppo", &b[..]), ("ppo", &d[..])]);
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].strategy.as_str(), s[0].runs), ("ppo", 2));
        assert!((s[0].mean - 0.3).abs() < 1e-12);
        // SD of {0.2, 0.4} is 0.1414; over sqrt(2) runs: 0.1.
        assert!((s[0].standard_error.unwrap() - 0.1).abs() < 1e-12, "{s:?}");
        assert_eq!((s[1].runs, s[1].standard_error), (1, None));
    }

    fn with_reward(reward: f64) -> Trial {
        Trial {
            step: 0,
            index: 0,
            tokens: vec![],
            arch: String::new(),
            arch_json: serde_json::Value::Null,
            params: 0,
            macs: 0,
            accuracy: None,
            quality: None,
            latency_ms: None,
            fingerprint: None,
            reward,
            status: TrialStatus::Ok,
            reason: None,
            train_seconds: 0.0,
            latency_seconds: 0.0,
            reused: false,
            finished_at: String::new(),
        }
    }

    #[test]
    fn last_quarter_rounds_up_and_averages_the_tail() {
        assert_eq!(last_quarter_mean(&[]), None);
        let trials: Vec<Trial> = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0].map(with_reward).to_vec();
        assert_eq!(last_quarter_mean(&trials), Some(7.5));
        assert_eq!(last_quarter_mean(&trials[..5]), Some(4.5));
        assert_eq!(last_quarter_mean(&trials[..1]), Some(1.0));
    }
}
