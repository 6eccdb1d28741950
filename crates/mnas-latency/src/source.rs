//! Every place latency can come from behind one trait: this machine's engines (built-in or ONNX
//! Runtime, through the latency store), `mnas agent`s over TCP, a user's engine command, a lookup
//! table. A search, a worker or a benchmark holds a `Box<dyn LatencySource>` and never asks which.

use std::sync::Mutex;

use mnas_space::Arch;

use crate::engine::EngineCommand;
use crate::error::LatencyError;
use crate::lut::Lut;
use crate::measure::{self, LocalEngine, MeasureOptions, Measurement};
use crate::pool::{AgentPool, RemoteError};
use crate::stats::Stats;
use crate::store::Store;

/// Why a source gave no latency. The search treats the two kinds differently: a model that
/// cannot be measured is a failed trial; a source that is down says nothing about the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// This model cannot be measured (invalid, too large for the device, refused by the engine).
    #[error("{0}")]
    Model(String),
    /// The device, the engine or the way to it failed: retry later or elsewhere.
    #[error("{0}")]
    Unavailable(String),
}

/// A source of latencies for the models of a search.
pub trait LatencySource: Send + Sync {
    /// Latency of `arch` at its resolution, with the batch and threads the source was opened with.
    fn latency(&self, arch: &Arch) -> Result<Measurement, SourceError>;
    /// The source in words (reports, progress).
    fn describe(&self) -> String;
    /// Whether measuring runs on this machine's cores: then training must pause while it runs,
    /// since a busy core would distort the timing.
    fn uses_this_machine(&self) -> bool;
    /// Fails early when the source cannot serve models like `sample` (a lookup table of another
    /// resolution), instead of failing every trial.
    fn check_covers(&self, _sample: &Arch) -> Result<(), SourceError> {
        Ok(())
    }
}

/// An engine of this machine, pinned, through the latency store when one is given.
pub struct OnThisMachine {
    pub engine: &'static dyn LocalEngine,
    pub options: MeasureOptions,
    pub store: Option<Mutex<Store>>,
}

impl LatencySource for OnThisMachine {
    fn latency(&self, arch: &Arch) -> Result<Measurement, SourceError> {
        let measure = |a: &Arch, o: &MeasureOptions| measure::measure_on(self.engine, a, o, &|_| {});
        let result = match &self.store {
            Some(store) => {
                let store = store.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                crate::cached::measure_cached_on(&store, self.engine, arch, &self.options, measure).map(|(m, _)| m)
            }
            None => measure(arch, &self.options),
        };
        result.map_err(|e| match e {
            LatencyError::Arch(_) | LatencyError::Model(_) | LatencyError::Fold(_) => SourceError::Model(e.to_string()),
            _ => SourceError::Unavailable(e.to_string()),
        })
    }

    fn describe(&self) -> String {
        let fp = measure::fingerprint_of(
            self.engine,
            self.options.threads,
            measure::planned_cores(&self.options).unwrap_or_default(),
        );
        format!("{} (this machine, {} runs per model)", fp.summary(), self.options.runs)
    }

    fn uses_this_machine(&self) -> bool {
        true
    }
}

/// `mnas agent`s on the target device(s).
pub struct OnAgents {
    pub pool: AgentPool,
    pub options: MeasureOptions,
}

impl LatencySource for OnAgents {
    fn latency(&self, arch: &Arch) -> Result<Measurement, SourceError> {
        self.pool.measure(arch, &self.options).map_err(|e| match e {
            RemoteError::Rejected { .. } | RemoteError::Invalid(_) => SourceError::Model(e.to_string()),
            _ => SourceError::Unavailable(e.to_string()),
        })
    }

    fn describe(&self) -> String {
        format!("agents {} ({} runs per model)", self.pool.agents().join(", "), self.options.runs)
    }

    fn uses_this_machine(&self) -> bool {
        false
    }
}

/// A user's engine command on each exported model.
pub struct ByCommand {
    pub command: EngineCommand,
    pub options: MeasureOptions,
}

impl LatencySource for ByCommand {
    fn latency(&self, arch: &Arch) -> Result<Measurement, SourceError> {
        self.command.measure(arch, &self.options).map_err(|e| match e {
            crate::engine::EngineError::Arch(_)
            | crate::engine::EngineError::Model(_)
            | crate::engine::EngineError::Export(_) => SourceError::Model(e.to_string()),
            _ => SourceError::Unavailable(e.to_string()),
        })
    }

    fn describe(&self) -> String {
        format!("engine command `{}`", self.command.template)
    }

    fn uses_this_machine(&self) -> bool {
        // A command may run here or on a phone; assume here, the safe side.
        true
    }
}

/// A prediction as a measurement: one figure, no spread, the table's device fingerprint with the
/// table as its engine.
pub fn predicted(lut: &Lut, arch: &Arch, ms: f64) -> Measurement {
    let mut fingerprint = lut.fingerprint.clone();
    fingerprint.engine = format!("lut:{}", fingerprint.engine);
    Measurement {
        arch: arch.canonical(),
        name: arch.name.clone(),
        resolution: arch.resolution,
        batch: 1,
        threads: fingerprint.threads,
        stats: Stats { median_ms: ms, p10_ms: ms, p90_ms: ms, mean_ms: ms, min_ms: ms, cv: 0.0, runs: 0 },
        warmup: 0,
        attempts: 0,
        stable: true,
        fingerprint,
        measured_at: mnas_space::timestamp::utc_now(),
        per_layer: None,
        pace_ms: None,
    }
}

impl LatencySource for Lut {
    fn latency(&self, arch: &Arch) -> Result<Measurement, SourceError> {
        self.predict(arch).map(|ms| predicted(self, arch, ms)).map_err(|e| SourceError::Model(e.to_string()))
    }

    fn describe(&self) -> String {
        format!("lookup table ({})", self.fingerprint.summary())
    }

    fn uses_this_machine(&self) -> bool {
        false
    }

    fn check_covers(&self, sample: &Arch) -> Result<(), SourceError> {
        self.predict(sample).map(|_| ()).map_err(|e| {
            SourceError::Model(format!(
                "the latency table cannot predict this search's models ({e}); build one with \
                 `mnas latency build-lut --resolution {} --classes {}`",
                sample.resolution, sample.num_classes
            ))
        })
    }
}
