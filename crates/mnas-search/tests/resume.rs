//! The search loop with cheap evaluators: a crash at any trial, then a resume, must give exactly
//! the trials an uninterrupted run gives — none lost, none repeated — and reuse seen archs.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use mnas_search::search_loop::{
    AccuracyEvaluator, AccuracyResult, LatencyEvaluator, LatencyResult, LoopConfig, NoObserver, Scored, Search,
    TrialKey,
};
use mnas_search::store::RunStore;
use mnas_search::strategies::{build, StrategyConfig};
use mnas_search::{Constraint, Reward, StrategyKind, Trial, TrialStatus};
use mnas_space::{Arch, SearchSpace};

/// Accuracy from the arch's size (bigger trains better, saturating), so rewards differ by arch.
/// Crashes the process (a panic out of the loop) on its `crash_at`-th call.
struct CountingAccuracy {
    calls: AtomicUsize,
    crash_at: Option<usize>,
    seen: Mutex<Vec<String>>,
}

impl AccuracyEvaluator for CountingAccuracy {
    fn accuracy(&self, _key: TrialKey, arch: &Arch) -> AccuracyResult {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.crash_at == Some(n) {
            panic!("simulated kill -9 during training");
        }
        self.seen.lock().unwrap().push(arch.canonical());
        let macs = mnas_space::count(arch).macs as f64;
        if arch.blocks[0].kernel == 5 && arch.blocks[1].kernel == 5 && arch.blocks[2].kernel == 5 {
            return AccuracyResult::Failed("loss became NaN (simulated)".into());
        }
        AccuracyResult::Ok(Scored::by_accuracy(1.0 - (-macs / 3e8).exp()))
    }
}

struct MacsLatency;

impl LatencyEvaluator for MacsLatency {
    fn latency(&self, arch: &Arch) -> LatencyResult {
        let ms = mnas_space::count(arch).macs as f64 / 1e7;
        LatencyResult::Ok { median_ms: ms, fingerprint: serde_json::json!({"device": "macs/1e7"}) }
    }
    fn shares_cores_with_training(&self) -> bool {
        false
    }
}

fn config() -> LoopConfig {
    LoopConfig { models_per_step: 4, max_trials: 20, deploy_resolution: 224, num_classes: 10, seed: 3 }
}

fn run(dir: &std::path::Path, kind: StrategyKind, crash_at: Option<usize>) -> (Option<usize>, Vec<String>) {
    let space = SearchSpace::default();
    let store = match RunStore::open(dir) {
        Ok(s) => s,
        Err(_) => RunStore::create(dir, &serde_json::json!({"test": true})).unwrap(),
    };
    let mut strategy = build(kind, &space, &StrategyConfig::default(), 7).unwrap();
    let accuracy = CountingAccuracy { calls: AtomicUsize::new(0), crash_at, seen: Mutex::new(Vec::new()) };
    let mut search = Search {
        store: &store,
        space: &space,
        strategy: strategy.as_mut(),
        config: &config(),
        reward: Reward::new(30.0, Constraint::Soft).unwrap(),
        accuracy: &accuracy,
        latency: &MacsLatency,
        time_budget: None,
    };
    let result = catch_unwind(AssertUnwindSafe(|| search.run(&mut NoObserver)));
    let finished = match result {
        Ok(outcome) => Some(outcome.unwrap().trials_done),
        Err(_) => None,
    };
    let seen = accuracy.seen.into_inner().unwrap();
    (finished, seen)
}

fn trials(dir: &std::path::Path) -> Vec<Trial> {
    RunStore::open_read_only(dir).unwrap().trials().unwrap()
}

fn key(t: &Trial) -> (u64, u64, Vec<usize>, String, bool) {
    let reward = format!("{:.12}", t.reward);
    (t.step, t.index, t.tokens.clone(), reward, t.status == TrialStatus::Ok)
}

#[test]
fn a_crash_at_any_trial_then_resume_equals_an_uninterrupted_run() {
    for kind in [StrategyKind::Ppo, StrategyKind::Random, StrategyKind::Evolution] {
        let reference_dir = tempdir(&format!("ref-{}", kind.as_str()));
        let (done, trained) = run(&reference_dir, kind, None);
        assert_eq!(done, Some(20));
        let reference = trials(&reference_dir);
        assert_eq!(reference.len(), 20);
        let unique: std::collections::HashSet<_> = reference.iter().map(|t| t.arch.clone()).collect();
        assert_eq!(trained.len(), unique.len(), "{kind:?}: every distinct arch is trained once");

        for crash_at in [1, 3, 6, 11] {
            let dir = tempdir(&format!("crash-{}-{crash_at}", kind.as_str()));
            let (done, before) = run(&dir, kind, Some(crash_at));
            assert_eq!(done, None, "the simulated crash happened");
            let kept = trials(&dir).len();
            let (done, after) = run(&dir, kind, None);
            assert_eq!(done, Some(20));
            let resumed = trials(&dir);
            assert_eq!(
                resumed.iter().map(key).collect::<Vec<_>>(),
                reference.iter().map(key).collect::<Vec<_>>(),
                "{kind:?} crash at trial {crash_at}: same trials, same order"
            );
            // Nothing finished before the crash was trained again.
            for arch in &before {
                assert!(!after.contains(arch), "{kind:?}: {arch} trained twice");
            }
            assert!(kept < 20);
        }
    }
}

#[test]
fn failed_trials_are_recorded_with_a_reason_and_the_worst_reward() {
    let dir = tempdir("failed");
    run(&dir, StrategyKind::Random, None);
    let all = trials(&dir);
    assert!(all.iter().any(|t| t.status == TrialStatus::Failed), "the seed must produce a failing arch");
    let ok_min = all.iter().filter(|t| t.status == TrialStatus::Ok).map(|t| t.reward).fold(f64::MAX, f64::min);
    for t in all.iter().filter(|t| t.status == TrialStatus::Failed) {
        assert!(t.reason.as_deref().unwrap_or("").contains("NaN"), "{t:?}");
        assert!(t.reward < ok_min);
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mnas-search-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}
