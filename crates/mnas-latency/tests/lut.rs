//! The lookup-table predictor end to end at a small resolution: the enumeration covers the space
//! exactly, a built table predicts a held-out arch near its measurement, survives a save/load,
//! resumes, and refuses what it cannot answer with an error that names the problem.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use mnas_latency::lut::{stage_keys, LutError};
use mnas_latency::lut_build::{self, LutOptions, LutProgress};
use mnas_latency::{measure_arch, BuiltIn, Lut, MeasureOptions};
use mnas_space::space::FILTER_MULTIPLIERS;
use mnas_space::SearchSpace;

const RES: u32 = 64;

/// A three-block cut of the space with narrow stem and head: the same decisions, an order of
/// magnitude fewer configurations to time, so that building a whole table is a test.
fn small_space() -> SearchSpace {
    SearchSpace {
        skeleton: vec![(16, 1, 1), (24, 2, 2), (40, 2, 2)],
        stem_channels: 16,
        head_channels: 128,
        num_classes: 10,
        resolution: RES,
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mnas-lut-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// Equal up to the last bit of a float (serde_json's default parser may differ there).
fn assert_same(a: &Lut, b: &Lut) {
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(1.0);
    assert_eq!(a.entries.len(), b.entries.len());
    for (k, e) in &a.entries {
        let f = &b.entries[k];
        assert!(close(e.median_ms, f.median_ms) && close(e.cv, f.cv) && e.macs == f.macs, "{k}: {e:?} vs {f:?}");
    }
    let (fa, fb) = (a.fit.as_ref().unwrap(), b.fit.as_ref().unwrap());
    assert!(close(fa.a, fb.a) && close(fa.b_ms, fb.b_ms), "{fa:?} vs {fb:?}");
    assert_eq!((a.resolution, a.configs, &a.fingerprint_key), (b.resolution, b.configs, &b.fingerprint_key));
}

fn opts() -> LutOptions {
    LutOptions {
        resolution: RES,
        runs: 3,
        warmup: 1,
        fit_archs: 4,
        fit_seed: 11,
        fit_runs: 5,
        fit_passes: 2,
        ..LutOptions::default()
    }
}

/// Tests that time things take turns: they would pin to the same core and slow each other.
static TIMING: Mutex<()> = Mutex::new(());

fn timing() -> std::sync::MutexGuard<'static, ()> {
    TIMING.lock().unwrap_or_else(|e| e.into_inner())
}

/// One small table shared by the tests (built once: it is the slow part).
fn built() -> &'static Lut {
    static LUT: OnceLock<Lut> = OnceLock::new();
    LUT.get_or_init(|| {
        let _turn = timing();
        let path = scratch("shared.json");
        lut_build::build(&small_space(), &opts(), &BuiltIn, None, Some(&path), &|_| {}).expect("LUT builds")
    })
}

/// The count from the space's definition alone. Per block: the first layer varies in op (4),
/// kernel (2), SE (2), input channels (distinct filter choices of the previous block, or the
/// stem), output channels (distinct filter choices) and residual (2 resolved kinds: with the
/// shape changing, none vs pool; with it kept, none vs identity, pooling being identity there);
/// the later layers (in = out, stride 1) in op, kernel, SE, output channels and residual
/// (none vs identity). A stride-1 first layer whose input width equals its output width is one
/// of the later layers already. Plus one stem and one head per last-block filter choice.
fn count_from_definition(space: &SearchSpace) -> usize {
    let widths = |c: u32| {
        let mut v: Vec<u32> =
            FILTER_MULTIPLIERS.iter().map(|&m| (((c as f64 * m / 8.0) + 0.5).floor() as u32 * 8).max(8)).collect();
        v.dedup();
        v
    };
    let per_choice = 4 * 2 * 2 * 2;
    let mut total = 0;
    let mut prev = vec![space.stem_channels];
    for &(c, _, stride) in &space.skeleton {
        let out = widths(c);
        let shared = if stride == 1 { prev.iter().filter(|w| out.contains(w)).count() } else { 0 };
        total += per_choice * (prev.len() * out.len() - shared) + per_choice * out.len();
        prev = out;
    }
    1 + total + prev.len()
}

