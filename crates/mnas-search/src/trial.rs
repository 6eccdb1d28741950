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

#[cfg(test)]
mod tests {
    use super::*;

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
