//! mnas-stats: the rank statistics that say whether one quantity can stand in for another (a
//! latency predictor for a measurement, a cheap proxy for a long training run).

pub mod kendall;
pub mod rank;

pub use kendall::tau_b;
pub use rank::{bootstrap_interval, spearman, top_overlap};
