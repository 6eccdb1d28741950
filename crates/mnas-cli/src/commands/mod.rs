pub mod arch;
pub mod export;
pub mod latency;
pub mod space;
pub mod train;
pub mod weights;
