//! The search loop: propose -> proxy-train + measure -> reward -> update, step after step, with
//! every finished trial in the store before the next one starts.
//!
//! Resumption rests on two facts: the strategy's state is stored after every step, and a
//! strategy is deterministic given its state. A resumed search reloads the state of the last
//! finished step, proposes the next step again (the same models as before the crash), and takes
//! the trials of that step that already finished from the store instead of running them again.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use mnas_space::timestamp::utc_now;
use mnas_space::{Arch, SearchSpace};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SearchError};
use crate::reward::{Reward, FAILED_REWARD};
use crate::store::RunStore;
use crate::strategy::Strategy;
use crate::trial::{Trial, TrialStatus};

/// A trained model's held-out top-1 and the quality its reward multiplies: the accuracy itself,
/// or a proxy loss mapped into (0, 1] when the proxy scores by loss (a loss can rank models better
/// than accuracy at some budgets; see mnas-pipeline's `Score`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Held-out top-1 in [0, 1].
    pub accuracy: f64,
    /// In [0, 1], higher is better.
    pub quality: f64,
}

impl Scored {
    /// Scored by accuracy alone.
    pub fn by_accuracy(accuracy: f64) -> Scored {
        Scored { accuracy, quality: accuracy }
    }
}

/// What the proxy training of one model gave.
#[derive(Debug, Clone, PartialEq)]
pub enum AccuracyResult {
    Ok(Scored),
    /// The model itself failed (diverged, NaN/inf loss, failed to build): a failed trial with the
    /// worst reward, which the strategy learns from.
    Failed(String),
    /// The infrastructure failed (worker lost, broker down, timeout): says nothing about the
    /// model. Retried once; then the trial is recorded with the reason and left out of the
    /// strategy's update.
    Unavailable(String),
}

/// What measuring one model on the device gave.
#[derive(Debug, Clone, PartialEq)]
pub enum LatencyResult {
    Ok {
        median_ms: f64,
        fingerprint: serde_json::Value,
    },
    /// The model cannot be measured on the device.
    Failed(String),
    /// The device or the way to it failed (see [`AccuracyResult::Unavailable`]).
    Unavailable(String),
}

/// Which trial an evaluation belongs to: its step and index, and the attempt (0, then 1 for the
/// retry after an unavailable result). Distributed evaluators key their results by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrialKey {
    pub step: u64,
    pub index: u64,
    pub attempt: u32,
}

/// Proxy training: the accuracy signal. Deterministic: the evaluator owns its seed (the same for
/// every trial, so that trials differ by their architectures only), and a re-run of a trial
/// trains the same way.
pub trait AccuracyEvaluator: Sync {
    fn accuracy(&self, key: TrialKey, arch: &Arch) -> AccuracyResult;

    /// Several trials of one step; `done` is called as each finishes, in any order. Evaluators
    /// that can train in parallel (workers) dispatch them all at once.
    fn accuracy_all(&self, trials: &[(TrialKey, Arch)], done: &mut dyn FnMut(TrialKey, AccuracyResult)) {
        for (key, arch) in trials {
            done(*key, self.accuracy(*key, arch));
        }
    }

    /// Whether training runs on this machine's cores (then a latency measurement on them must
    /// wait for it).
    fn trains_here(&self) -> bool {
        true
    }
}

/// The device: the latency signal, at the deployment resolution.
pub trait LatencyEvaluator: Sync {
    fn latency(&self, arch: &Arch) -> LatencyResult;
    /// True when measuring shares this machine's cores with training (local measurement): the
    /// measurement then waits for training to pause, since a busy core would distort it.
    fn shares_cores_with_training(&self) -> bool;
}

/// The loop's own settings (stored with the run; a resume must not contradict them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopConfig {
    /// Models proposed per controller step.
    pub models_per_step: usize,
    /// Stop once this many trials are done (rounded up to whole steps).
    pub max_trials: usize,
    /// Resolution the models are measured (deployed) at; the proxy may train smaller.
    pub deploy_resolution: u32,
    /// Classes of the deployed model (the dataset's).
    pub num_classes: u32,
    pub seed: u64,
}

impl LoopConfig {
    pub fn validate(&self) -> Result<()> {
        if self.models_per_step == 0 {
            return Err(SearchError::Config("models per step must be at least 1".into()));
        }
        if self.max_trials == 0 {
            return Err(SearchError::Config("the trial budget must be at least 1".into()));
        }
        if self.deploy_resolution < 32 {
            return Err(SearchError::Config(format!(
                "deployment resolution must be at least 32, got {}",
                self.deploy_resolution
            )));
        }
        Ok(())
    }

