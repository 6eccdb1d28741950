//! `mnas latency build-lut | predict | lut-report` as a user runs them, on a small table built
//! through the library (a three-block cut of the space at 32x32, so that the test stays quick),
//! and one clear `error:` line (exit 2) for every bad input.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use mnas_latency::lut_build::{self, LutOptions};
use mnas_latency::{BuiltIn, Lut};
use mnas_space::{Arch, SearchSpace};

fn mnas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnas"))
        .args(args)
        .env("XDG_CACHE_HOME", scratch("xdg"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run mnas")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mnas-cli-lut-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(args: &[&str]) -> String {
    let o = mnas(args);
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    stdout(&o)
}

fn assert_clean_error(args: &[&str], needle: &str) {
    common::assert_error(&mnas(args), args, needle, true);
}

fn small_space() -> SearchSpace {
    SearchSpace {
        skeleton: vec![(16, 1, 1), (24, 2, 2), (40, 2, 2)],
        stem_channels: 16,
        head_channels: 128,
        num_classes: 10,
        resolution: 32,
    }
}

/// The small table, built once, and its path.
fn lut() -> &'static (Lut, PathBuf) {
    static LUT: OnceLock<(Lut, PathBuf)> = OnceLock::new();
    LUT.get_or_init(|| {
        let opts =
            LutOptions { resolution: 32, runs: 2, warmup: 1, fit_archs: 3, fit_runs: 3, ..LutOptions::default() };
        let path = scratch("small.json");
        let lut = lut_build::build(&small_space(), &opts, &BuiltIn, None, Some(&path), &|_| {}).expect("LUT builds");
        (lut, path)
    })
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Block strings of an arch (with its stem and head), as `mnas space sample` prints them.
fn blocks(arch: &Arch) -> String {
    let b: Vec<String> = arch.blocks.iter().map(|b| b.to_block_string()).collect();
    format!("stem{} {} head{}", arch.stem_channels, b.join(" "), arch.head_channels)
}

#[test]
fn dry_run_counts_the_configurations_of_the_space() {
    let out = ok(&["latency", "build-lut", "--dry-run", "--resolution", "224"]);
    assert!(
        out.contains("2,340 configurations at 224x224: 1 stem, 2,336 layers, 3 heads of the search space"),
        "{out}"
    );
    assert!(out.contains("and 14 stages of mobilenetv2_100"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&ok(&["latency", "build-lut", "--dry-run", "--json"])).expect("JSON");
    assert_eq!((json["space"].as_u64(), json["configs"].as_u64()), (Some(2340), Some(2354)), "{json}");
    // The engine is spelled as in `mnas bench latency` (built-in), the older `builtin` still read.
    for engine in ["built-in", "builtin"] {
        let again = ok(&["latency", "build-lut", "--dry-run", "--resolution", "224", "--engine", engine]);
        assert_eq!(again, out, "--engine {engine}");
    }
    let args = ["latency", "build-lut", "--dry-run", "--engine", "onnx"];
    common::assert_error(&mnas(&args), &args, "invalid value 'onnx'", false);
}

#[test]
fn predict_answers_from_the_table() {
    let (lut, path) = lut();
    let (tokens, arch) = small_space().sample(77, 1).remove(0);
    let expected = lut.predict(&arch).expect("in the space");
    let spec = blocks(&arch);
    let args =
        ["latency", "predict", "--arch", &spec, "--resolution", "32", "--classes", "10", "--lut", path_str(path)];
    let out = ok(&args);
    assert!(out.contains("predicted") && out.contains("µs") && out.contains(&format!("{expected:.2} ms")), "{out}");

    let with_json: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    let json: serde_json::Value = serde_json::from_str(&ok(&with_json)).expect("JSON");
    let predicted = json["predicted_ms"].as_f64().expect("number");
    assert!((predicted - expected).abs() < 1e-9, "{json}");
    assert!(json["prediction_us"].as_f64().is_some_and(|us| us > 0.0), "{json}");

    // The same arch by its tokens, decoded in the LUT's own space.
    let tokens: Vec<String> = tokens.iter().map(|t| t.to_string()).collect();
    let by_tokens = ok(&["latency", "predict", "--tokens", &tokens.join(","), "--lut", path_str(path), "--json"]);
    let json: serde_json::Value = serde_json::from_str(&by_tokens).expect("JSON");
    assert!((json["predicted_ms"].as_f64().unwrap_or(f64::NAN) - expected).abs() < 1e-9, "{json}");
}

#[test]
fn report_measures_held_out_archs() {
    let (lut, path) = lut();
    let store = scratch("report.sqlite");
    let args = [
        "latency",
        "lut-report",
        "--lut",
        path_str(path),
        "--archs",
        "4",
        "--runs",
        "3",
        "--warmup",
        "1",
        "--seed",
        "5",
        "--store",
        path_str(&store),
        // This test is about reuse: a 3-run measurement on a busy CI machine may exceed the default
        // CV limit, and an unstable result is (rightly) measured again instead of being reused.
        "--max-cv",
        "1000",
        // Nor is it about the pace: one timed while the other tests run reads slow.
        "--max-slowdown",
        "inf",
        "--passes",
        "1",
        "--json",
    ];
    let json: serde_json::Value = serde_json::from_str(&ok(&args)).expect("JSON");
    assert_eq!(json["archs"], 4);
    let rows = json["rows"].as_array().expect("rows");
    let fit_archs: Vec<&str> = lut.fit.as_ref().unwrap().points.iter().map(|p| p.arch.as_str()).collect();
    for row in rows {
        assert!(row["measured"].as_f64().is_some_and(|m| m > 0.0), "{row}");
        assert!(!fit_archs.contains(&row["arch"].as_str().unwrap_or_default()), "a fit arch in the report: {row}");
    }
    // The summary is the rows' own: the share within 10 % recomputed from each row's figures.
    let acc = &json["accuracy"];
    let within = rows
        .iter()
        .filter(|r| {
            let (p, m) = (r["predicted"].as_f64().unwrap_or(f64::NAN), r["measured"].as_f64().unwrap_or(f64::NAN));
            ((p - m) / m).abs() <= 0.10
        })
        .count() as f64
        / rows.len() as f64;
    assert_eq!(acc["within_10pct"].as_f64(), Some(within), "{acc}");
    // The second report is served from the store.
    let again: serde_json::Value = serde_json::from_str(&ok(&args)).expect("JSON");
    assert_eq!(again["cached"], 4);
    let text = ok(&args[..args.len() - 1]);
    assert!(text.contains("within +-10%") && text.contains("Kendall tau-b") && text.contains("MACs"), "{text}");

    // Three passes: the first comes from the store, the others are measured anew; a row's figure
    // is the median of its passes, and the table is also judged against each pass alone.
    let three: Vec<&str> =
        args.iter().copied().take_while(|&a| a != "--passes").chain(["--passes", "3", "--json"]).collect();
    let json: serde_json::Value = serde_json::from_str(&ok(&three)).expect("JSON");
    assert_eq!((json["cached"].as_u64(), json["passes"].as_u64()), (Some(4), Some(3)), "{json}");
    let rows = json["rows"].as_array().expect("rows");
    let passes: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r["passes"].as_array().expect("passes").iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect())
        .collect();
    for (row, p) in rows.iter().zip(&passes) {
        assert!(p.len() == 3 && p.iter().all(|&v| v > 0.0), "{row}");
        let mut sorted = p.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(row["measured"].as_f64(), Some(sorted[1]), "the median of the passes: {row}");
    }
    assert_eq!(rows[0]["passes"][0], again["rows"][0]["measured"], "the first pass is the stored measurement");
    // Pass agreement: every later pass against every earlier one, averaged over the 3 pairs.
    let within = |earlier: usize, later: usize| {
        passes.iter().filter(|p| ((p[later] - p[earlier]) / p[earlier]).abs() <= 0.10).count() as f64
            / passes.len() as f64
    };
    let mean = (within(0, 1) + within(0, 2) + within(1, 2)) / 3.0;
    let agreement = &json["pass_agreement"];
    assert_eq!(agreement["pairs"], 3, "{agreement}");
    assert!((agreement["within_10pct"].as_f64().unwrap_or(f64::NAN) - mean).abs() < 1e-12, "{agreement} vs {mean}");
    assert_eq!(json["per_pass"].as_array().map(Vec::len), Some(3));
    // The machine's pace now and while the fit was measured, both measured.
    for key in ["pace_ms", "build_pace_ms"] {
        assert!(json[key].as_f64().is_some_and(|p| p > 0.0), "{key}: {}", json[key]);
    }
    let text: Vec<&str> = three[..three.len() - 1].to_vec();
    let text = ok(&text);
    assert!(
        text.contains("median of 3 passes")
            && text.contains("one pass against another")
            && text.contains("each pass alone")
            && text.contains("machine pace:"),
        "{text}"
    );
    // One pass has no agreement to report.
    let one: serde_json::Value = serde_json::from_str(&ok(&args)).expect("JSON");
    assert!(one["pass_agreement"].is_null() && one["per_pass"].as_array().map(Vec::len) == Some(1), "{one}");
}

#[test]
fn bad_input_is_one_clear_error() {
    let (lut, path) = lut();
    let p = path_str(path);
    let missing = scratch("none.json");
    assert_clean_error(&["latency", "predict", "--arch", "mnasnet-a1", "--lut", path_str(&missing)], "no such file");
    let corrupt = scratch("corrupt.json");
    std::fs::write(&corrupt, "{\"format\": 1,").expect("write");
    assert_clean_error(&["latency", "predict", "--arch", "mnasnet-a1", "--lut", path_str(&corrupt)], "not a valid LUT");

    // Another resolution than the table's, then a zoo model outside the (small) space.
    let (_, arch) = small_space().sample(3, 1).remove(0);
    let spec = blocks(&arch);
    assert_clean_error(&["latency", "predict", "--arch", &spec, "--classes", "10", "--lut", p], "built at 32x32");
    assert_clean_error(
        &["latency", "predict", "--arch", "mnasnet-a1", "--resolution", "32", "--lut", p],
        "stem (conv k3 s2) is not in the LUT",
    );
    assert_clean_error(&["latency", "predict", "--tokens", "0,1,2", "--lut", p], "expected 18 tokens, got 3");

    // Measured elsewhere: refused, or a warning with --any-device.
    let mut other = lut.clone();
    other.fingerprint_key = "0123456789abcdef".into();
    let elsewhere = scratch("elsewhere.json");
    other.save(&elsewhere).expect("save");
    let args = ["latency", "predict", "--arch", &spec, "--resolution", "32", "--classes", "10", "--lut"];
    let refused: Vec<&str> = args.iter().copied().chain([path_str(&elsewhere)]).collect();
    assert_clean_error(&refused, "--any-device");
    let warned: Vec<&str> = refused.iter().copied().chain(["--any-device"]).collect();
    let o = mnas(&warned);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stderr).contains("warning: the LUT was measured on another")
    );

    let fit_seed = lut.fit.as_ref().unwrap().seed.to_string();
    assert_clean_error(&["latency", "lut-report", "--lut", p, "--seed", &fit_seed], "fit seed");
    assert_clean_error(&["latency", "build-lut", "--runs", "0", "--out", path_str(&scratch("x.json"))], "runs");
    let x = scratch("x.json");
    assert_clean_error(&["latency", "build-lut", "--fit-passes", "0", "--out", path_str(&x)], "fit passes");
    let zero_passes = ["latency", "lut-report", "--lut", p, "--passes", "0"];
    common::assert_error(&mnas(&zero_passes), &zero_passes, "--passes", false);
    // `mnas latency` still wants --arch without a subcommand.
    common::assert_error(&mnas(&["latency"]), &["latency"], "required arguments", false);
}

