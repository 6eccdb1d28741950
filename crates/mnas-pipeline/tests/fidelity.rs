//! The proxy fidelity benchmark's parts on a tiny sample of real data (the embedded CIFAR-10
//! subset): the reference job, its resumption after a crash, the refusals, and the statistics.

use std::io::Write;
use std::path::PathBuf;

use mnas_pipeline::fidelity::{JobObserver, ProxyBench, Reference, ReferenceJob, Silent};
use mnas_pipeline::{ProxySettings, Score};

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mnas-fidelity-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// A few steps per architecture: enough to tell the plumbing works, seconds in all. The learning
/// rate is its own, not the default's: with the default's 0.025 these 4 steps left the models'
/// held-out accuracies tied, and tau of tied scores is undefined.
fn tiny() -> ProxySettings {
    ProxySettings {
        images: 256,
        val_images: 200,
        epochs: 0.5,
        batch_size: 32,
        width: 0.25,
        lr: 0.05,
        ..ProxySettings::default()
    }
}

fn job(out: PathBuf, archs: usize, settings: ProxySettings) -> ReferenceJob {
    ReferenceJob { out, archs, archs_seed: 3, settings, command: "test".into(), commit: "test".into() }
}

/// Stops the job after `n` finished runs, as a kill would.
struct StopAfter(usize);
impl JobObserver for StopAfter {
    fn on_step(&mut self, _: mnas_engine::train::Progress) -> bool {
        self.0 > 0
    }
    fn on_run_end(&mut self, _: &str, _: &mnas_engine::train::RunResult) {
        self.0 = self.0.saturating_sub(1);
    }
}

