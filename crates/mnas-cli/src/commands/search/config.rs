//! What defines a search run, stored in its trial store: a resume takes these settings from the
//! store, and an option given again must agree with them.

use anyhow::{bail, Result};
use mnas_pipeline::ProxySettings;
use mnas_search::strategies::StrategyConfig;
use mnas_search::{Constraint, StrategyKind};
use serde::{Deserialize, Serialize};

/// Where latencies come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LatencySource {
    /// This machine, pinned core(s), through the latency store.
    Local { threads: usize, runs: usize, warmup: usize },
    /// `mnas agent`s on the target device(s); the token is not stored (a secret).
    Agents { addrs: Vec<String>, threads: usize, runs: usize, warmup: usize },
    /// A user command run on each exported ONNX model (`cmd:TEMPLATE`).
    Engine { command: String, threads: usize, runs: usize, warmup: usize },
    /// Predicted from a lookup table built with `mnas latency build-lut`.
    Lut { path: String, fingerprint_key: String },
}

/// The whole stored configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub mnas_version: String,
    pub strategy: StrategyKind,
    pub strategy_config: StrategyConfig,
    pub seed: u64,
    pub trials: usize,
    pub models_per_step: usize,
    pub constraint: Constraint,
    /// What the user asked for: milliseconds, or "auto" (MobileNetV2-1.0 measured on the device).
    pub target: String,
    /// The resolved target, milliseconds.
    pub target_ms: f64,
    pub deploy_resolution: u32,
    pub num_classes: u32,
    pub proxy: ProxySettings,
    pub latency: LatencySource,
}

/// Compares an option given on a resume with the stored value.
pub fn agree<T: PartialEq + std::fmt::Debug>(option: &str, given: Option<T>, stored: &T) -> Result<()> {
    match given {
        Some(g) if &g != stored => bail!(
            "{option} {g:?} contradicts this run's stored setting {stored:?}; a resumed search keeps its settings \
             (start a new run with --out to change them)"
        ),
        _ => Ok(()),
    }
}
