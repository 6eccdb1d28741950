//! mnas-latency: what a network costs on this machine, measured, never proxied (DESIGN §1).
//!
//! - the built-in engine is mnas-engine's inference form (BN folded into the convs, activations fused);
//! - [`measure`]: pinned threads, warm-up, N timed batch forwards, median / p10 / p90 / CV, and a
//!   re-measurement when the spread is too wide;
//! - [`fingerprint`]: the device, engine and build every measurement carries;
//! - [`store`]: the SQLite table a search reuses, so a measured arch costs nothing the second time;
//!   [`cached`] serves from it what is still valid (stable, taken at this machine's pace) and
//!   measures the rest;
//! - [`lut`] / [`lut_build`] / [`lut_report`]: the per-layer lookup-table predictor (microseconds
//!   per arch), judged by how well it ranks (Kendall tau, from mnas-stats) against archs measured
//!   in [`passes`]; [`timers`] loads the engine a table names;
//! - [`protocol`] / [`agent`] / [`pool`]: measuring on other machines through `mnas agent`;
//! - [`engine`]: measuring with an external command (`--engine cmd:...`) on an exported ONNX model.

pub mod agent;
pub mod broker_devices;
pub mod cached;
pub mod engine;
pub mod engines;
pub mod error;
pub mod fingerprint;
pub mod lut;
pub mod lut_build;
pub mod lut_report;
pub mod measure;
pub mod ort_engine;
pub mod passes;
pub mod pin;
pub mod pool;
pub mod protocol;
pub mod source;
pub mod stats;
pub mod store;
pub mod timers;

use mnas_space::Arch;

pub use cached::{key_for, key_on, measure_cached, measure_cached_on, measure_cached_with};
pub use error::{LatencyError, Result};
pub use fingerprint::{Fingerprint, ENGINE, ENGINE_VERSION};
pub use lut::{Lut, LutError};
pub use measure::{measure_on, BuiltIn, LocalEngine, MeasureOptions, Measurement, Progress, StageTime};
pub use ort_engine::OrtEngine;
pub use source::{LatencySource, SourceError};
pub use stats::Stats;
pub use store::{Key, Store};

/// Measures `arch` on this machine (no store).
pub fn measure_arch(arch: &Arch, opts: &MeasureOptions) -> Result<Measurement> {
    measure::measure(arch, opts, &|_| {})
}
