//! Bad input gives a clear error and never a file, whole or partial.

mod common;

use std::path::{Path, PathBuf};

use mnas_export::{export_onnx, write_onnx, Batch, ExportError, ExportOptions};
use mnas_model::backend::Cpu;
use mnas_model::burn::module::RunningState;
use mnas_model::burn::tensor::Tensor;
use mnas_model::{weights, MnasNet};
use mnas_space::{lookup, Arch};

fn small() -> Arch {
    let mut arch = lookup("mnasnet-small").unwrap();
    arch.resolution = 32;
    arch.num_classes = 10;
    arch
}

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("mnas-export-bad-input").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The error of an export that must fail (the Ok bytes are not printed).
fn export_err(model: &MnasNet<Cpu>, opts: &ExportOptions) -> ExportError {
    match export_onnx(model, opts) {
        Ok(bytes) => panic!("export succeeded ({} bytes) where it must fail", bytes.len()),
        Err(e) => e,
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn missing_output_directory_is_an_error_and_writes_nothing() {
    let dir = scratch("missing-dir");
    let model = common::random_model(&small(), 1, 1e-5);
    let out = dir.join("no-such-dir").join("model.onnx");
    let err = write_onnx(&model, &ExportOptions::default(), &out).unwrap_err();
    assert!(matches!(err, ExportError::MissingDir { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("no-such-dir") && msg.contains("does not exist"), "{msg}");
    assert!(!dir.join("no-such-dir").exists());
    assert!(entries(&dir).is_empty());
}

#[test]
fn a_directory_as_output_is_an_error() {
    let dir = scratch("is-dir");
    let model = common::random_model(&small(), 1, 1e-5);
    let err = write_onnx(&model, &ExportOptions::default(), &dir).unwrap_err();
    assert!(matches!(err, ExportError::IsDir { .. }), "{err:?}");
    assert!(entries(&dir).is_empty());
}

#[test]
fn a_failed_export_leaves_no_file_and_keeps_the_old_one() {
    let dir = scratch("failed-export");
    let out = dir.join("model.onnx");
    std::fs::write(&out, b"previous model").unwrap();
    let mut model = common::random_model(&small(), 1, 1e-5);
    // A negative running variance cannot be folded (sqrt of a negative number).
    let c = model.blocks[3].bn_k.running_var.value().dims()[0];
    model.blocks[3].bn_k.running_var = RunningState::new(Tensor::<Cpu, 1>::full([c], -1.0, &Default::default()));
    let err = write_onnx(&model, &ExportOptions::default(), &out).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("blocks.2.1.conv_dw.weight") && msg.contains("running_var"), "{msg}");
    assert_eq!(entries(&dir), ["model.onnx"], "no temp file may stay behind");
    assert_eq!(std::fs::read(&out).unwrap(), b"previous model");
}

#[test]
fn a_successful_export_replaces_the_file_without_leftovers() {
    let dir = scratch("success");
    let out = dir.join("model.onnx");
    std::fs::write(&out, b"previous model").unwrap();
    let model = common::random_model(&small(), 1, 1e-5);
    let bytes = write_onnx(&model, &ExportOptions::default(), &out).unwrap();
    assert_eq!(entries(&dir), ["model.onnx"]);
    let written = std::fs::read(&out).unwrap();
    assert_eq!(written.len() as u64, bytes);
    // ir_version (field 1) = 8 comes first; the same model exports to the same bytes.
    assert_eq!(&written[..2], &[0x08, 0x08]);
    assert_eq!(export_onnx(&model, &ExportOptions::default()).unwrap(), written);
}

#[test]
fn weights_of_another_arch_are_refused() {
    let dir = scratch("other-weights");
    let device = Default::default();
    let small_model = common::random_model(&small(), 1, 1e-5);
    let file = dir.join("small.safetensors");
    weights::save(&small_model, &file).unwrap();
    // Same blocks, other width: every name matches, the shapes do not.
    let mut wider = small();
    wider.width = 1.4;
    for arch in [lookup("mnasnet-a1").unwrap(), wider] {
        let mut model = MnasNet::<Cpu>::new(&arch, &device).unwrap();
        let err = weights::load(&mut model, &file, &device).unwrap_err().to_string();
        assert!(err.contains("small.safetensors"), "{err}");
    }
    // A model that differs only in its head is refused too.
    let mut other_classes = small();
    other_classes.num_classes = 11;
    let mut model = MnasNet::<Cpu>::new(&other_classes, &device).unwrap();
    let err = weights::load(&mut model, &file, &device).unwrap_err().to_string();
    assert!(err.contains("classifier"), "{err}");
}

#[test]
fn bad_options_are_refused() {
    for bad in ["0", "-1", "two", "", "1.5"] {
        let err = bad.parse::<Batch>().unwrap_err().to_string();
        assert!(err.contains("positive integer or `dynamic`"), "{bad}: {err}");
    }
    assert_eq!("dynamic".parse::<Batch>().unwrap(), Batch::Dynamic);
    assert_eq!(" 8 ".parse::<Batch>().unwrap(), Batch::Fixed(8));

    let model = common::random_model(&small(), 1, 1e-5);
    for opts in [
        ExportOptions { batch: Batch::Fixed(0), resolution: None },
        ExportOptions { batch: Batch::Fixed(1), resolution: Some(0) },
        ExportOptions { batch: Batch::Fixed(1), resolution: Some(5000) },
    ] {
        let err = export_err(&model, &opts);
        assert!(matches!(err, ExportError::Option(_)), "{opts:?}: {err:?}");
    }
}

#[test]
fn a_model_that_does_not_match_its_arch_cannot_be_exported() {
    let mut model = common::random_model(&small(), 1, 1e-5);
    model.arch.blocks[2].repeats += 1;
    let err = export_err(&model, &ExportOptions::default()).to_string();
    assert!(err.contains("do not match its architecture"), "{err}");

    let mut model = common::random_model(&small(), 1, 1e-5);
    model.arch.num_classes = 3;
    let err = export_err(&model, &ExportOptions::default()).to_string();
    assert!(err.contains("classifier"), "{err}");

    let mut model = common::random_model(&small(), 1, 1e-5);
    model.arch.width = -1.0;
    let err = export_err(&model, &ExportOptions::default()).to_string();
    assert!(err.contains("width"), "{err}");
}
