pub mod arch;
pub mod export;
pub mod space;
pub mod weights;
