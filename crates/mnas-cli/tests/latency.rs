//! `mnas latency` as a user runs it: a quick measurement that the store serves the second time,
//! JSON output, and one clear line (exit 2) for bad input.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs mnas with the cache directory pointed into the test's scratch directory, so that no
/// test ever touches the user's store.
fn mnas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnas"))
        .args(args)
        .env("XDG_CACHE_HOME", scratch("xdg"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run mnas")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mnas-cli-latency-{}", std::process::id())).join(name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn assert_clean_error(args: &[&str], needle: &str) {
    common::assert_error(&mnas(args), args, needle, true);
}

// A CV limit no measurement reaches: these tests are about the store and the output, and a 3-run
// measurement on a busy machine may exceed the default 0.10, which (rightly) makes the next request
// measure again instead of reusing it.
const QUICK: &[&str] =
    &["latency", "--arch", "mnasnet-a1", "--runs", "3", "--warmup", "1", "--resolution", "64", "--max-cv", "1000"];

/// A quick measurement; unless `extra` sets it, a stored result is served whatever the pace (these
/// tests run beside each other, and a pace timed while another test runs reads slow).
fn quick(extra: &[&str]) -> Output {
    let mut args: Vec<&str> = QUICK.iter().chain(extra).copied().collect();
    if !extra.contains(&"--max-slowdown") {
        args.extend(["--max-slowdown", "inf"]);
    }
    mnas(&args)
}

#[test]
fn second_request_is_served_from_the_store() {
    let store = scratch("reuse").join("latency.sqlite");
    let store = store.to_str().expect("utf-8 temp path");
    let first = quick(&["--store", store]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let out = stdout(&first);
    assert!(out.contains("median") && out.contains("p10") && out.contains("p90") && out.contains("CV"), "{out}");
    assert!(
        out.contains(&format!("mnas-engine {}", mnas_latency::ENGINE_VERSION)) && out.contains("fingerprint:"),
        "{out}"
    );
    assert!(!out.contains("(cached)") && out.contains("(stored)"), "{out}");

    let second = quick(&["--store", store]);
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    let again = stdout(&second);
    assert!(again.contains("(cached)"), "{again}");
    // Same numbers: nothing was measured.
    assert_eq!(out.lines().next().map(|l| l.to_string() + " (cached)"), again.lines().next().map(String::from));

    let json = quick(&["--store", store, "--json"]);
    assert!(json.status.success());
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v["cached"], true);
    let m = &v["measurement"];
    assert_eq!((m["resolution"].as_u64(), m["threads"].as_u64(), m["runs"].as_u64()), (Some(64), Some(1), Some(3)));
    assert!(m["arch"].as_str().is_some_and(|a| a.ends_with("|r64")), "{m}");
    assert_eq!(m["fingerprint"]["engine"], "mnas-engine");
    assert_eq!(m["fingerprint"]["cores"].as_array().map(Vec::len), Some(1));
    assert!(m["median_ms"].as_f64().is_some_and(|t| t > 0.0));
}

#[test]
fn no_store_and_per_layer_measure() {
    let o = quick(&["--no-store", "--per-layer"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.contains("store: not used"), "{out}");
    assert!(out.contains("blocks.6.0") && out.contains("classifier") && out.contains("GMAC/s"), "{out}");
    // The default store (under XDG_CACHE_HOME) was not created.
    assert!(!scratch("xdg").join("mnas").exists());
}

/// A result the store holds from a slow spell (its pace 3x the pace now) is measured again, not
/// served; `--max-slowdown inf` serves it whatever the pace.
#[test]
fn a_result_from_a_slow_spell_is_measured_again() {
    let path = scratch("slow").join("latency.sqlite");
    let store = path.to_str().expect("utf-8 temp path");
    let first = quick(&["--store", store, "--json"]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let v: serde_json::Value = serde_json::from_slice(&first.stdout).expect("json");
    let m: mnas_latency::Measurement = serde_json::from_value(v["measurement"].clone()).expect("a measurement");
    let pace = m.pace_ms.expect("a local measurement records its pace");
    // As if it had been measured while the machine ran 3x slower: a slow time, a slow pace.
    let slow = mnas_latency::Measurement {
        stats: mnas_latency::Stats { median_ms: 999.0, ..m.stats },
        pace_ms: Some(3.0 * pace),
        ..m.clone()
    };
    mnas_latency::Store::open(&path).unwrap().put(&slow).unwrap();

    let lenient = quick(&["--store", store, "--max-slowdown", "inf"]);
    let out = stdout(&lenient);
    assert!(out.contains("median 999.00 ms") && out.contains("(cached)"), "{out}");

    // And the store has seen this machine run 3x faster than it runs now (another arch's pace):
    // the new measurement says that it reads high.
    let fast = mnas_latency::Measurement { arch: "seen-fast".into(), pace_ms: Some(pace / 3.0), ..m.clone() };
    mnas_latency::Store::open(&path).unwrap().put(&fast).unwrap();

    let again = quick(&["--store", store, "--max-slowdown", "0.15"]);
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("slower than the fastest measurement in the latency store"), "{err}");
    let out = stdout(&again);
    assert!(!out.contains("(cached)") && out.contains("(stored)") && !out.contains("999.00"), "{out}");
    assert!(out.contains("; pace "), "the runs line gives the pace: {out}");
    let kept = mnas_latency::Store::open(&path).unwrap().get(&mnas_latency::Key::of(&m)).unwrap().expect("stored");
    assert!(kept.stats.median_ms < 999.0 && kept.pace_ms.is_some_and(|p| p < 3.0 * pace), "{kept:?}");
}

#[test]
fn bad_input_is_one_error_line_and_exit_2() {
    let dir = scratch("bad");
    let store = dir.join("ok.sqlite");
    let store = store.to_str().expect("utf-8 temp path");
    assert_clean_error(&["latency", "--arch", "mnasnet-a1", "--runs", "0", "--store", store], "runs");
    assert_clean_error(&["latency", "--arch", "mnasnet-a1", "--threads", "0", "--store", store], "threads");
    assert_clean_error(&["latency", "--arch", "mnasnet-a1", "--max-slowdown", "0", "--store", store], "max_slowdown");
    assert_clean_error(&["latency", "--arch", "mnasnet-a1", "--threads", "100000", "--store", store], "threads");
    assert_clean_error(&["latency", "--arch", "no-such-net", "--store", store], "unknown model");
    assert_clean_error(&["latency", "--arch", "ir_r1_k4_s1_e6_c16", "--store", store], "kernel");
    assert_clean_error(&["latency", "--arch", "mnasnet-a1", "--resolution", "0", "--store", store], "resolution");
    assert!(!dir.join("ok.sqlite").exists(), "bad options must fail before the store is created");

    let as_dir = dir.to_str().expect("utf-8 temp path");
    assert_clean_error(&[QUICK, &["--store", as_dir]].concat(), "is a directory");
    let junk = dir.join("junk.sqlite");
    std::fs::write(&junk, vec![0x5a; 8192]).expect("write junk");
    assert_clean_error(&[QUICK, &["--store", junk.to_str().expect("utf-8")]].concat(), "not a SQLite database");
    assert_eq!(std::fs::read(&junk).expect("junk"), vec![0x5a; 8192], "the junk file is left alone");

    // The benchmark refuses an unwritable --csv before it measures anything.
    let csv = dir.join("no-such-dir").join("rank.csv");
    assert_clean_error(&["bench", "latency", "--csv", csv.to_str().expect("utf-8")], "cannot write");
}

/// ONNX Runtime in process, from the venv `.ci/run` installs (`onnxruntime` wheel): the same
/// statistics as the built-in engine, a fingerprint naming ORT and its version, and one error
/// line for a library that is not ONNX Runtime.
#[test]
fn onnx_runtime_in_process() {
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv");
    assert!(
        venv.join("bin/python").exists(),
        "no .venv: create it as the README says (python3 -m venv .venv && .venv/bin/pip install onnx onnxruntime numpy)"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_mnas"))
        .args(["latency", "--arch", "mnasnet-small", "--resolution", "64", "--runs", "5", "--warmup", "2"])
        .args(["--engine", "ort", "--no-store", "--json"])
        .env_remove("MNAS_ORT_LIB")
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .output()
        .expect("run mnas");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let m = &json["measurement"];
    assert_eq!(m["fingerprint"]["engine"], "onnxruntime", "{m}");
    assert!(m["fingerprint"]["engine_version"].as_str().is_some_and(|v| v.starts_with("1.")), "{m}");
    assert!(m["median_ms"].as_f64().is_some_and(|v| v > 0.0) && m["runs"] == 5, "{m}");
    for (lib, needle) in
        [("/bin/sh", "not a usable ONNX Runtime library"), ("/no/such/libonnxruntime.so", "no such file")]
    {
        let args = ["latency", "--arch", "mnasnet-small", "--engine", "ort", "--ort-lib", lib, "--no-store"];
        let o = Command::new(env!("CARGO_BIN_EXE_mnas")).args(args).output().expect("run mnas");
        common::assert_error(&o, &args, needle, true);
    }
}

/// The benchmark end to end on small settings, with ONNX Runtime set against a second session of
/// itself (the ceiling that noise puts on the tau): its lines, its CSV, and each CSV arch read back
/// as `--arch` in the one-line form the CSV prints; the built-in engine against itself without ORT.
#[test]
fn bench_latency_sets_ort_against_itself_and_its_archs_read_back() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let csv = scratch("bench").join("rank.csv");
    let o = Command::new(env!("CARGO_BIN_EXE_mnas"))
        .args(["bench", "latency", "--engine", "ort", "--arch", "mnasnet-small", "--resolution", "64"])
        .args(["--runs", "3", "--rounds", "1", "--archs", "4", "--archs-runs", "2", "--passes", "2", "--csv"])
        .arg(&csv)
        .env_remove("MNAS_ORT_LIB")
        .current_dir(&root)
        .output()
        .expect("run mnas");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.contains("ORT again median") && out.contains("ORT again / ORT = "), "{out}");
    assert!(out.contains("Kendall tau ORT again vs ORT") && out.contains("median of 2 passes"), "{out}");
    assert!(!out.contains("built-in engine by op"), "the op breakdown is the built-in engine's: {out}");
    let text = std::fs::read_to_string(&csv).expect("the CSV");
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("arch,ort_again_ms,ort_ms,macs"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 4, "{text}");
    for row in rows {
        let arch = row.split('"').nth(1).expect("a quoted arch");
        let fields: Vec<f64> = row.rsplit(',').take(3).map(|v| v.parse().expect("a number")).collect();
        assert!(fields.iter().all(|v| *v > 0.0), "{row}");
        let shown = mnas(&["arch", "show", arch, "--json"]);
        assert!(shown.status.success(), "{arch}: {}", String::from_utf8_lossy(&shown.stderr));
        let json: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("JSON");
        let back: mnas_space::Arch = serde_json::from_value(json["arch"].clone()).expect("an arch");
        assert_eq!(back.canonical(), arch);
    }
    assert_clean_error(&["arch", "show", "stem32|ds_r1_k3_s1_c16|head1280|gelu|w1|c10|r224"], "unknown activation");

    // The built-in engine against itself needs no ONNX Runtime: a missing library is not loaded.
    let o = Command::new(env!("CARGO_BIN_EXE_mnas"))
        .args(["bench", "latency", "--engine", "built-in", "--against", "built-in", "--arch", "mnasnet-small"])
        .args(["--resolution", "64", "--runs", "3", "--rounds", "1", "--archs", "3", "--archs-runs", "2"])
        .env("MNAS_ORT_LIB", "/no/such/libonnxruntime.so")
        .output()
        .expect("run mnas");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.contains("built-in again / built-in = ") && out.contains("built-in engine by op"), "{out}");
    assert!(out.contains("Kendall tau built-in again vs built-in"), "{out}");
    let args = ["bench", "latency", "--against", "ort", "--ort-lib", "/no/such/libonnxruntime.so", "--archs", "0"];
    let o = Command::new(env!("CARGO_BIN_EXE_mnas")).args(args).output().expect("run mnas");
    common::assert_error(&o, &args, "no such file", true);
}
