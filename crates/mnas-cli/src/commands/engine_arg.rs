//! The engines of this machine that the benchmark and the lookup table can time, spelled the
//! same in every command: `built-in` (mnas's own) or `ort` (ONNX Runtime in this process).

use std::path::Path;

use anyhow::Result;
use clap::ValueEnum;
use mnas_latency::lut_build::StageTimer;
use mnas_latency::{BuiltIn, OrtEngine};

/// An engine of this machine, named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// mnas's own engine.
    #[value(name = "built-in", alias = "builtin")]
    BuiltIn,
    /// ONNX Runtime in this process.
    Ort,
}

impl EngineArg {
    /// The engine behind the name; ONNX Runtime is loaded here (`ort_lib`, else discovered), so
    /// only when a command asks for it.
    pub fn load(self, ort_lib: Option<&Path>) -> Result<&'static dyn StageTimer> {
        Ok(match self {
            EngineArg::BuiltIn => &BuiltIn,
            EngineArg::Ort => OrtEngine::load(ort_lib)?,
        })
    }
}
