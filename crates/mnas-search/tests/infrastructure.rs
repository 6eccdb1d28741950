//! Failures of the infrastructure are not bad architectures: a worker or device that is down is
//! retried once, and a trial it still cannot finish is recorded with the reason and left out of
//! the strategy's update. A failure of the model itself stays a failed trial the strategy learns
//! from. Strategies never take a search down.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use mnas_search::search_loop::{
    AccuracyEvaluator, AccuracyResult, LatencyEvaluator, LatencyResult, LoopConfig, NoObserver, Scored, Search,
    TrialKey,
};
use mnas_search::store::RunStore;
use mnas_search::strategies::{build, StrategyConfig};
use mnas_search::{Constraint, Result, Reward, SearchError, Strategy, StrategyKind, TrialStatus};
use mnas_space::{Arch, SearchSpace};

/// Uniform proposals; remembers every observation it gets.
struct Spy {
    inner: Box<dyn Strategy>,
    observed: Vec<(Vec<Vec<usize>>, Vec<f64>)>,
    panic_on_observe: bool,
}

impl Strategy for Spy {
    fn kind(&self) -> StrategyKind {
        StrategyKind::Random
    }
    fn propose(&mut self, n: usize) -> Result<Vec<Vec<usize>>> {
        self.inner.propose(n)
    }
    fn observe(&mut self, proposals: &[Vec<usize>], rewards: &[f64]) -> Result<()> {
        if self.panic_on_observe {
            panic!("strategy bug (simulated)");
        }
        self.observed.push((proposals.to_vec(), rewards.to_vec()));
        Ok(())
    }
    fn save_state(&self) -> Result<Vec<u8>> {
        self.inner.save_state()
    }
    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.load_state(bytes)
    }
}

/// The first call for every arch whose first block has kernel 5 is "worker lost"; calls for archs
/// whose second block has kernel 5 are always lost; archs whose third block has kernel 5 diverge.
struct Flaky {
    calls: Mutex<Vec<String>>,
}

impl AccuracyEvaluator for Flaky {
    fn accuracy(&self, _key: TrialKey, arch: &Arch) -> AccuracyResult {
        let key = arch.canonical();
        let mut calls = self.calls.lock().unwrap();
        let before = calls.iter().filter(|c| **c == key).count();
        calls.push(key);
        if arch.blocks[1].kernel == 5 {
            return AccuracyResult::Unavailable("worker lost (simulated)".into());
        }
        if arch.blocks[0].kernel == 5 && before == 0 {
            return AccuracyResult::Unavailable("worker lost (simulated)".into());
        }
        if arch.blocks[2].kernel == 5 {
            return AccuracyResult::Failed("loss became NaN (simulated)".into());
        }
        AccuracyResult::Ok(Scored::by_accuracy(0.5))
    }
}

struct DeviceDownEvery(AtomicUsize);

