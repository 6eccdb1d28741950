//! mnas-model: burn networks built from an mnas [`Arch`](mnas_space::Arch), with timm-compatible
//! weight import and our own safetensors export. burn stays behind this crate.

pub mod backend;
pub mod checkpoint;
pub mod cpu_ops;
pub mod ema;
pub mod error;
pub mod kinks;
pub mod layers;
pub mod net;
pub mod parity;
pub mod train;
pub mod weights;

pub use burn;
pub use error::ModelError;
pub use net::MnasNet;
