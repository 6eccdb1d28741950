//! A search's latency source: what the run stores (a [`LatencySpec`], plain data) and what it
//! opens on every start (a [`LatencySource`] behind the search loop's evaluator).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use mnas_latency::broker_devices::OnBrokerDevices;
use mnas_latency::engine::EngineCommand;
use mnas_latency::lut::Lut;
use mnas_latency::pool::{AgentPool, PoolOptions};
use mnas_latency::source::{ByCommand, OnAgents, OnThisMachine};
use mnas_latency::{BuiltIn, LatencySource, LocalEngine, MeasureOptions, OrtEngine, SourceError, Store};
use mnas_search::search_loop::{LatencyEvaluator, LatencyResult};
use mnas_space::Arch;
use serde::{Deserialize, Serialize};

use crate::error::{PipelineError, Result};

/// Longest an engine command may run for one model.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(600);

/// The engine a local measurement runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalEngineKind {
    /// mnas's own engine.
    #[default]
    BuiltIn,
    /// ONNX Runtime in process.
    Ort,
}

/// Where latencies come from, as stored with a search run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LatencySpec {
    /// This machine, pinned core(s), through the latency store.
    Local {
        threads: usize,
        runs: usize,
        warmup: usize,
        #[serde(default)]
        engine: LocalEngineKind,
    },
    /// `mnas agent`s on the target device(s); the token is not stored (a secret).
    Agents { addrs: Vec<String>, threads: usize, runs: usize, warmup: usize },
    /// A user command run on each exported ONNX model (`cmd:TEMPLATE`).
    Engine { command: String, threads: usize, runs: usize, warmup: usize },
    /// Predicted from a lookup table built with `mnas latency build-lut`.
    Lut { path: String, fingerprint_key: String },
    /// Any agent of a device class on the broker (`mnas agent --broker URL --device-class NAME`);
    /// the broker URL is not stored (it may hold a password).
    Broker { class: String, threads: usize, runs: usize, warmup: usize },
}

impl Default for LatencySpec {
    fn default() -> Self {
        LatencySpec::Local { threads: 1, runs: 10, warmup: 3, engine: LocalEngineKind::BuiltIn }
    }
}

/// What opening a source may need besides its spec (secrets and local paths are not stored).
#[derive(Debug, Clone, Default)]
pub struct LatencyAccess {
    /// The agents' token.
    pub token: Option<String>,
    /// The latency store (local measurement).
    pub store: Option<PathBuf>,
    /// libonnxruntime.so (ONNX Runtime); `None` discovers one.
    pub ort_lib: Option<PathBuf>,
    /// The broker (device classes).
    pub broker: Option<String>,
}

fn options(threads: usize, runs: usize, warmup: usize) -> Result<MeasureOptions> {
    let options = MeasureOptions { threads, runs, warmup, ..MeasureOptions::default() };
    options.validate()?;
    Ok(options)
}

static BUILT_IN: BuiltIn = BuiltIn;

impl LatencySpec {
    /// Opens the source, failing now (not trial after trial) when it cannot answer: no agent
    /// answers, a wrong token, a changed lookup table, a missing ONNX Runtime.
    pub fn open(&self, access: &LatencyAccess) -> Result<Box<dyn LatencySource>> {
        match self {
            LatencySpec::Local { threads, runs, warmup, engine } => {
                let options = options(*threads, *runs, *warmup)?;
                mnas_latency::measure::planned_cores(&options)?;
                let engine: &'static dyn LocalEngine = match engine {
                    LocalEngineKind::BuiltIn => &BUILT_IN,
                    LocalEngineKind::Ort => OrtEngine::load(access.ort_lib.as_deref())?,
                };
                let store = match &access.store {
                    Some(path) => Some(Mutex::new(Store::open(path)?)),
                    None => None,
                };
                Ok(Box::new(OnThisMachine { engine, options, store }))
            }
            LatencySpec::Agents { addrs, threads, runs, warmup } => {
                let options = options(*threads, *runs, *warmup)?;
                let Some(token) = &access.token else {
                    return Err(PipelineError::Latency("measuring on agents needs their token".into()));
                };
                let pool = AgentPool::new(addrs.clone(), token.clone(), PoolOptions::default())
                    .map_err(|e| PipelineError::Latency(e.to_string()))?;
                let answers = pool.fingerprints();
                if answers.iter().all(|(_, r)| r.is_err()) {
                    let why: Vec<String> =
                        answers.iter().filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string())).collect();
                    return Err(PipelineError::Latency(why.join("; ")));
                }
                Ok(Box::new(OnAgents { pool, options }))
            }
            LatencySpec::Engine { command, threads, runs, warmup } => {
                let options = options(*threads, *runs, *warmup)?;
                let command =
                    EngineCommand::parse(command, ENGINE_TIMEOUT).map_err(|e| PipelineError::Latency(e.to_string()))?;
                Ok(Box::new(ByCommand { command, options }))
            }
            LatencySpec::Broker { class, threads, runs, warmup } => {
                let options = options(*threads, *runs, *warmup)?;
                let Some(url) = &access.broker else {
                    return Err(PipelineError::Latency(format!(
                        "device class `{class}` lives on a broker: give the broker URL"
                    )));
                };
                Ok(Box::new(OnBrokerDevices::new(url, class, options)?))
            }
            LatencySpec::Lut { path, fingerprint_key } => {
                let lut = Lut::load(path).map_err(|e| PipelineError::Latency(e.to_string()))?;
                let engine = mnas_latency::timers::engine_of(&lut.fingerprint, access.ort_lib.as_deref())
                    .map_err(|e| PipelineError::Latency(e.to_string()))?;
                lut.check_device(engine).map_err(|e| PipelineError::Latency(e.to_string()))?;
                if &lut.fingerprint_key != fingerprint_key {
                    return Err(PipelineError::Latency(format!(
                        "latency table {path} changed since the search started (device {} now, {} then)",
                        lut.fingerprint_key, fingerprint_key
                    )));
                }
                Ok(Box::new(lut))
            }
        }
    }

    /// A spec for a lookup table file (its device fingerprint is stored with the run).
    pub fn lut(path: &Path) -> Result<LatencySpec> {
        let lut = Lut::load(path).map_err(|e| PipelineError::Latency(e.to_string()))?;
        Ok(LatencySpec::Lut { path: path.display().to_string(), fingerprint_key: lut.fingerprint_key })
    }
}

/// A latency source as the search loop's evaluator: a panic inside an engine is a failed trial,
/// and a source that is down says so ([`LatencyResult::Unavailable`]).
pub struct SearchLatency(pub Box<dyn LatencySource>);

impl LatencyEvaluator for SearchLatency {
    fn latency(&self, arch: &Arch) -> LatencyResult {
        match catch_unwind(AssertUnwindSafe(|| self.0.latency(arch))) {
            Ok(Ok(m)) => LatencyResult::Ok {
                median_ms: m.stats.median_ms,
                fingerprint: serde_json::to_value(&m.fingerprint).unwrap_or(serde_json::Value::Null),
            },
            Ok(Err(SourceError::Model(reason))) => LatencyResult::Failed(reason),
            Ok(Err(SourceError::Unavailable(reason))) => LatencyResult::Unavailable(reason),
            Err(payload) => LatencyResult::Failed(format!("measurement panicked: {}", crate::panic_reason(payload))),
        }
    }

    fn shares_cores_with_training(&self) -> bool {
        self.0.uses_this_machine()
    }
}
