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

#[test]
fn full_mode_saves_ema_weights_and_optimizer_state() {
    let dir = tmp("full");
    let o = mnas(&[
        "train",
        "--arch",
        TINY,
        "--mode",
        "full",
        "--epochs",
        "1",
        "--val-fraction",
        "0.9",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in ["checkpoint.safetensors", "ema.safetensors", "optimizer.bin", "weights.safetensors"] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    // weights.safetensors is the EMA (what full mode evaluates), not the raw checkpoint.
    assert_eq!(read("weights.safetensors"), read("ema.safetensors"));
    assert_ne!(read("weights.safetensors"), read("checkpoint.safetensors"));
    let state = std::fs::read_to_string(dir.join("state.json")).unwrap();
    assert!(state.contains("\"ema_decay\": 0.9999"), "{state}");

    // Proxy mode keeps no average unless asked; --ema-decay turns one on.
    let proxy = tmp("proxy-ema");
    let o = mnas(&[
        "train",
        "--arch",
        TINY,
        "--epochs",
        "1",
        "--val-fraction",
        "0.9",
        "--ema-decay",
        "0.99",
        "--out",
        proxy.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(proxy.join("ema.safetensors").is_file());
    assert_clean_error(
        &["train", "--arch", TINY, "--ema-decay", "1.5", "--out", tmp("bad-ema").to_str().unwrap()],
        "EMA decay",
    );
}

#[test]
fn bench_train_builds_net_t_and_explains_a_missing_torch() {
    let o = Command::new(env!("CARGO_BIN_EXE_mnas"))
        .args(["bench", "train", "--steps", "1", "--warmup", "0", "--threads", "1"])
        .env("MNAS_PYTHON", "/no/such/python")
        .output()
        .expect("run mnas");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("82480 trainable parameters (PyTorch: 82480)"), "{stdout}");
    assert!(stdout.contains("mnas:    median"), "{stdout}");
    assert!(stdout.contains("pytorch: skipped (cannot run /no/such/python"), "{stdout}");
    assert_clean_error(&["bench", "train", "--steps", "0"], "--steps");
}

/// `--resume` through the files: 2 epochs straight vs the same run stopped after epoch 1 (as if
/// killed) and resumed: the same bytes on disk.
#[test]
fn resume_from_disk_matches_a_straight_run() {
    let (a, b) = (tmp("straight"), tmp("resumed"));
    let common = ["--arch", TINY, "--mode", "full", "--epochs", "2", "--val-fraction", "0.9", "--batch-size", "128"];
    let run = |extra: &[&str]| {
        let o = mnas(&[&["train"][..], extra].concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run(&[&common[..], &["--out", a.to_str().unwrap()]].concat());
    run(&[&common[..], &["--stop-after", "1", "--out", b.to_str().unwrap()]].concat());
    let state = std::fs::read_to_string(b.join("state.json")).unwrap();
    assert!(state.contains("\"epochs_done\": 1"), "{state}");
    let half = std::fs::read(b.join("checkpoint.safetensors")).unwrap();
    assert!(half != std::fs::read(a.join("checkpoint.safetensors")).unwrap());
    run(&["--resume", b.to_str().unwrap()]);
    // Epoch 2 started from the saved optimizer state: equal weights prove it was restored.
    // (optimizer.bin itself is a serialised hash map, its byte order varies between runs.)
    for f in ["checkpoint.safetensors", "ema.safetensors", "weights.safetensors"] {
        assert!(std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(), "{f} differs after resume");
    }
}

/// A run at `--resolution 40` continues at 40x40 after `--resume` (it used to fall back to the
/// data's 32x32), and a contradicting `--resolution` on resume is refused.
#[test]
fn resume_keeps_the_resolution() {
    let dir = tmp("resolution");
    let d = dir.to_str().unwrap();
    let common = ["--arch", TINY, "--epochs", "2", "--val-fraction", "0.9", "--resolution", "40"];
    let o = mnas(&[&["train"][..], &common, &["--stop-after", "1", "--out", d]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("40x40"));
    assert_clean_error(&["train", "--resume", d, "--resolution", "48"], "contradicts the run's 40x40 resolution");
    let o = mnas(&["train", "--resume", d]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("resuming") && stderr.contains("40x40"), "{stderr}");
    assert!(!stderr.contains("32x32"), "{stderr}");
}
