//! The two measurements of a trial, bound to this machine: proxy training (accuracy) and the
//! device (latency).

use std::panic::{catch_unwind, AssertUnwindSafe};

use mnas_data::Splits;
use mnas_model::backend::CpuTrain;
use mnas_model::train::{train, Quiet, TrainConfig, TrainStatus};
use mnas_search::scheduler::{AccuracyEvaluator, AccuracyResult};
use mnas_space::Arch;

/// Trains each candidate briefly on the proxy split and reports held-out top-1.
pub struct ProxyTrainer {
    pub data: Splits,
    pub config: TrainConfig,
}

/// A panic inside a kernel is a failed trial, not the end of the search.
pub fn panic_reason(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

impl AccuracyEvaluator for ProxyTrainer {
    fn accuracy(&self, arch: &Arch, seed: u64) -> AccuracyResult {
        let config = TrainConfig { seed, ..self.config.clone() };
        let device = Default::default();
        let run = catch_unwind(AssertUnwindSafe(|| {
            train::<CpuTrain>(arch, &self.data, &config, &device, None, 0, &mut Quiet)
        }));
        match run {
            Ok(Ok(outcome)) => match outcome.status {
                TrainStatus::Completed => AccuracyResult::Ok(outcome.val_top1),
                TrainStatus::Failed { reason } => AccuracyResult::Failed(reason),
            },
            Ok(Err(e)) => AccuracyResult::Failed(e.to_string()),
            Err(payload) => AccuracyResult::Failed(format!("training panicked: {}", panic_reason(payload))),
        }
    }
}
