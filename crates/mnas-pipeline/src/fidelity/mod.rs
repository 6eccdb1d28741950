//! The proxy fidelity benchmark (`mnas bench proxy`): does a cheap proxy rank architectures the
//! way a long training does, and better than counting parameters or MACs?
//!
//! - [`sample`]: a fixed, seeded sample of the search space, stratified by MACs;
//! - [`reference`]: the long "reference" training of every sampled architecture, a resumable job
//!   whose results are kept in a file committed with the repository;
//! - [`bench`]: a proxy recipe run on the sample with several seeds (cached, resumable), and the
//!   rank statistics against the reference.

pub mod bench;
pub mod record;
pub mod reference;
pub mod sample;

pub use bench::{BenchReport, ProxyBench, ScoreFigures};
pub use reference::{Reference, ReferenceHeader, ReferenceJob, ReferenceRow};
pub use sample::{stratified_sample, SampledArch};

use mnas_engine::train::{Progress, RunResult};

/// Progress of a benchmark job, for displays.
pub trait JobObserver {
    /// Run `done + 1` of `total` starts: `what` names it.
    fn on_run_start(&mut self, _what: &str, _done: usize, _total: usize) {}
    /// A training step; false stops the job after the current run is recorded... or, here, stops
    /// the current run (it is then not recorded and will run again next time).
    fn on_step(&mut self, _progress: Progress) -> bool {
        true
    }
    fn on_run_end(&mut self, _what: &str, _result: &RunResult) {}
}

/// An observer that shows nothing.
pub struct Silent;
impl JobObserver for Silent {}
