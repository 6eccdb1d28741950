//! mnas-engine: mnas's own CPU engine. Networks built from an [`Arch`](mnas_space::Arch) run on
//! channels-last batches with hand-written forward and backward passes (no autodiff tape, no
//! framework): the proxy training of every search trial and batch-1 inference run here. The burn
//! model in mnas-model stays the reference it is checked against (and the GPU path).

pub mod awake;
pub mod buf;
pub mod error;
pub mod infer;
pub mod kernels;
pub mod loss;
pub mod mat;
pub mod net;
pub mod params;
pub mod simd;
pub mod train;

pub use error::EngineError;
pub use infer::{Folded, FoldedLayer, OpKind};
pub use net::{Net, NetOptions, Tape};
pub use params::Params;

/// The engine's version and build: the crate version plus a hash of its sources.
pub const BUILD: &str = concat!(env!("CARGO_PKG_VERSION"), "+", env!("MNAS_ENGINE_BUILD"));

/// Sizes the rayon pool the kernels run on. Only the first call in a process takes effect
/// (rayon's global pool is built once); returns whether this one did.
pub fn set_threads(threads: usize) -> bool {
    rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build_global().is_ok()
}