    pub fn total_steps(&self) -> u64 {
        self.max_trials.div_ceil(self.models_per_step) as u64
    }
}

/// Live progress for a display.
pub trait SearchObserver {
    fn on_step_start(&mut self, _step: u64, _total_steps: u64) {}
    /// A trial is about to be trained (not called for reused trials).
    fn on_trial_start(&mut self, _step: u64, _index: u64, _arch: &Arch) {}
    fn on_trial(&mut self, _trial: &Trial, _done: usize, _total: usize) {}
    fn on_step_end(&mut self, _step: u64, _rewards: &[f64]) {}
}

pub struct NoObserver;
impl SearchObserver for NoObserver {}

/// How the search ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub steps_done: u64,
    pub trials_done: usize,
    /// Trials run in this invocation (not taken from the store).
    pub trials_run: usize,
    /// The wall-clock budget ran out before the trial budget.
    pub out_of_time: bool,
}

/// Everything the loop needs.
pub struct Search<'a> {
    pub store: &'a RunStore,
    pub space: &'a SearchSpace,
    pub strategy: &'a mut dyn Strategy,
    pub config: &'a LoopConfig,
    pub reward: Reward,
    pub accuracy: &'a dyn AccuracyEvaluator,
    pub latency: &'a dyn LatencyEvaluator,
    /// Wall time of this invocation: no step starts that the last step's duration says would overrun it.
    pub time_budget: Option<Duration>,
}

/// The arch a token list stands for, at the deployment resolution and class count.
pub fn deployed_arch(space: &SearchSpace, config: &LoopConfig, tokens: &[usize]) -> Result<Arch> {
    let mut arch = space.decode(tokens)?;
    arch.resolution = config.deploy_resolution;
    arch.num_classes = config.num_classes;
    Ok(arch)
}

/// A result that stands: a success, or a failure of the model itself (it would fail again). An
/// unavailable device or worker is worth another try.
fn reusable(trial: &Trial) -> bool {
    trial.status != TrialStatus::Unavailable
}

/// Runs a strategy call, turning a panic inside it into an error: a strategy must never take the
/// search down (its trials are already stored; the error line says what happened).
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let reason = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into());
            Err(SearchError::Strategy(format!("the strategy failed to {what}: {reason}")))
        }
    }
}