#[test]
fn enumeration_count_matches_the_space_definition() {
    for (space, res) in [(SearchSpace::default(), 224), (SearchSpace::default(), RES), (small_space(), RES)] {
        let expected = count_from_definition(&space);
        let space = lut_build::space_at(&space, res);
        let configs = lut_build::enumerate(&space);
        let reference = lut_build::TARGET_REFERENCE;
        let of_space = configs.iter().filter(|c| !c.description.starts_with(reference)).count();
        assert_eq!(of_space, expected, "at {res}");
        let keys: HashSet<&str> = configs.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys.len(), configs.len(), "duplicate keys");
        // So are the stages of the `--target auto` reference at this resolution and class count.
        let mut target = mnas_space::lookup(reference).expect("zoo");
        (target.resolution, target.num_classes) = (res, space.num_classes);
        for s in stage_keys(&target) {
            assert!(keys.contains(s.key.as_str()), "{} of {reference} missing", s.key);
        }
        // Every stage of random archs of the space has its entry.
        for (_, arch) in space.sample(5, 300) {
            for s in stage_keys(&arch) {
                assert!(keys.contains(s.key.as_str()), "{} of {} missing", s.key, arch.canonical());
            }
        }
    }
    assert_eq!(count_from_definition(&SearchSpace::default()), 2340, "the paper's space over MobileNetV2's skeleton");
}

#[test]
fn prediction_is_near_the_measurement_of_a_held_out_arch() {
    let lut = built();
    let _turn = timing();
    assert!(lut.is_complete() && lut.entries.len() == lut.configs, "{} of {}", lut.entries.len(), lut.configs);
    let fit = lut.fit.as_ref().expect("fit");
    assert!(fit.a.is_finite() && fit.points.len() == 4 && fit.passes == 2, "{fit:?}");
    assert!(fit.pace_ms.is_some_and(|p| p > 0.0 && p.is_finite()), "the pace of the fit: {fit:?}");
    lut.check_device(&BuiltIn).expect("built here");
    let (_, arch) = small_space().sample(12345, 1).remove(0);
    let predicted = lut.predict(&arch).expect("in the space");
    // The fast path (keys only) sums the same entries as the detailed one.
    assert_eq!(predicted, lut.predict_detailed(&arch).expect("in the space").predicted_ms);
    // The reference of `--target auto` (MobileNetV2, ReLU6, outside the space) is in the table.
    let mut reference = mnas_space::lookup(mnas_latency::lut_build::TARGET_REFERENCE).expect("zoo");
    (reference.resolution, reference.num_classes) = (RES, 10);
    let target = lut.predict(&reference).expect("the target reference is predicted");
    assert!(target > 0.0 && target.is_finite(), "{target}");
    let m = measure_arch(&arch, &MeasureOptions { runs: 15, warmup: 3, ..Default::default() }).expect("measures");
    let ratio = predicted / m.stats.median_ms;
    // Loose: a shared 2-core machine is noisy, but a table that is off by 2x is broken.
    assert!(
        (0.5..2.0).contains(&ratio),
        "predicted {predicted:.3} ms, measured {:.3} ms (CV {:.3}); fit {fit:?}",
        m.stats.median_ms,
        m.stats.cv
    );
    // The prediction is the fit applied to the sum of the arch's stage entries.
    let (sum, stages) = lut.layer_sum(&arch).unwrap();
    assert_eq!(stages.len(), arch.layers().len() + 2);
    assert!((fit.apply(sum) - predicted).abs() < 1e-9);
}

