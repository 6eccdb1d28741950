//! ONNX Runtime in process: the model exported by mnas's own ONNX writer (in memory), run by a
//! `libonnxruntime.so` loaded at run time, on the same pinned thread and with the same statistics
//! and store as the built-in engine. The library comes from `--ort-lib`, `$MNAS_ORT_LIB`, or the
//! `onnxruntime` wheel of a Python venv (`$VIRTUAL_ENV`, `./.venv`, or the venv beside the mnas
//! checkout the binary was built in).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mnas_export::{export_onnx, part_onnx, Batch, ExportOptions, Part};
use mnas_model::backend::Cpu;
use mnas_model::burn::tensor::backend::Backend;
use mnas_model::net::SearchLayer;
use mnas_model::MnasNet;
use mnas_space::Arch;
use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::Tensor;

use crate::error::{LatencyError, Result};
use crate::lut::LutResult;
use crate::lut_build::{LutOptions, StageKind, StageTimer};
use crate::measure::{Input, LocalEngine, MeasureOptions, Runnable};

/// The engine name in fingerprints.
pub const ORT_ENGINE: &str = "onnxruntime";

/// How to get a library when none is found.
const HOW_TO_GET: &str = "install the onnxruntime wheel in a venv (`python3 -m venv .venv && .venv/bin/pip install \
                          onnxruntime`) and pass --ort-lib .venv/lib/python3.*/site-packages/onnxruntime/capi/\
                          libonnxruntime.so.1.* (or set MNAS_ORT_LIB)";

/// ONNX Runtime, loaded once per process.
pub struct OrtEngine {
    pub library: PathBuf,
    pub version: String,
    environment: Environment,
}

impl std::fmt::Debug for OrtEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtEngine").field("library", &self.library).field("version", &self.version).finish()
    }
}

static LOADED: OnceLock<std::result::Result<OrtEngine, String>> = OnceLock::new();

/// `libonnxruntime.so*` in an `onnxruntime/capi` folder under a venv's site-packages.
fn in_venv(venv: &Path) -> Option<PathBuf> {
    let lib = venv.join("lib");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(&lib).ok()?.flatten().map(|e| e.path()).collect();
    pythons.sort();
    for py in pythons.iter().rev() {
        let capi = py.join("site-packages/onnxruntime/capi");
        let Ok(entries) = std::fs::read_dir(&capi) else { continue };
        let mut libs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
            .collect();
        libs.sort();
        if let Some(best) = libs.pop() {
            return Some(best);
        }
    }
    None
}

/// Where a library would be found without `--ort-lib`.
pub fn discover() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MNAS_ORT_LIB").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let mut venvs = Vec::new();
    if let Some(v) = std::env::var_os("VIRTUAL_ENV") {
        venvs.push(PathBuf::from(v));
    }
    venvs.push(PathBuf::from(".venv"));
    venvs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
    venvs.iter().find_map(|v| in_venv(v))
}

