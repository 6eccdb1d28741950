//! The MnasNet objective (paper eq. 2, DESIGN §1): `R(m) = ACC(m) * (LAT(m)/T)^w`,
//! `w = alpha` if `LAT <= T` else `beta`.

use serde::{Deserialize, Serialize};

use crate::error::{Result, SearchError};

/// Which exponents the latency term uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Constraint {
    /// alpha = beta = -0.07: doubling latency costs ~5% relative reward (the paper's search).
    Soft,
    /// alpha = 0, beta = -1: no reward for being faster than T, a steep penalty for being slower.
    Hard,
    Custom {
        alpha: f64,
        beta: f64,
    },
}

impl Constraint {
    pub fn exponents(self) -> (f64, f64) {
        match self {
            Constraint::Soft => (-0.07, -0.07),
            Constraint::Hard => (0.0, -1.0),
            Constraint::Custom { alpha, beta } => (alpha, beta),
        }
    }
}

/// A reward function with its target latency.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reward {
    /// T, milliseconds.
    pub target_ms: f64,
    pub constraint: Constraint,
}

/// What a failed trial (NaN loss, build error, device loss) is worth: below any real model's reward.
pub const FAILED_REWARD: f64 = 0.0;

impl Reward {
    pub fn new(target_ms: f64, constraint: Constraint) -> Result<Reward> {
        if !(target_ms.is_finite() && target_ms > 0.0) {
            return Err(SearchError::Config(format!("target latency must be > 0 ms, got {target_ms}")));
        }
        let (alpha, beta) = constraint.exponents();
        if !(alpha.is_finite() && beta.is_finite()) || alpha > 0.0 || beta > 0.0 {
            return Err(SearchError::Config(format!(
                "alpha and beta must be finite and <= 0 (a positive exponent rewards slowness), got alpha {alpha}, beta {beta}"
            )));
        }
        Ok(Reward { target_ms, constraint })
    }

    /// The reward of a model with top-1 `accuracy` (a fraction in [0, 1]) and `latency_ms`.
    pub fn of(&self, accuracy: f64, latency_ms: f64) -> f64 {
        if !(accuracy.is_finite() && latency_ms.is_finite() && latency_ms > 0.0) {
            return FAILED_REWARD;
        }
        let (alpha, beta) = self.constraint.exponents();
        let w = if latency_ms <= self.target_ms { alpha } else { beta };
        accuracy.max(0.0) * (latency_ms / self.target_ms).powf(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_constraint_trades_five_percent_accuracy_for_double_latency() {
        let r = Reward::new(75.0, Constraint::Soft).unwrap();
        assert_eq!(r.of(0.75, 75.0), 0.75);
        let slow = r.of(0.75 * 1.05, 150.0);
        assert!((slow / 0.75 - 1.0).abs() < 2e-3, "{slow}");
        // Faster than T is rewarded mildly, symmetric in log-latency.
        assert!(r.of(0.75, 37.5) > 0.75);
    }

    #[test]
    fn hard_constraint_ignores_speed_below_target_and_punishes_above() {
        let r = Reward::new(10.0, Constraint::Hard).unwrap();
        assert_eq!(r.of(0.6, 5.0), 0.6);
        assert_eq!(r.of(0.6, 10.0), 0.6);
        assert!((r.of(0.6, 20.0) - 0.3).abs() < 1e-12);
    }

    #[test]
    fn bad_settings_and_failed_measurements() {
        assert!(Reward::new(0.0, Constraint::Soft).is_err());
        assert!(Reward::new(f64::NAN, Constraint::Soft).is_err());
        assert!(Reward::new(10.0, Constraint::Custom { alpha: 0.1, beta: -1.0 }).is_err());
        let r = Reward::new(10.0, Constraint::Soft).unwrap();
        assert_eq!(r.of(f64::NAN, 5.0), FAILED_REWARD);
        assert_eq!(r.of(0.5, 0.0), FAILED_REWARD);
    }
}
