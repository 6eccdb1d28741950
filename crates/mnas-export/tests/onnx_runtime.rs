//! The exported ONNX models pass `onnx.checker` (full check) and give mnas's logits in ONNX
//! Runtime, within 1e-4 relative (max|diff| / max|ref|), for the zoo models and 20 seeded samples
//! of the search space that together use every conv op and skip op.
//!
//! Needs Python with onnx, onnxruntime and numpy: `MNAS_PYTHON`, else the workspace's
//! `.venv/bin/python` (set up by `.ci/run`), else `python3`. Missing Python or modules fail the
//! test with instructions; there is no silent skip.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use mnas_export::{write_onnx, Batch, ExportOptions};
use mnas_model::backend::Cpu;
use mnas_model::burn::tensor::{Distribution, Tensor};
use mnas_space::{lookup, parse_block_list, Activation, Arch, ConvOp, Residual, SearchSpace};
use serde_json::{json, Value};

const TOLERANCE: f64 = 1e-4;
/// Seed of the 20 search-space samples; chosen so that they cover every conv op and skip op
/// (asserted below).
const SAMPLE_SEED: u64 = 0;
const SAMPLES: usize = 20;

struct Case {
    name: String,
    arch: Arch,
    batch: Batch,
    /// Batch actually fed (for a dynamic graph, any size works).
    run_batch: usize,
    eps: f64,
}

fn zoo(name: &str, resolution: u32, batch: Batch, run_batch: usize, eps: f64) -> Case {
    let mut arch = lookup(name).expect("zoo name");
    arch.resolution = resolution;
    Case { name: name.into(), arch, batch, run_batch, eps }
}

fn cases() -> Vec<Case> {
    let mut cases = vec![
        zoo("mnasnet-a1", 96, Batch::Fixed(2), 2, 1e-5),
        zoo("mnasnet-b1", 96, Batch::Dynamic, 3, 1e-3),
        zoo("mnasnet-small", 96, Batch::Fixed(1), 1, 1e-5),
        zoo("mobilenetv2", 96, Batch::Dynamic, 2, 1e-5),
        zoo("semnasnet_075", 80, Batch::Fixed(2), 2, 1e-3),
    ];
    // Not in the zoo or the space: regular conv with SE under ReLU6, pooling skips with and
    // without projection, a width multiplier, odd feature-map sizes.
    let mut custom = parse_block_list(
        "stem16 cn_r1_k3_s1_c16_se0.25_pool cn_r2_k5_s2_c24_pool ds_r2_k3_s2_c24_se0.5_pool \
         ir_r2_k5_s1_e4_c40_pool ir_r1_k3_s2_e1_c40_se0.25_pool head320",
    )
    .expect("valid block strings");
    custom.name = Some("custom".into());
    custom.activation = Activation::Relu6;
    custom.width = 1.25;
    custom.num_classes = 7;
    custom.resolution = 45;
    cases.push(Case {
        name: "custom-relu6-w1.25".into(),
        arch: custom,
        batch: Batch::Dynamic,
        run_batch: 2,
        eps: 1e-2,
    });

    let space = SearchSpace { num_classes: 10, resolution: 72, ..SearchSpace::default() };
    for (i, (_, arch)) in space.sample(SAMPLE_SEED, SAMPLES).into_iter().enumerate() {
        let (batch, run_batch) = if i % 2 == 0 { (Batch::Fixed(2), 2) } else { (Batch::Dynamic, 2) };
        cases.push(Case { name: format!("sample-{i:02}"), arch, batch, run_batch, eps: 1e-5 });
    }
    cases
}

/// What a set of archs exercises: conv ops, skip kinds, SE.
fn coverage<'a>(archs: impl Iterator<Item = &'a Arch>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for arch in archs {
        for l in arch.layers() {
            seen.insert(match l.op {
                ConvOp::Conv => "op:conv".to_string(),
                ConvOp::SepConv => "op:sepconv".to_string(),
                ConvOp::MbConv => format!("op:mbconv{}", l.expand),
            });
            seen.insert(
                match l.residual {
                    Residual::None => "skip:none",
                    Residual::Identity => "skip:identity",
                    Residual::Pool { stride: 1, project: true } => "skip:pool+proj(s1)",
                    Residual::Pool { project: true, .. } => "skip:pool+proj(s2)",
                    Residual::Pool { stride: 1, project: false } => "skip:pool(s1)",
                    Residual::Pool { project: false, .. } => "skip:pool(s2)",
                }
                .to_string(),
            );
            seen.insert(if l.se_channels > 0 { "se:yes" } else { "se:no" }.to_string());
            seen.insert(format!("kernel:{}", l.kernel));
        }
    }
    seen
}

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// `MNAS_PYTHON`, else the workspace's `.venv` (what `.ci/run` sets up) if it exists, else `python3`.
fn python() -> String {
    if let Ok(p) = std::env::var("MNAS_PYTHON") {
        return p;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.is_file() {
        return venv.to_string_lossy().into_owned();
    }
    "python3".into()
}

fn checker_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/reference/ort_check.py")
}

const HINT: &str = "this test needs Python with onnx, onnxruntime and numpy: run `.ci/run` (it sets them up), \
                    or `pip install onnx onnxruntime numpy` and point MNAS_PYTHON at that interpreter";

