//! mnas-pipeline: what one trial of a search is (proxy training for accuracy, and latency) as a
//! library that `mnas search`, workers and benchmarks share, and the proxy fidelity benchmark
//! that judges a proxy recipe against long reference trainings.

pub mod error;
pub mod fidelity;
pub mod proxy;

pub use error::{PipelineError, Result};
pub use proxy::{ProxySettings, ProxyTrainer, Score};
