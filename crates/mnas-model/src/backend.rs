//! The backends mnas runs on. Everything outside this crate names these aliases, never burn.

/// CPU inference: burn's flex backend (pure Rust, SIMD, all cores).
pub type Cpu = burn::backend::Flex;
/// CPU training: flex with reverse-mode autodiff.
pub type CpuTrain = burn::backend::Autodiff<Cpu>;

#[cfg(feature = "cuda")]
/// NVIDIA GPU inference (driver and NVRTC loaded at run time).
pub type Cuda = burn::backend::Cuda;
#[cfg(feature = "cuda")]
pub type CudaTrain = burn::backend::Autodiff<Cuda>;