impl LatencyEvaluator for DeviceDownEvery {
    fn latency(&self, arch: &Arch) -> LatencyResult {
        // Every third call the device is unreachable; the retry then succeeds.
        if self.0.fetch_add(1, Ordering::SeqCst) % 3 == 2 {
            return LatencyResult::Unavailable("device unreachable (simulated)".into());
        }
        LatencyResult::Ok { median_ms: mnas_space::count(arch).macs as f64 / 1e7, fingerprint: serde_json::json!({}) }
    }
    fn shares_cores_with_training(&self) -> bool {
        true
    }
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mnas-infra-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn infrastructure_failures_are_retried_then_left_out_of_the_update() {
    let dir = tempdir("retry");
    let store = RunStore::create(&dir, &serde_json::json!({"test": true})).unwrap();
    let space = SearchSpace::default();
    let inner = build(StrategyKind::Random, &space, &StrategyConfig::default(), 5).unwrap();
    let mut spy = Spy { inner, observed: Vec::new(), panic_on_observe: false };
    let config = LoopConfig { models_per_step: 8, max_trials: 32, deploy_resolution: 224, num_classes: 10, seed: 1 };
    let accuracy = Flaky { calls: Mutex::new(Vec::new()) };
    let latency = DeviceDownEvery(AtomicUsize::new(0));
    let mut search = Search {
        store: &store,
        space: &space,
        strategy: &mut spy,
        config: &config,
        reward: Reward::new(50.0, Constraint::Soft).unwrap(),
        accuracy: &accuracy,
        latency: &latency,
        time_budget: None,
    };
    search.run(&mut NoObserver).unwrap();
    let trials = store.trials().unwrap();
    assert_eq!(trials.len(), 32);
    let mut kinds = (0, 0, 0);
    for t in &trials {
        let arch = space.decode(&t.tokens).unwrap();
        let (k0, k1, k2) = (arch.blocks[0].kernel, arch.blocks[1].kernel, arch.blocks[2].kernel);
        match t.status {
            // Always lost: recorded with the reason after the retry.
            TrialStatus::Unavailable => {
                kinds.0 += 1;
                assert_eq!(k1, 5, "{t:?}");
                assert!(t.reason.as_deref().unwrap().contains("training unavailable: worker lost"), "{t:?}");
            }
            // The model's own failure stays a failed trial.
            TrialStatus::Failed => {
                kinds.1 += 1;
                assert!(k1 != 5 && k2 == 5, "{t:?}");
            }
            // Lost once (first block k5), or the device down once: the retry finished it.
            TrialStatus::Ok => {
                kinds.2 += 1;
                assert!(k1 != 5 && k2 != 5, "{t:?}");
                assert!(t.latency_ms.is_some() && t.accuracy == Some(0.5));
            }
        }
        let _ = k0;
    }
    assert!(kinds.0 > 0 && kinds.1 > 0 && kinds.2 > 0, "every kind of outcome occurs: {kinds:?}");
    // The strategy saw every trial but the unavailable ones, with the recorded rewards.
    let observed: Vec<Vec<usize>> = spy.observed.iter().flat_map(|(p, _)| p.clone()).collect();
    assert_eq!(observed.len(), kinds.1 + kinds.2);
    for t in &trials {
        assert_eq!(observed.contains(&t.tokens), t.status != TrialStatus::Unavailable, "{t:?}");
    }
    // Archs retried after a first loss were trained twice; always-lost ones twice too.
    let calls = accuracy.calls.lock().unwrap();
    for t in trials.iter().filter(|t| !t.reused) {
        let arch = space.decode(&t.tokens).unwrap();
        let n = calls.iter().filter(|c| **c == t.arch).count();
        let lost_first = arch.blocks[0].kernel == 5 || arch.blocks[1].kernel == 5;
        assert_eq!(n >= 2, lost_first, "{}: {n} calls", t.arch);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_strategy_that_panics_ends_the_search_with_an_error_and_keeps_the_trials() {
    let dir = tempdir("panic");
    let store = RunStore::create(&dir, &serde_json::json!({"test": true})).unwrap();
    let space = SearchSpace::default();
    let inner = build(StrategyKind::Random, &space, &StrategyConfig::default(), 5).unwrap();
    let mut spy = Spy { inner, observed: Vec::new(), panic_on_observe: true };
    let config = LoopConfig { models_per_step: 2, max_trials: 4, deploy_resolution: 224, num_classes: 10, seed: 1 };
    let accuracy = Flaky { calls: Mutex::new(Vec::new()) };
    let latency = DeviceDownEvery(AtomicUsize::new(0));
    let mut search = Search {
        store: &store,
        space: &space,
        strategy: &mut spy,
        config: &config,
        reward: Reward::new(50.0, Constraint::Soft).unwrap(),
        accuracy: &accuracy,
        latency: &latency,
        time_budget: None,
    };
    match search.run(&mut NoObserver) {
        Err(SearchError::Strategy(m)) => assert!(m.contains("strategy bug (simulated)"), "{m}"),
        other => panic!("expected a strategy error, got {other:?}"),
    }
    assert_eq!(store.trials().unwrap().len(), 2, "the first step's trials are stored");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn evolution_with_a_first_step_larger_than_its_population_samples_it() {
    let space = SearchSpace::default();
    let mut evo = build(StrategyKind::Evolution, &space, &StrategyConfig::default(), 2).unwrap();
    for _ in 0..3 {
        let p = evo.propose(32).unwrap();
        assert_eq!(p.len(), 32);
        let rewards: Vec<f64> = (0..32).map(|i| i as f64 / 32.0).collect();
        evo.observe(&p, &rewards).unwrap();
    }
}
