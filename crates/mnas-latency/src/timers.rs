//! The engines a lookup table can name, loaded by that name: the table's builder and the ONNX
//! Runtime timer both stand below this, so neither has to know the other.

use std::path::Path;

use crate::fingerprint::Fingerprint;
use crate::lut::{LutError, LutResult};
use crate::lut_build::StageTimer;
use crate::measure::BuiltIn;
use crate::ort_engine::{OrtEngine, ORT_ENGINE};

/// The engine a table was measured with (its fingerprint names it), loaded here so that the
/// table can be checked against this machine and extended or judged on the same engine.
/// `ort_lib` is where ONNX Runtime is when it is not discovered.
pub fn engine_of(fingerprint: &Fingerprint, ort_lib: Option<&Path>) -> LutResult<&'static dyn StageTimer> {
    static BUILT_IN: BuiltIn = BuiltIn;
    match fingerprint.engine.as_str() {
        crate::fingerprint::ENGINE => Ok(&BUILT_IN),
        ORT_ENGINE => Ok(OrtEngine::load(ort_lib)?),
        other => Err(LutError::Engine(other.to_string())),
    }
}
