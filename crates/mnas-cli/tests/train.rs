//! `mnas train` / `mnas eval` end to end on the embedded data, and their errors.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

fn mnas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnas")).args(args).output().expect("run mnas")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnas-train-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn assert_clean_error(args: &[&str], needle: &str) {
    common::assert_error(&mnas(args), args, needle, false);
}

const TINY: &str = "stem16 ds_r1_k3_s1_c16 ir_r1_k3_s2_e3_c24 head64";

#[test]
fn train_writes_a_run_directory_and_eval_reads_its_weights() {
    let dir = tmp("run");
    let o = mnas(&["train", "--arch", TINY, "--epochs", "1", "--val-fraction", "0.9", "--out", dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("held-out accuracy: top-1"));
    assert!(stderr.contains("epoch   1:"), "{stderr}");
    for f in ["state.json", "metrics.csv", "weights.safetensors", "checkpoint.safetensors"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");

    let weights = dir.join("weights.safetensors");
    let o = mnas(&["eval", "--arch", TINY, "--weights", weights.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("test (1000 images): top-1"));

    // The run is complete: resuming it is refused; a second run into the same directory too.
    assert_clean_error(&["train", "--resume", dir.to_str().unwrap()], "already finished");
    assert_clean_error(&["train", "--arch", TINY, "--out", dir.to_str().unwrap()], "already holds a run");
    // Weights of another architecture.
    assert_clean_error(&["eval", "--arch", "mnasnet-small", "--weights", weights.to_str().unwrap()], "cannot load");
}

#[test]
fn train_bad_input() {
    let out = tmp("bad");
    let o = out.to_str().unwrap();
    assert_clean_error(&["train", "--arch", TINY, "--data", "/no/such/data", "--out", o], "/no/such/data");
    assert_clean_error(&["train", "--arch", TINY, "--epochs", "0", "--out", o], "epochs");
    assert_clean_error(&["train", "--arch", TINY, "--resolution", "0", "--out", o], "resolution");
    assert_clean_error(&["train", "--arch", TINY, "--val-fraction", "1.5", "--out", o], "validation fraction");
    assert_clean_error(&["train", "--resume", "/no/such/run"], "not a training run directory");
    assert_clean_error(&["train", "--arch", TINY, "--device", "cuda", "--out", o], "cuda");
}
