//! Numerical parity with timm on every fixture in `$MNAS_FIXTURES` (default `../shared/fixtures`)
//! and in this crate's `tests/fixtures` (MobileNetV2, which the shared set lacks; written by
//! `bench/reference/make_fixtures.py`).

use std::path::PathBuf;

use mnas_model::parity::check_fixture;

const LOGITS_TOL: f64 = 1e-4;
const GRAD_TOL: f64 = mnas_model::parity::GRAD_TOLERANCE;

fn fixtures_dir() -> PathBuf {
    match std::env::var_os("MNAS_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
    }
}

fn safetensors_in(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read fixture directory {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no *.safetensors fixtures in {}", dir.display());
    found
}

#[test]
fn timm_parity() {
    let mut fixtures = safetensors_in(&fixtures_dir());
    let own = safetensors_in(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"));
    assert!(
        own.iter().any(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("mobilenetv2_100"))),
        "the MobileNetV2 fixture is missing from tests/fixtures"
    );
    fixtures.extend(own);
    let mut failures = Vec::new();
    for path in &fixtures {
        let name = path.file_name().unwrap_or_default().to_string_lossy().to_string();
        match check_fixture(path) {
            Ok(r) => {
                let mut line = format!("{name}: {} logits_eval={:.2e}", r.model, r.logits_eval);
                let mut ok = r.logits_eval <= LOGITS_TOL;
                if let (Some(lt), Some(loss)) = (r.logits_train, r.loss_train) {
                    line += &format!(
                        " [train in {}] logits_train={lt:.2e} loss_train={loss:.2e}",
                        r.train_dtype.unwrap_or("?")
                    );
                    ok &= lt <= LOGITS_TOL && loss <= LOGITS_TOL;
                }
                if let Some((param, g)) = &r.worst_grad {
                    line += &format!(
                        " grads={} ({} exact-zero BN biases) worst_grad={g:.2e} ({param})",
                        r.grads_checked, r.grads_at_noise_floor
                    );
                    if r.kinks_near > 0 {
                        line += &format!(" near-kink activations={} flipped={}", r.kinks_near, r.kinks_flipped);
                    }
                    match &r.worst_grad_f64 {
                        // Fixtures with float64 gradients are judged against those (the exact
                        // answer), since timm's float32 gradients can sit on a ReLU tie.
                        Some((p64, g64)) => {
                            line += &format!(" worst_grad_vs_f64={g64:.2e} ({p64})");
                            ok &= *g64 <= GRAD_TOL;
                        }
                        None => ok &= *g <= GRAD_TOL,
                    }
                }
                println!("{} {line}", if ok { "PASS" } else { "FAIL" });
                if !ok {
                    failures.push(line);
                }
            }
            Err(e) => {
                let mut msg = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    msg += &format!(": {c}");
                    cause = c.source();
                }
                println!("FAIL {name}: {msg}");
                failures.push(format!("{name}: {msg}"));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {} fixtures failed:\n{}", failures.len(), fixtures.len(), failures.join("\n"));
}
