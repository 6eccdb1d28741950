//! mnas-pipeline: what one trial of a search is (proxy training for accuracy, and latency) as a
//! library that `mnas search`, workers and benchmarks share, and the proxy fidelity benchmark
//! that judges a proxy recipe against long reference trainings.

pub mod distributed;
pub mod error;
pub mod fidelity;
pub mod latency;
pub mod proxy;
pub mod search_run;
pub mod worker;

pub use error::{PipelineError, Result};
pub use proxy::{ProxySettings, ProxyTrainer, Score};

/// The message of a panic payload: a panic inside a kernel or an engine is a failed trial, not
/// the end of a search.
pub fn panic_reason(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}
