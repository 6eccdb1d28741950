//! The latency half of a trial, from whichever device the user chose.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use mnas_latency::engine::EngineCommand;
use mnas_latency::lut::Lut;
use mnas_latency::pool::{AgentPool, PoolOptions};
use mnas_latency::{measure_cached, Fingerprint, MeasureOptions, Measurement, Store};
use mnas_search::search_loop::{LatencyEvaluator, LatencyResult};
use mnas_space::Arch;

use super::config::LatencySource;

/// Longest an engine command may run for one model.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(600);

enum Device {
    Local { store: Option<Mutex<Store>> },
    Agents { pool: AgentPool },
    Engine { command: EngineCommand },
    Lut { lut: Box<Lut> },
}

pub struct DeviceLatency {
    device: Device,
    options: MeasureOptions,
    description: String,
}

fn options_of(threads: usize, runs: usize, warmup: usize) -> Result<MeasureOptions> {
    let options = MeasureOptions { threads, runs, warmup, ..MeasureOptions::default() };
    options.validate()?;
    Ok(options)
}

impl DeviceLatency {
    /// Opens the device of `source`; `token` is the agents' shared secret; `store` the local
    /// latency store (local measurement only).
    pub fn open(source: &LatencySource, token: Option<&str>, store: Option<&Path>) -> Result<DeviceLatency> {
        match source {
            LatencySource::Local { threads, runs, warmup } => {
                let options = options_of(*threads, *runs, *warmup)?;
                let cores = mnas_latency::measure::planned_cores(&options)?;
                let store = match store {
                    Some(path) => Some(Mutex::new(
                        Store::open(path).with_context(|| format!("latency store {}", path.display()))?,
                    )),
                    None => None,
                };
                let fp = Fingerprint::current(options.threads, cores);
                let description = format!("{} (this machine, {runs} runs per model)", fp.summary());
                Ok(DeviceLatency { device: Device::Local { store }, options, description })
            }
            LatencySource::Agents { addrs, threads, runs, warmup } => {
                let options = options_of(*threads, *runs, *warmup)?;
                let Some(token) = token else {
                    bail!("measuring on agents needs their token: --latency-token T or MNAS_AGENT_TOKEN");
                };
                let pool = AgentPool::new(addrs.clone(), token, PoolOptions::default())?;
                // Fail now, not trial after trial, when no agent answers or the token is wrong.
                let answers = pool.fingerprints();
                if answers.iter().all(|(_, r)| r.is_err()) {
                    let why: Vec<String> =
                        answers.iter().filter_map(|(_, r)| r.as_ref().err().map(|e| e.to_string())).collect();
                    bail!("latency device: {}", why.join("; "));
                }
                let description = format!("agents {} ({runs} runs per model)", addrs.join(", "));
                Ok(DeviceLatency { device: Device::Agents { pool }, options, description })
            }
            LatencySource::Engine { command, threads, runs, warmup } => {
                let options = options_of(*threads, *runs, *warmup)?;
                let command = EngineCommand::parse(command, ENGINE_TIMEOUT)?;
                let description = format!("engine command `{}`", command.template);
                Ok(DeviceLatency { device: Device::Engine { command }, options, description })
            }
            LatencySource::Lut { path, fingerprint_key } => {
                let lut = Lut::load(path).with_context(|| format!("latency table {path}"))?;
                lut.check_device().with_context(|| format!("latency table {path}"))?;
                if &lut.fingerprint_key != fingerprint_key {
                    bail!(
                        "latency table {path} changed since the search started (device {} now, {} then)",
                        lut.fingerprint_key,
                        fingerprint_key
                    );
                }
                let description = format!("lookup table {path} ({})", lut.fingerprint.summary());
                Ok(DeviceLatency {
                    device: Device::Lut { lut: Box::new(lut) },
                    options: MeasureOptions::default(),
                    description,
                })
            }
        }
    }

    /// Fails early when a lookup table cannot predict the models this search deploys (another
    /// resolution or class count), rather than failing every trial.
    pub fn check_covers(&self, sample: &Arch) -> Result<()> {
        if let Device::Lut { lut } = &self.device {
            if let Err(e) = lut.predict(sample) {
                bail!(
                    "the latency table cannot predict this search's models ({e}); build one with \
                     `mnas latency build-lut --resolution {} --classes {}`",
                    sample.resolution,
                    sample.num_classes
                );
            }
        }
        Ok(())
    }

    /// The device in words, for the report.
    pub fn describe(&self) -> String {
        self.description.clone()
    }

    fn measure(&self, arch: &Arch) -> Result<Measurement, String> {
        match &self.device {
            Device::Local { store: Some(store) } => {
                let store = store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                measure_cached(&store, arch, &self.options).map(|(m, _)| m).map_err(|e| e.to_string())
            }
            Device::Local { store: None } => mnas_latency::measure_arch(arch, &self.options).map_err(|e| e.to_string()),
            Device::Agents { pool } => pool.measure(arch, &self.options).map_err(|e| e.to_string()),
            Device::Engine { command } => command.measure(arch, &self.options).map_err(|e| e.to_string()),
            Device::Lut { .. } => Err("a lookup table predicts, it does not measure".into()),
        }
    }
}

impl LatencyEvaluator for DeviceLatency {
    fn latency(&self, arch: &Arch) -> LatencyResult {
        let run = catch_unwind(AssertUnwindSafe(|| match &self.device {
            Device::Lut { lut } => lut
                .predict(arch)
                .map(|ms| (ms, serde_json::json!({ "lut": lut.fingerprint_key, "device": lut.fingerprint })))
                .map_err(|e| e.to_string()),
            _ => self.measure(arch).map(|m| {
                let fingerprint = serde_json::to_value(&m.fingerprint).unwrap_or(serde_json::Value::Null);
                (m.stats.median_ms, fingerprint)
            }),
        }));
        match run {
            Ok(Ok((median_ms, fingerprint))) => LatencyResult::Ok { median_ms, fingerprint },
            Ok(Err(reason)) => LatencyResult::Failed(reason),
            Err(payload) => LatencyResult::Failed(format!("measurement panicked: {}", panic_reason(payload))),
        }
    }

    fn shares_cores_with_training(&self) -> bool {
        // An engine command may run here or on a phone; assume here, the safe side.
        matches!(self.device, Device::Local { .. } | Device::Engine { .. })
    }
}

/// A panic inside a kernel is a failed trial, not the end of the search.
fn panic_reason(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}