/// A table of ONNX Runtime (from the venv `.ci/run` installs): its entries are ORT's, its
/// fingerprint names ORT, and predict / lut-report load ORT to check and to measure with it.
#[test]
fn a_table_of_onnx_runtime() {
    let engine = mnas_latency::OrtEngine::load(None)
        .expect("ONNX Runtime: create the .venv as the README says (python3 -m venv .venv && .venv/bin/pip install onnx onnxruntime numpy)");
    let opts = LutOptions { resolution: 32, runs: 2, warmup: 1, fit_archs: 3, fit_runs: 3, ..LutOptions::default() };
    let path = scratch("small-ort.json");
    let lut = lut_build::build(&small_space(), &opts, engine, None, Some(&path), &|_| {}).expect("ORT LUT builds");
    assert_eq!(lut.fingerprint.engine, "onnxruntime");
    assert_ne!(lut.fingerprint_key, self::lut().0.fingerprint_key, "engines share a fingerprint");
    assert!(lut.entries.values().all(|e| e.median_ms > 0.0 && e.median_ms.is_finite()));
    // The saved table reloads to the very numbers it held, to the last bit.
    assert!(Lut::load(&path).expect("reloads") == lut, "the table changed on its way through the file");
    let p = path_str(&path);
    let (_, arch) = small_space().sample(3, 1).remove(0);
    let spec = blocks(&arch);
    let json: serde_json::Value = serde_json::from_str(&ok(&[
        "latency",
        "predict",
        "--arch",
        &spec,
        "--resolution",
        "32",
        "--classes",
        "10",
        "--lut",
        p,
        "--json",
    ]))
    .expect("JSON");
    let expected = lut.predict(&arch).expect("predicts");
    assert!((json["predicted_ms"].as_f64().unwrap_or(f64::NAN) - expected).abs() < 1e-9, "{json} vs {expected}");
    let report = ["latency", "lut-report", "--lut", p, "--archs", "3", "--runs", "3", "--seed", "5", "--no-store"];
    let json: serde_json::Value = serde_json::from_str(&ok(&[&report[..], &["--json"]].concat())).expect("JSON");
    assert_eq!(json["archs"], 3);
    // The report measures with the table's engine: a library that is not ONNX Runtime stops it.
    assert_clean_error(&[&report[..], &["--ort-lib", "/bin/sh"]].concat(), "not a usable ONNX Runtime library");

    // A table of an engine this build does not know, and resuming one engine's table with another.
    let mut foreign = lut.clone();
    foreign.fingerprint.engine = "tflite".into();
    let foreign_path = scratch("foreign.json");
    foreign.save(&foreign_path).expect("save");
    assert_clean_error(
        &["latency", "predict", "--arch", &spec, "--resolution", "32", "--lut", path_str(&foreign_path)],
        "engine `tflite`",
    );
    let other = lut_build::build(&small_space(), &opts, &BuiltIn, Some(lut), None, &|_| {}).unwrap_err();
    assert!(other.to_string().contains("has engine onnxruntime, this build mnas-engine"), "{other}");
    assert_clean_error(
        &["latency", "build-lut", "--engine", "ort", "--ort-lib", "/bin/sh", "--out", path_str(&scratch("y.json"))],
        "not a usable ONNX Runtime library",
    );
}
