//! mnas-space: the shared language of mnas. Architecture types, block-string grammars, the
//! paper's factorized hierarchical search space with its token codec, the model zoo, and
//! analytic parameter / MAC counts. No ML framework here.

pub mod arch;
pub mod cost;
pub mod error;
pub mod grammar;
pub mod naming;
pub mod space;
pub mod timestamp;
pub mod zoo;

pub use arch::{Activation, Arch, Block, ConvOp, Layer, Residual, SkipOp};
pub use cost::{count, Counts, LayerCost};
pub use error::SpaceError;
pub use grammar::{parse_block_list, parse_canonical};
pub use space::SearchSpace;
pub use zoo::{lookup, MODEL_NAMES};