impl OrtEngine {
    /// Loads ONNX Runtime from `library` (else [`discover`]). The first successful load holds for
    /// the process; a later call naming another file is refused.
    pub fn load(library: Option<&Path>) -> Result<&'static OrtEngine> {
        let path = match library.map(Path::to_path_buf).or_else(discover) {
            Some(p) => p,
            None => return Err(LatencyError::Ort(format!("no ONNX Runtime library found: {HOW_TO_GET}"))),
        };
        let loaded = LOADED.get_or_init(|| load_from(&path));
        match loaded {
            Ok(engine) if library.is_none_or(|l| same_file(l, &engine.library)) => Ok(engine),
            Ok(engine) => Err(LatencyError::Ort(format!(
                "ONNX Runtime is already loaded from {} in this process; {} cannot be loaded beside it",
                engine.library.display(),
                path.display()
            ))),
            Err(reason) => Err(LatencyError::Ort(reason.clone())),
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

fn load_from(path: &Path) -> std::result::Result<OrtEngine, String> {
    if !path.is_file() {
        return Err(format!("{}: no such file; {HOW_TO_GET}", path.display()));
    }
    let builder = ort::init_from(path).map_err(|e| {
        let text = e.to_string();
        if text.contains("expected version") {
            format!(
                "{}: this ONNX Runtime is too old ({text}); mnas needs 1.{} or newer: {HOW_TO_GET}",
                path.display(),
                ort::MINOR_VERSION
            )
        } else {
            format!("{}: not a usable ONNX Runtime library ({text})", path.display())
        }
    })?;
    let environment = builder.with_name("mnas").build().map_err(|e| format!("{}: {e}", path.display()))?;
    let version = ort::info()
        .split(',')
        .find_map(|part| part.trim().strip_prefix("git-branch=rel-"))
        .map(str::to_string)
        .unwrap_or_else(|| version_from_name(path));
    Ok(OrtEngine { library: path.to_path_buf(), version, environment })
}

/// `libonnxruntime.so.1.32.0` -> `1.32.0`.
fn version_from_name(path: &Path) -> String {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.strip_prefix("libonnxruntime.so.").unwrap_or("unknown").to_string()
}

fn ort_error(e: impl std::fmt::Display) -> LatencyError {
    LatencyError::Ort(e.to_string())
}

impl OrtEngine {
    /// A session of the serialised model `bytes` with `threads` intra-op threads on `cores`.
    fn session(&self, bytes: &[u8], threads: usize, cores: &[usize]) -> Result<Session> {
        // One intra-op thread runs on the calling (pinned) thread; more get ORT's own pool, which
        // it starts with the session: started from here they would inherit this thread's single
        // core and crowd onto it (measured: 2 threads 14.2 ms vs 1 thread 5.7 ms on A1).
        let session = crate::pin::with_threads_spawned_on(cores, || {
            Session::builder(&self.environment)
                .map_err(ort_error)?
                .with_optimization_level(GraphOptimizationLevel::Level3)
                .map_err(ort_error)?
                .with_intra_threads(threads)
                .map_err(ort_error)?
                .with_inter_threads(1)
                .map_err(ort_error)?
                .commit_from_memory(bytes)
                .map_err(ort_error)
        })??;
        Ok(session)
    }
}

impl LocalEngine for OrtEngine {
    fn identity(&self) -> (String, String) {
        (ORT_ENGINE.to_string(), self.version.clone())
    }

    fn build(&self, arch: &Arch, opts: &MeasureOptions, cores: &[usize]) -> Result<Box<dyn Runnable>> {
        let device = Default::default();
        let model = MnasNet::<Cpu>::seeded(arch, &device, opts.seed)?;
        let export = ExportOptions { batch: Batch::Fixed(opts.batch as u32), ..ExportOptions::default() };
        let bytes = export_onnx(&model, &export).map_err(|e| LatencyError::Engine(e.to_string()))?;
        drop(model);
        let session = self.session(&bytes, opts.threads, cores)?;
        let input = Input::random(arch, opts);
        let (n, r) = (input.batch, input.size);
        // The export takes NCHW.
        let mut nchw = vec![0f32; input.pixels.len()];
        for b in 0..n {
            for c in 0..3 {
                for p in 0..r * r {
                    nchw[(b * 3 + c) * r * r + p] = input.pixels[(b * r * r + p) * 3 + c];
                }
            }
        }
        let tensor = Tensor::from_array(([n, 3, r, r], nchw)).map_err(ort_error)?;
        Ok(Box::new(OrtModel { session, input: tensor }))
    }
}

struct OrtModel {
    session: Session,
    input: Tensor<f32>,
}

impl Runnable for OrtModel {
    fn run(&mut self) -> Result<()> {
        let outputs = self.session.run(ort::inputs!["input" => &self.input]).map_err(ort_error)?;
        std::hint::black_box(outputs);
        Ok(())
    }
}

impl StageTimer for OrtEngine {
    /// Times the stage as a graph of its own (mnas's ONNX export of just that part), so that ORT
    /// optimises and schedules it as it would inside the whole model.
    fn time_stage(&self, kind: &StageKind, opts: &LutOptions, cores: &[usize]) -> LutResult<Vec<f64>> {
        let device = Default::default();
        Cpu::seed(&device, opts.seed);
        let export = |part: Part<'_, Cpu>| part_onnx(&part, 1).map_err(|e| LatencyError::Engine(e.to_string()));
        let model = |arch: &Arch| MnasNet::<Cpu>::new(arch, &device).map_err(LatencyError::from);
        let (bytes, channels, size) = match kind {
            StageKind::Layer(layer, act) => {
                let l = SearchLayer::<Cpu>::new(layer, *act, &device);
                (export(Part::Layer(&l))?, layer.in_channels, layer.in_size)
            }
            StageKind::Stem(arch) => (export(Part::Stem(&model(arch)?))?, 3, arch.resolution),
            StageKind::Head(arch) => {
                let (c, s) = arch.head_input();
                (export(Part::Head(&model(arch)?))?, c, s)
            }
        };
        let mut session = self.session(&bytes, opts.threads, cores)?;
        let (c, s) = (channels as usize, size as usize);
        let values = crate::lut_build::stage_input(c * s * s);
        let input = Tensor::from_array(([1, c, s, s], values)).map_err(ort_error)?;
        let mut once = || -> Result<f64> {
            // Weights cold, input warm, as inside a network (see `evict_caches`).
            crate::lut_build::evict_caches();
            let (_, data) = input.try_extract_tensor::<f32>().map_err(ort_error)?;
            std::hint::black_box(data.iter().step_by(16).sum::<f32>());
            let start = std::time::Instant::now();
            let outputs = session.run(ort::inputs!["input" => &input]).map_err(ort_error)?;
            let elapsed = start.elapsed();
            std::hint::black_box(outputs);
            Ok(elapsed.as_secs_f64() * 1e3)
        };
        for _ in 0..opts.warmup {
            once()?;
        }
        Ok((0..opts.runs).map(|_| once()).collect::<Result<Vec<f64>>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lookup table times each part of a network as a graph of its own: chained, the parts
    /// must compute exactly what the whole exported model does, for every kind of layer.
    #[test]
    fn part_graphs_chained_compute_the_whole_model() {
        let engine = OrtEngine::load(None).expect(
            "ONNX Runtime: create the .venv as the README says (python3 -m venv .venv && .venv/bin/pip install onnx \
             onnxruntime numpy)",
        );
        // A1 (SE, identity skips), a model with ReLU6, and samples of the space with pooling skips
        // (with and without projection), separable and plain convs.
        let mut archs = vec![mnas_space::lookup("mnasnet-a1").unwrap(), mnas_space::lookup("mobilenetv2_100").unwrap()];
        let space = mnas_space::SearchSpace { resolution: 64, num_classes: 10, ..Default::default() };
        archs.extend(space.sample(3, 4).into_iter().map(|(_, a)| a));
        let mut kinds = std::collections::HashSet::new();
        for mut arch in archs {
            arch.resolution = 64;
            arch.num_classes = 10;
            let device = Default::default();
            let model = MnasNet::<Cpu>::seeded(&arch, &device, 7).unwrap();
            let run = |bytes: Vec<u8>, x: (Vec<usize>, Vec<f32>)| -> (Vec<usize>, Vec<f32>) {
                let mut session = engine.session(&bytes, 1, &crate::pin::allowed_cores().unwrap()).unwrap();
                let input = Tensor::from_array((x.0, x.1)).unwrap();
                let outputs = session.run(ort::inputs!["input" => &input]).unwrap();
                let (shape, data) = outputs[0].try_extract_tensor::<f32>().unwrap();
                (shape.iter().map(|&d| d as usize).collect(), data.to_vec())
            };
            let r = arch.resolution as usize;
            let x = crate::lut_build::stage_input(3 * r * r);
            let whole = run(export_onnx(&model, &ExportOptions::default()).unwrap(), (vec![1, 3, r, r], x.clone()));
            let mut y = run(part_onnx(&Part::Stem(&model), 1).unwrap(), (vec![1, 3, r, r], x));
            for l in &model.blocks {
                kinds.insert(format!("{:?} {:?} se{}", l.spec.op, l.spec.residual, l.spec.se_channels > 0));
                y = run(part_onnx(&Part::Layer(l), 1).unwrap(), y);
                let s = l.spec.out_size as usize;
                assert_eq!(y.0, vec![1, l.spec.out_channels as usize, s, s], "{}", arch.canonical());
            }
            let chained = run(part_onnx(&Part::Head(&model), 1).unwrap(), y);
            assert_eq!(chained.0, whole.0);
            let worst = chained.1.iter().zip(&whole.1).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            let scale = whole.1.iter().map(|v| v.abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-4 * scale.max(1.0), "{}: parts differ from the whole by {worst}", arch.canonical());
        }
        assert!(kinds.len() >= 6, "too few kinds of layer covered: {kinds:?}");
    }

    #[test]
    fn versions_come_from_the_file_name_when_the_build_info_lacks_them() {
        assert_eq!(version_from_name(Path::new("/x/libonnxruntime.so.1.32.0")), "1.32.0");
        assert_eq!(version_from_name(Path::new("/x/libfoo.so")), "unknown");
    }
}