#[test]
fn save_load_round_trip_and_atomic_write() {
    let lut = built();
    let path = scratch("round.json");
    lut.save(&path).unwrap();
    assert_same(&Lut::load(&path).unwrap(), lut);
    let dir = path.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn bad_inputs_are_clear_errors() {
    let lut = built();
    let missing = Lut::load(scratch("nope.json")).unwrap_err();
    assert!(matches!(missing, LutError::NotFound { .. }) && missing.to_string().contains("no such file"), "{missing}");

    let e = lut_build::build(&small_space(), &LutOptions { fit_passes: 0, ..opts() }, &BuiltIn, None, None, &|_| {})
        .unwrap_err();
    assert!(e.to_string().contains("fit passes"), "{e}");

    let corrupt = scratch("corrupt.json");
    std::fs::write(&corrupt, "{\"format\": 1, \"resolution\": 3").unwrap();
    let e = Lut::load(&corrupt).unwrap_err();
    assert!(matches!(e, LutError::Parse { .. }) && e.to_string().contains("not a valid LUT"), "{e}");
    std::fs::write(&corrupt, "{\"format\": 99}").unwrap();
    assert!(matches!(Lut::load(&corrupt).unwrap_err(), LutError::Format { found: 99, .. }));

    // Another resolution: an arch of the space at 224 against a table at 64.
    let (_, mut arch) = small_space().sample(1, 1).remove(0);
    arch.resolution = 224;
    let e = lut.predict(&arch).unwrap_err();
    assert!(e.to_string().contains("built at 64x64") && e.to_string().contains("224x224"), "{e}");

    // Outside the space: block 1 with 28 channels (the space offers 16, 24, 32).
    arch.resolution = RES;
    arch.blocks[1].out_channels = 28;
    let e = lut.predict(&arch).unwrap_err();
    match &e {
        LutError::Missing { stage, .. } => assert_eq!(stage, "blocks.1.0"),
        other => panic!("expected a missing stage, got {other}"),
    }
    assert!(e.to_string().contains("blocks.1.0") && e.to_string().contains("outside the search space"), "{e}");
    // A zoo model: MnasNet-A1 has another stem width than this cut of the space.
    let mut a1 = mnas_space::lookup("mnasnet-a1").unwrap();
    a1.resolution = RES;
    assert!(matches!(lut.predict(&a1).unwrap_err(), LutError::Missing { ref stage, .. } if stage == "stem"));

    // An unfinished table (no fit) refuses to predict; another device is refused by check_device.
    let mut partial = lut.clone();
    partial.fit = None;
    let (_, arch) = small_space().sample(3, 1).remove(0);
    assert!(matches!(partial.predict(&arch).unwrap_err(), LutError::Incomplete { .. }));
    let mut other = lut.clone();
    other.fingerprint_key = "0000000000000000".into();
    let e = other.check_device(&BuiltIn).unwrap_err();
    assert!(e.to_string().contains("another device"), "{e}");
}

#[test]
fn an_interrupted_build_resumes_with_only_the_missing_entries() {
    let mut partial = built().clone();
    let dropped: Vec<String> = partial.entries.keys().rev().take(5).cloned().collect();
    for k in &dropped {
        partial.entries.remove(k);
    }
    partial.fit = None;
    let path = scratch("resume.json");
    partial.save(&path).unwrap();
    let _turn = timing();
    let seen = Mutex::new(Vec::new());
    let resumed =
        lut_build::build(&small_space(), &opts(), &BuiltIn, Some(Lut::load(&path).unwrap()), Some(&path), &|p| {
            seen.lock().unwrap().push(p)
        })
        .unwrap();
    let seen = seen.into_inner().unwrap();
    let total = partial.configs;
    assert_eq!(seen.first(), Some(&LutProgress::Entries { done: total - 5, total }));
    // One report before and one per entry; 5 more when the drift reference moved and the five
    // were timed again (a tiny layer on a busy machine can move by 5 %).
    let reports = seen.iter().filter(|p| matches!(p, LutProgress::Entries { .. })).count();
    assert!(reports == 6 || reports == 11, "{reports} progress reports: {seen:?}");
    assert!(resumed.is_complete());
    assert!(dropped.iter().all(|k| resumed.entries.contains_key(k)));
    // Untouched entries are kept as they were.
    let kept = built().entries.keys().find(|k| !dropped.contains(k)).unwrap();
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-12 * x.abs().max(1.0);
    assert!(close(resumed.entries[kept].median_ms, built().entries[kept].median_ms));
    assert_same(&Lut::load(&path).unwrap(), &resumed);

    // A table of other settings is not resumed.
    let other = LutOptions { runs: 4, ..opts() };
    let e = lut_build::build(&small_space(), &other, &BuiltIn, Some(partial), None, &|_| {}).unwrap_err();
    assert!(e.to_string().contains("threads/runs/warmup"), "{e}");
}