#[test]
fn reference_job_resumes_after_a_crash_without_redoing_finished_architectures() {
    let d = dir("resume");
    let out = d.join("ref.csv");
    let partial = job(out.clone(), 4, tiny()).run(&mut StopAfter(2)).expect("first half");
    assert_eq!(partial.rows.len(), 2);
    // A crash while writing the third row leaves a torn line behind.
    std::fs::OpenOptions::new().append(true).open(&out).expect("open").write_all(b"2,0 1 2").expect("write");
    let done = job(out.clone(), 4, tiny()).run(&mut Silent).expect("resumed");
    assert_eq!(done.rows.len(), 4);
    let indices: Vec<usize> = done.rows.iter().map(|r| r.index).collect();
    assert_eq!(indices, vec![0, 1, 2, 3], "each architecture once, in order");
    // The first two rows are the ones written before the crash, untouched.
    assert_eq!(done.rows[..2], partial.rows[..]);
    assert!(done.rows.iter().all(|r| r.ok() && r.val_top1 > 0.0 && r.macs > 0 && r.params > 0));
    // Running again trains nothing and changes nothing.
    let before = std::fs::read(&out).expect("read");
    job(out.clone(), 4, tiny()).run(&mut StopAfter(0)).expect("nothing to do");
    assert_eq!(std::fs::read(&out).expect("read"), before);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_reference_of_another_sample_data_recipe_or_space_is_refused() {
    let d = dir("refuse");
    let out = d.join("ref.csv");
    let r = job(out.clone(), 4, tiny()).run(&mut StopAfter(1)).expect("one row");
    let err = |j: ReferenceJob| j.run(&mut Silent).expect_err("refused").to_string();
    let e = err(ReferenceJob { archs_seed: 4, ..job(out.clone(), 4, tiny()) });
    assert!(e.contains("--archs-seed 3") && e.contains("--archs-seed 4"), "{e}");
    let e = err(job(out.clone(), 5, tiny()));
    assert!(e.contains("--archs 4"), "{e}");
    let e = err(job(out.clone(), 4, ProxySettings { split_seed: 9, ..tiny() }));
    assert!(e.contains("other data"), "{e}");
    let e = err(job(out.clone(), 4, ProxySettings { epochs: 0.25, ..tiny() }));
    assert!(e.contains("other settings"), "{e}");
    // Another search space: the header's space id does not match this mnas's.
    let text = std::fs::read_to_string(&out).expect("read");
    let foreign = text.replacen(&format!("\"space\":\"{}\"", r.header.space), "\"space\":\"0000000000000000\"", 1);
    std::fs::write(&out, foreign).expect("write");
    let e = Reference::read(&out).expect_err("refused").to_string();
    assert!(e.contains("another search space"), "{e}");
    // Rows that are not the sample's architectures.
    std::fs::write(&out, text.replacen("\n0,", "\n1,", 1)).expect("write");
    let e = Reference::read(&out).expect_err("refused").to_string();
    assert!(e.contains("is not architecture 1 of the sample"), "{e}");
    std::fs::write(&out, "index,val\n0,1\n").expect("write");
    assert!(Reference::read(&out).expect_err("refused").to_string().contains("not an mnas proxy-reference file"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_reference_recipe_as_a_proxy_reproduces_the_reference_exactly() {
    let d = dir("bench");
    let reference = job(d.join("ref.csv"), 6, tiny()).run(&mut Silent).expect("reference");
    // Training is deterministic: the same recipe and seed give the reference's own accuracies,
    // so every rank statistic is exactly 1, whatever the (near-chance) accuracies are.
    let bench =
        ProxyBench { reference: &reference, settings: tiny(), seeds: 1, cache: Some(d.join("cache")), partial: false };
    let report = bench.run(&mut Silent).expect("bench");
    assert_eq!(report.archs, 6);
    assert_eq!(report.tau, Some(1.0), "{report:?}");
    assert_eq!(report.tau_one_seed, Some(1.0));
    assert_eq!(report.top25, Some(1.0));
    assert_eq!(report.tau_ci, Some([1.0, 1.0]));
    assert!((report.mean_accuracy - report.reference_mean_accuracy).abs() < 1e-9);
    // The cache serves a rerun without training; a second seed adds only its own runs.
    let cached = std::fs::read_dir(d.join("cache")).expect("cache dir").count();
    assert_eq!(cached, 1);
    let two =
        ProxyBench { reference: &reference, settings: tiny(), seeds: 2, cache: Some(d.join("cache")), partial: false };
    let mut counter = Counter(0);
    let report2 = two.run(&mut counter).expect("bench");
    assert_eq!(counter.0, 6, "only the second seed's runs are new");
    assert!(report2.tau_seed.is_some_and(|t| (-1.0..=1.0).contains(&t)));
    // Each seed ranks on its own: the first is the reference's seed (exactly 1), the mean of the
    // two is what one search trial ranks with.
    let own = report2.scores.iter().find(|f| f.score == Score::Accuracy).expect("accuracy figures");
    assert_eq!(own.tau_by_seed.len(), 2);
    assert_eq!(own.tau_by_seed[0], Some(1.0), "{own:?}");
    let second = own.tau_by_seed[1].expect("second seed's tau");
    assert_eq!(report2.tau_one_seed, Some((1.0 + second) / 2.0));
    let json = serde_json::to_value(&report2).expect("serialises");
    for key in ["archs", "tau", "tau_ci", "tau_params", "tau_macs", "tau_seed", "mean_accuracy", "seconds_per_trial"] {
        assert!(json.get(key).is_some(), "missing {key}");
    }
    assert_eq!(json["scores"].as_array().map(|a| a.len()), Some(Score::ALL.len()));
    // A proxy on other data than the reference's is refused.
    let other = ProxyBench {
        reference: &reference,
        settings: ProxySettings { split_seed: 5, ..tiny() },
        seeds: 1,
        cache: None,
        partial: false,
    };
    let e = other.run(&mut Silent).expect_err("refused").to_string();
    assert!(e.contains("other data"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_unfinished_reference_is_refused_unless_partial_figures_are_asked_for() {
    let d = dir("partial");
    let reference = job(d.join("ref.csv"), 6, tiny()).run(&mut StopAfter(4)).expect("four of six");
    let bench = |partial| ProxyBench { reference: &reference, settings: tiny(), seeds: 1, cache: None, partial };
    let e = bench(false).run(&mut Silent).expect_err("refused").to_string();
    assert!(e.contains("2 of 6 architectures have no reference yet"), "{e}");
    let report = bench(true).run(&mut Silent).expect("partial figures");
    assert_eq!((report.archs, report.sample), (4, 6));
    assert_eq!(report.tau, Some(1.0));
    let _ = std::fs::remove_dir_all(&d);
}

struct Counter(usize);
impl JobObserver for Counter {
    fn on_run_end(&mut self, _: &str, _: &mnas_engine::train::RunResult) {
        self.0 += 1;
    }
}

#[test]
fn proxy_settings_that_leave_1x1_maps_warn() {
    let trainer = mnas_pipeline::ProxyTrainer::new(ProxySettings { stem_stride: 2, ..tiny() }).expect("embedded");
    let arch = mnas_space::lookup("mnasnet-a1").expect("zoo");
    let w = trainer.warnings(&arch);
    assert_eq!(w.len(), 1);
    assert!(w[0].contains("1x1"), "{}", w[0]);
    let ok = mnas_pipeline::ProxyTrainer::new(tiny()).expect("embedded");
    assert!(ok.warnings(&arch).is_empty());
}
