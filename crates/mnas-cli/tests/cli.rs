//! The `mnas` binary as a user runs it: counts, samples, weights, and one clear line (exit 2) for bad input.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

fn mnas(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mnas")).args(args).output().expect("run mnas")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn assert_clean_error(args: &[&str], needle: &str) {
    common::assert_error(&mnas(args), args, needle, true);
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mnas-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

#[test]
fn arch_show_reproduces_timm_counts_for_every_named_model() {
    for (name, params, macs) in [
        ("mnasnet-a1", "3,887,038", "311,579,072"),
        ("semnasnet_100", "3,887,038", "311,579,072"),
        ("mnasnet-b1", "4,383,312", "314,415,872"),
        ("mnasnet_100", "4,383,312", "314,415,872"),
        ("mnasnet-small", "2,030,264", "68,339,184"),
        ("semnasnet_075", "2,912,278", "223,448,480"),
        ("mnasnet_140", "7,115,728", "588,799,408"),
        ("mobilenetv2_100", "3,504,872", "300,774,272"),
    ] {
        let o = mnas(&["arch", "show", name]);
        assert!(o.status.success(), "{name}");
        let out = stdout(&o);
        assert!(out.contains(&format!("total: {params} params, {macs} MACs")), "{name}:\n{out}");
    }
}

#[test]
fn arch_show_json_round_trips_through_a_file() {
    let o = mnas(&["arch", "show", "mnasnet-a1", "--width", "0.75", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["params"], 2_912_278);
    let file = tmp("a1_075.json");
    std::fs::write(&file, serde_json::to_string(&v["arch"]).unwrap()).unwrap();
    let again = mnas(&["arch", "show", file.to_str().unwrap(), "--json"]);
    let w: serde_json::Value = serde_json::from_slice(&again.stdout).expect("json");
    assert_eq!(v["canonical"], w["canonical"]);
    assert_eq!(w["macs"], 223_448_480);
}

#[test]
fn block_strings_in_both_grammars_give_the_same_model() {
    let timm = stdout(&mnas(&["arch", "show", "ds_r1_k3_s1_c16_noskip ir_r2_k3_s2_e6_c24_se0.25", "--json"]));
    let tf = stdout(&mnas(&["arch", "show", "r1_k3_s11_e1_i32_o16_noskip r2_k3_s22_e6_i16_o24_se0.25", "--json"]));
    let (a, b): (serde_json::Value, serde_json::Value) =
        (serde_json::from_str(&timm).unwrap(), serde_json::from_str(&tf).unwrap());
    assert_eq!(a["canonical"], b["canonical"]);
    assert_eq!(a["params"], b["params"]);
}

#[test]
fn space_sample_is_seeded() {
    let a = stdout(&mnas(&["space", "sample", "--seed", "5", "-n", "3", "--json"]));
    let b = stdout(&mnas(&["space", "sample", "--seed", "5", "-n", "3", "--json"]));
    let c = stdout(&mnas(&["space", "sample", "--seed", "6", "-n", "3", "--json"]));
    assert_eq!(a, b);
    assert_ne!(a, c);
    let v: serde_json::Value = serde_json::from_str(&a).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3);
    assert_eq!(v[0]["tokens"].as_array().unwrap().len(), 42);
    let info = stdout(&mnas(&["space", "info"]));
    assert!(info.contains("2807929681968365568"), "{info}");
}

#[test]
fn bad_architectures_give_one_clear_line() {
    assert_clean_error(&["arch", "show", "mnasnet_999"], "unknown model `mnasnet_999`");
    assert_clean_error(&["arch", "show", "ir_r2_k4_s2_e6_c24"], "kernel");
    assert_clean_error(&["arch", "show", "ir_r0_k3_s2_e6_c24"], "repeats");
    assert_clean_error(&["arch", "show", "ir_r2_k3_s2_e6_c24_q7"], "unknown field `q7`");
    assert_clean_error(&["arch", "show", "mnasnet-a1", "--width", "0"], "width");
    assert_clean_error(&["arch", "show", "mnasnet-a1", "--width", "-1"], "width");
    assert_clean_error(&["arch", "show", "mnasnet-a1", "--resolution", "0"], "resolution");
    let bad = tmp("bad.json");
    std::fs::write(&bad, "{not json").unwrap();
    assert_clean_error(&["arch", "show", bad.to_str().unwrap()], "invalid architecture JSON");
    let wrong = tmp("wrong.json");
    std::fs::write(&wrong, r#"{"stem_channels": 32, "blocks": []}"#).unwrap();
    assert_clean_error(&["arch", "show", wrong.to_str().unwrap()], "blocks");
    assert_clean_error(&["arch", "show", "/no/such/arch.json"], "no such file");
    assert_clean_error(&["space", "sample", "-n", "0"], "at least 1");
}

/// The proxy benchmark refuses what cannot be judged before it trains anything.
#[test]
fn bench_proxy_refuses_bad_options_before_training() {
    let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/proxy/reference-cifar10.csv");
    assert_clean_error(&["bench", "proxy", "--reference", reference, "--seeds", "0"], "--seeds must be at least 1");
    assert_clean_error(&["bench", "proxy", "--reference", "/no/such.csv"], "no such file");
}

#[test]
fn weights_init_import_and_refusal_of_foreign_tensors() {
    let small = tmp("small.safetensors");
    let o = mnas(&["weights", "init", "--arch", "mnasnet-small", "--classes", "10", "--out", small.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info = stdout(&mnas(&["weights", "info", small.to_str().unwrap()]));
    assert!(info.contains("trainable params"), "{info}");

    // Importing the file as another architecture names the first tensor that does not fit.
    assert_clean_error(
        &[
            "weights",
            "import",
            "--arch",
            "mnasnet-a1",
            "--from",
            small.to_str().unwrap(),
            "--out",
            "/tmp/x.safetensors",
        ],
        "conv_stem.weight",
    );
    // A file holding only part of the model names a missing tensor.
    let partial = tmp("partial.safetensors");
    let stem = vec![0u8; 8 * 3 * 3 * 3 * 4];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![8, 3, 3, 3], &stem).unwrap();
    std::fs::write(&partial, safetensors::serialize(vec![("conv_stem.weight", view)], &None).unwrap()).unwrap();
    assert_clean_error(
        &["weights", "import", "--arch", "mnasnet-small", "--from", partial.to_str().unwrap(), "--out", "/tmp/y.st"],
        "`bn1.weight` is missing",
    );
    // Not a safetensors file at all.
    let junk = tmp("junk.safetensors");
    std::fs::write(&junk, b"\x05\x00\x00\x00\x00\x00\x00\x00hello").unwrap();
    assert_clean_error(&["weights", "info", junk.to_str().unwrap()], "not a valid safetensors file");
    assert_clean_error(&["weights", "info", "/no/such.safetensors"], "cannot read");
    // Output into a missing directory.
    assert_clean_error(
        &["weights", "init", "--arch", "mnasnet-small", "--out", "/no/such/dir/w.safetensors"],
        "does not exist",
    );
}

#[test]
fn timm_fixture_imports_through_the_cli() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/mnasnet_a1_224.safetensors");
    if !fixture.exists() {
        panic!("fixture {} missing: run from a checkout with ../shared beside it", fixture.display());
    }
    let out = tmp("a1.safetensors");
    let o = mnas(&[
        "weights",
        "import",
        "--arch",
        "mnasnet-a1",
        "--from",
        fixture.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("3,887,038 params"), "{}", stdout(&o));
}