/// Runs the checker script with one argument and returns its JSON report (the last stdout line).
fn run_checker(arg: &str) -> Value {
    let script = checker_script();
    let out = Command::new(python())
        .arg(&script)
        .arg(arg)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{}` ({e}); {HINT}", python()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => {}
        Some(3) => panic!("{}: {}\n(MNAS_PYTHON names the interpreter to use)", python(), stderr.trim()),
        _ => panic!("{} {} failed ({}):\n{stderr}\n{stdout}\n{HINT}", python(), script.display(), out.status),
    }
    stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON report from {}:\n{stdout}\n{stderr}", script.display()))
}

#[test]
fn onnx_runtime_matches_mnas() {
    // Fail fast, before building any model, when Python or its modules are missing.
    let versions = run_checker("--versions");
    let cases = cases();

    // The samples alone must exercise every conv op and skip op of the space.
    let sampled = coverage(cases.iter().filter(|c| c.name.starts_with("sample-")).map(|c| &c.arch));
    let needed = [
        "op:conv",
        "op:sepconv",
        "op:mbconv3",
        "op:mbconv6",
        "skip:none",
        "skip:identity",
        "skip:pool+proj(s1)",
        "skip:pool+proj(s2)",
        "skip:pool(s2)",
        "se:yes",
        "se:no",
        "kernel:3",
        "kernel:5",
    ];
    let lacking: Vec<&str> = needed.iter().copied().filter(|n| !sampled.contains(*n)).collect();
    assert!(lacking.is_empty(), "samples of seed {SAMPLE_SEED} do not cover {lacking:?} (covered: {sampled:?})");
    let all = coverage(cases.iter().map(|c| &c.arch));
    assert!(cases.iter().any(|c| c.arch.activation == Activation::Relu6) && all.contains("op:conv"));
    println!("coverage of the {SAMPLES} samples (seed {SAMPLE_SEED}): {sampled:?}");

    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mnas-export-ort");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");

    let device = mnas_model::burn::tensor::Device::<Cpu>::default();
    let mut manifest = Vec::new();
    let mut info = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let model = common::random_model(&case.arch, 1000 + i as u64, case.eps);
        let r = case.arch.resolution as usize;
        let x: Tensor<Cpu, 4> = Tensor::random([case.run_batch, 3, r, r], Distribution::Normal(0.0, 1.0), &device);
        let logits = model.forward(x.clone());
        let [n, classes] = logits.dims();
        let logits = common::to_vec(logits);
        let bias = common::to_vec(model.classifier_bias.val());
        // The network, not the classifier bias, must carry the logits, or the check proves little.
        let spread = logits.iter().enumerate().fold(0f32, |m, (j, v)| m.max((v - bias[j % classes]).abs()));
        let peak = logits.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(spread > 0.2 * peak && peak.is_finite(), "{}: logits {peak} are mostly bias ({spread})", case.name);

        let opts = ExportOptions { batch: case.batch, resolution: None };
        let onnx = format!("{}.onnx", case.name);
        let bytes = write_onnx(&model, &opts, &dir.join(&onnx))
            .unwrap_or_else(|e| panic!("{}: {e}: {:?}", case.name, std::error::Error::source(&e)));
        write_f32(&dir.join(format!("{}.input.f32", case.name)), &common::to_vec(x));
        write_f32(&dir.join(format!("{}.logits.f32", case.name)), &logits);
        manifest.push(json!({
            "name": case.name,
            "onnx": onnx,
            "input": format!("{}.input.f32", case.name),
            "input_shape": [case.run_batch, 3, r, r],
            "logits": format!("{}.logits.f32", case.name),
            "logits_shape": [n, classes],
            "dynamic_batch": case.batch == Batch::Dynamic,
        }));
        info.push((case.arch.layers().len(), model.trainable_params(), bytes, peak));
    }
    let manifest_path = dir.join("manifest.json");
    std::fs::write(&manifest_path, json!({ "models": manifest }).to_string()).expect("write manifest");

    let report = run_checker(&manifest_path.to_string_lossy());
    println!("onnx {} / onnxruntime {} / numpy {}", versions["onnx"], versions["onnxruntime"], versions["numpy"]);
    println!(
        "{:<20} {:>6} {:>10} {:>10} {:>6} {:>11} {:>9} {:>9}",
        "model", "layers", "params", "bytes", "batch", "max|diff|", "max|ref|", "rel"
    );

    let results = report["results"].as_array().expect("results array");
    assert_eq!(results.len(), cases.len());
    let mut failures = Vec::new();
    for ((r, case), (layers, params, bytes, _)) in results.iter().zip(&cases).zip(&info) {
        assert_eq!(r["name"], case.name.as_str());
        if r["ok"] != true {
            failures.push(format!("{}: {}", case.name, r["error"]));
            continue;
        }
        let rel = r["max_rel"].as_f64().unwrap_or(f64::INFINITY);
        println!(
            "{:<20} {:>6} {:>10} {:>10} {:>6} {:>11.3e} {:>9.3} {:>9.2e}",
            case.name,
            layers,
            params,
            bytes,
            case.batch.to_string(),
            r["max_abs"].as_f64().unwrap_or(f64::NAN),
            r["max_ref"].as_f64().unwrap_or(f64::NAN),
            rel
        );
        if rel.is_nan() || rel > TOLERANCE {
            failures.push(format!("{}: max relative logit difference {rel:.3e} > {TOLERANCE:e}", case.name));
        }
    }
    assert!(failures.is_empty(), "ONNX Runtime disagrees with mnas:\n{}", failures.join("\n"));
    let _ = std::fs::remove_dir_all(&dir);
}