impl Search<'_> {
    pub fn run(&mut self, observer: &mut dyn SearchObserver) -> Result<Outcome> {
        self.config.validate()?;
        let started = Instant::now();
        let first_step = match self.store.latest_strategy_state()? {
            Some((step, bytes)) => {
                self.strategy.load_state(&bytes)?;
                step + 1
            }
            None => 0,
        };
        let total_steps = self.config.total_steps();
        let total_trials = (total_steps as usize) * self.config.models_per_step;
        let mut trials_run = 0;
        let mut out_of_time = false;
        let mut step = first_step;
        let mut last_step_time = Duration::ZERO;
        while step < total_steps {
            // Stop when the next step would not fit, judged by the last one: the budget is a
            // promise about when the search ends, not when it starts its last step.
            if let Some(budget) = self.time_budget {
                if started.elapsed() + last_step_time > budget {
                    out_of_time = true;
                    break;
                }
            }
            let step_started = Instant::now();
            observer.on_step_start(step, total_steps);
            let n = self.config.models_per_step;
            let proposals = guarded("propose models", || self.strategy.propose(n))?;
            let (trials, ran) = self.run_step(step, &proposals, total_trials, observer)?;
            trials_run += ran;
            // Trials the infrastructure failed say nothing about their models: the strategy
            // learns from the others only.
            let (seen, rewards): (Vec<Vec<usize>>, Vec<f64>) = trials
                .iter()
                .filter(|t| t.status != TrialStatus::Unavailable)
                .map(|t| (t.tokens.clone(), t.reward))
                .unzip();
            if !seen.is_empty() {
                guarded("learn from the step", || self.strategy.observe(&seen, &rewards))?;
            }
            self.store.put_strategy_state(step, &guarded("save its state", || self.strategy.save_state())?)?;
            observer.on_step_end(step, &rewards);
            last_step_time = step_started.elapsed();
            step += 1;
        }
        Ok(Outcome { steps_done: step, trials_done: self.store.trials()?.len(), trials_run, out_of_time })
    }

    /// Runs (or takes from the store) every trial of one step, training and measuring
    /// concurrently when the device is not this machine's cores.
    fn run_step(
        &self,
        step: u64,
        proposals: &[Vec<usize>],
        total_trials: usize,
        observer: &mut dyn SearchObserver,
    ) -> Result<(Vec<Trial>, usize)> {
        let stored = self.store.trials_of_step(step)?;
        let mut slots: Vec<Option<Trial>> = vec![None; proposals.len()];
        for trial in stored {
            let i = trial.index as usize;
            if i >= proposals.len() || proposals[i] != trial.tokens {
                return Err(SearchError::State(format!(
                    "the store's trial {step}.{i} does not match what the strategy proposes again after resuming \
                     (was the run's config or the mnas version changed?)"
                )));
            }
            slots[i] = Some(trial);
        }
        let mut pending = Vec::new();
        for (i, tokens) in proposals.iter().enumerate() {
            if slots[i].is_some() {
                continue;
            }
            let arch = deployed_arch(self.space, self.config, tokens)?;
            match self.earlier_result(&arch)? {
                Some(earlier) => {
                    let trial = self.reused(step, i as u64, tokens, &arch, &earlier);
                    self.store.put_trial(&trial)?;
                    observer.on_trial(&trial, self.store.trials()?.len(), total_trials);
                    slots[i] = Some(trial);
                }
                // The same arch twice within one step: the second copy waits for the first.
                None if pending.iter().any(|(_, a): &(usize, Arch)| a.canonical() == arch.canonical()) => {}
                None => pending.push((i, arch)),
            }
        }
        let ran = pending.len();
        self.evaluate_pending(step, proposals, &pending, &mut slots, total_trials, observer)?;
        // Duplicates inside the step, now that their first copy is stored.
        for (i, tokens) in proposals.iter().enumerate() {
            if slots[i].is_none() {
                let arch = deployed_arch(self.space, self.config, tokens)?;
                let canonical = arch.canonical();
                let first = slots
                    .iter()
                    .flatten()
                    .find(|t| t.arch == canonical)
                    .cloned()
                    .ok_or_else(|| SearchError::State(format!("trial {step}.{i}: its duplicate left no result")))?;
                let trial = self.reused(step, i as u64, tokens, &arch, &first);
                self.store.put_trial(&trial)?;
                observer.on_trial(&trial, self.store.trials()?.len(), total_trials);
                slots[i] = Some(trial);
            }
        }
        Ok((slots.into_iter().flatten().collect(), ran))
    }

    /// The latest earlier trial of the same arch whose result stands: a success, or a training
    /// failure (it would fail again). A latency failure (a lost device) is worth another try.
    fn earlier_result(&self, arch: &Arch) -> Result<Option<Trial>> {
        let canonical = arch.canonical();
        Ok(self.store.trials()?.into_iter().rev().find(|t| t.arch == canonical && !t.reused && reusable(t)))
    }

    fn evaluate_pending(
        &self,
        step: u64,
        proposals: &[Vec<usize>],
        pending: &[(usize, Arch)],
        slots: &mut [Option<Trial>],
        total_trials: usize,
        observer: &mut dyn SearchObserver,
    ) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        // Measuring on this machine's cores while this machine trains would time a busy core.
        let exclusive = self.latency.shares_cores_with_training() && self.accuracy.trains_here();
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = mpsc::channel::<(usize, LatencyResult, f64)>();
            if !exclusive {
                let latency = self.latency;
                let archs: Vec<(usize, Arch)> = pending.to_vec();
                scope.spawn(move || {
                    for (i, arch) in archs {
                        let t = Instant::now();
                        let result = latency.latency(&arch);
                        if tx.send((i, result, t.elapsed().as_secs_f64())).is_err() {
                            return;
                        }
                    }
                });
            }
            let mut latencies: Vec<Option<(LatencyResult, f64)>> = vec![None; proposals.len()];
            let keyed: Vec<(TrialKey, Arch)> = pending
                .iter()
                .map(|(i, arch)| (TrialKey { step, index: *i as u64, attempt: 0 }, arch.clone()))
                .collect();
            for (i, arch) in pending {
                observer.on_trial_start(step, *i as u64, arch);
            }
            // Training time of a trial: since the previous trial was recorded (with parallel
            // trainers, the wait for this result).
            let mut since = Instant::now();
            let mut failure: Option<SearchError> = None;
            let mut on_done = |key: TrialKey, mut accuracy: AccuracyResult| {
                if failure.is_some() {
                    return;
                }
                let i = key.index as usize;
                let arch = &pending.iter().find(|(j, _)| *j == i).expect("a pending trial").1;
                if let AccuracyResult::Unavailable(reason) = &accuracy {
                    tracing::warn!(step, index = i, %reason, "training unavailable; trying once more");
                    accuracy = self.accuracy.accuracy(TrialKey { attempt: 1, ..key }, arch);
                }
                let train_seconds = since.elapsed().as_secs_f64();
                let measured = if exclusive {
                    let t = Instant::now();
                    let r = self.latency.latency(arch);
                    Ok((r, t.elapsed().as_secs_f64()))
                } else {
                    loop {
                        if let Some(done) = latencies[i].take() {
                            break Ok(done);
                        }
                        match rx.recv() {
                            Ok((j, r, s)) => latencies[j] = Some((r, s)),
                            Err(_) => {
                                break Err(SearchError::State(
                                    "the latency worker stopped before measuring every model".into(),
                                ))
                            }
                        }
                    }
                };
                let (latency, latency_seconds) = match measured {
                    Ok(m) => m,
                    Err(e) => {
                        failure = Some(e);
                        return;
                    }
                };
                let (latency, latency_seconds) = match latency {
                    LatencyResult::Unavailable(reason) => {
                        tracing::warn!(step, index = i, %reason, "latency unavailable; measuring once more");
                        let t = Instant::now();
                        let again = self.latency.latency(arch);
                        (again, latency_seconds + t.elapsed().as_secs_f64())
                    }
                    done => (done, latency_seconds),
                };
                let trial =
                    self.finish(step, i as u64, &proposals[i], arch, accuracy, latency, train_seconds, latency_seconds);
                let stored = self.store.put_trial(&trial).and_then(|()| self.store.trials());
                match stored {
                    Ok(all) => observer.on_trial(&trial, all.len(), total_trials),
                    Err(e) => {
                        failure = Some(e);
                        return;
                    }
                }
                slots[i] = Some(trial);
                since = Instant::now();
            };
            self.accuracy.accuracy_all(&keyed, &mut on_done);
            if let Some(e) = failure {
                return Err(e);
            }
            if let Some(i) = pending.iter().map(|(i, _)| *i).find(|&i| slots[i].is_none()) {
                return Err(SearchError::State(format!("trial {step}.{i}: the trainer returned no result for it")));
            }
            Ok(())
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        step: u64,
        index: u64,
        tokens: &[usize],
        arch: &Arch,
        accuracy: AccuracyResult,
        latency: LatencyResult,
        train_seconds: f64,
        latency_seconds: f64,
    ) -> Trial {
        let counts = mnas_space::count(arch);
        let mut trial = Trial {
            step,
            index,
            tokens: tokens.to_vec(),
            arch: arch.canonical(),
            arch_json: serde_json::to_value(arch).unwrap_or(serde_json::Value::Null),
            params: counts.params,
            macs: counts.macs,
            accuracy: None,
            quality: None,
            latency_ms: None,
            fingerprint: None,
            reward: FAILED_REWARD,
            status: TrialStatus::Failed,
            reason: None,
            train_seconds,
            latency_seconds,
            reused: false,
            finished_at: utc_now(),
        };
        let mut reasons = Vec::new();
        let mut unavailable = false;
        match accuracy {
            AccuracyResult::Ok(s) => {
                trial.accuracy = Some(s.accuracy);
                trial.quality = Some(s.quality);
            }
            AccuracyResult::Failed(r) => reasons.push(format!("training: {r}")),
            AccuracyResult::Unavailable(r) => {
                unavailable = true;
                reasons.push(format!("training unavailable: {r}"));
            }
        }
        match latency {
            LatencyResult::Ok { median_ms, fingerprint } => {
                trial.latency_ms = Some(median_ms);
                trial.fingerprint = Some(fingerprint);
            }
            LatencyResult::Failed(r) => reasons.push(format!("latency: {r}")),
            LatencyResult::Unavailable(r) => {
                unavailable = true;
                reasons.push(format!("latency unavailable: {r}"));
            }
        }
        if let (Some(q), Some(l)) = (trial.quality(), trial.latency_ms) {
            trial.reward = self.reward.of(q, l);
            trial.status = TrialStatus::Ok;
        } else {
            // A model that failed by itself is a failed trial even if the infrastructure also
            // failed: it would fail again.
            let model_failed = reasons.iter().any(|r| r.starts_with("training: ") || r.starts_with("latency: "));
            if unavailable && !model_failed {
                trial.status = TrialStatus::Unavailable;
            }
            trial.reason = Some(reasons.join("; "));
        }
        trial
    }

    fn reused(&self, step: u64, index: u64, tokens: &[usize], arch: &Arch, earlier: &Trial) -> Trial {
        let mut trial = earlier.clone();
        trial.step = step;
        trial.index = index;
        trial.tokens = tokens.to_vec();
        trial.arch = arch.canonical();
        trial.reused = true;
        trial.train_seconds = 0.0;
        trial.latency_seconds = 0.0;
        trial.finished_at = utc_now();
        trial
    }
}
