//! A search run's set-up and execution, shared by `mnas search` and anything else that starts
//! one: a new run (settings resolved, `--target auto` measured, store created) or a resumed one
//! (settings read back, and any setting given again checked against them), then the loop.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mnas_search::pareto::pareto_front;
use mnas_search::report::{describe_constraint, write_report, ReportMeta, ReportRun};
use mnas_search::search_loop::{
    deployed_arch, LatencyEvaluator, LatencyResult, LoopConfig, Outcome, Search, SearchObserver,
};
use mnas_search::store::{meta_keys, RunStore};
use mnas_search::strategies::{build, StrategyConfig};
use mnas_search::{Constraint, Reward, StrategyKind, Trial};
use mnas_space::SearchSpace;
use serde::{Deserialize, Serialize};

use crate::distributed::BrokerTrainer;
use crate::error::{PipelineError, Result};
use crate::latency::{LatencyAccess, LatencySpec, SearchLatency};
use crate::proxy::{ProxySettings, ProxyTrainer};

/// The whole stored configuration of a search run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub mnas_version: String,
    pub strategy: StrategyKind,
    pub strategy_config: StrategyConfig,
    pub seed: u64,
    pub trials: usize,
    pub models_per_step: usize,
    pub constraint: Constraint,
    /// What the user asked for: milliseconds, or "auto" (MobileNetV2-1.0 measured on the device).
    pub target: String,
    /// The resolved target, milliseconds.
    pub target_ms: f64,
    pub deploy_resolution: u32,
    pub num_classes: u32,
    pub proxy: ProxySettings,
    pub latency: LatencySpec,
    /// Unique name of the run on a broker (its result log); empty for runs made before it.
    #[serde(default)]
    pub run_id: String,
    /// Whether trials go to workers through a broker (the URL is given on every start: it may
    /// hold a password).
    #[serde(default)]
    pub distributed: bool,
}

/// What a user asked for. `None` keeps the default (new run) or the stored value (resume).
pub struct SearchRequest<'a> {
    pub strategy: Option<StrategyKind>,
    pub trials: Option<usize>,
    pub models_per_step: Option<usize>,
    pub seed: Option<u64>,
    pub constraint: Option<Constraint>,
    /// Milliseconds or `auto`.
    pub target: Option<String>,
    pub deploy_resolution: Option<u32>,
    /// The user's proxy options applied to a base recipe (the default one, or the stored one).
    pub proxy: &'a dyn Fn(&ProxySettings) -> ProxySettings,
    pub latency: Option<LatencySpec>,
    pub access: LatencyAccess,
    /// Dispatch trials to workers through this broker instead of training here.
    pub broker: Option<String>,
}

/// The default search's proxy recipe.
pub fn default_proxy() -> ProxySettings {
    ProxySettings::default()
}

pub const DEFAULT_TRIALS: usize = 40;
pub const DEFAULT_MODELS_PER_STEP: usize = 4;
pub const DEFAULT_RESOLUTION: u32 = 224;

/// A run ready to go: its store, settings, latency source and proxy.
pub struct PreparedRun {
    pub dir: PathBuf,
    pub store: RunStore,
    pub config: RunConfig,
    pub latency: SearchLatency,
    pub trainer: ProxyTrainer,
    /// The workers' side when trials go through a broker.
    pub workers: Option<BrokerTrainer>,
}

/// A run id unique enough for a broker shared by many searches: time and process.
fn new_run_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format!("{:016x}", nanos ^ ((std::process::id() as u64) << 40))
}

fn open_workers(req: &SearchRequest<'_>, config: &RunConfig, trainer: &ProxyTrainer) -> Result<Option<BrokerTrainer>> {
    match (&req.broker, config.distributed) {
        (Some(url), true) => {
            Ok(Some(BrokerTrainer::new(url, &config.run_id, config.proxy.clone(), trainer.data_hash)?))
        }
        (None, true) => Err(PipelineError::Run(
            "this run dispatches its trials to workers: give the broker URL again to continue it".into(),
        )),
        (Some(_), false) => Err(PipelineError::Run(
            "this run trains its trials here; it cannot switch to workers (start a new run with the broker)".into(),
        )),
        (None, false) => Ok(None),
    }
}

/// What a preparation says while it works (the target measurement takes a while).
pub trait SetupObserver {
    fn on_target_measure(&mut self, _resolution: u32) {}
    fn on_proxy_ready(&mut self, _trainer: &ProxyTrainer) {}
}

/// An observer that shows nothing.
pub struct QuietSetup;
impl SetupObserver for QuietSetup {}

fn agree<T: PartialEq + std::fmt::Debug>(setting: &'static str, given: Option<T>, stored: &T) -> Result<()> {
    match given {
        Some(g) if &g != stored => {
            Err(PipelineError::Contradicts { setting, given: format!("{g:?}"), stored: format!("{stored:?}") })
        }
        _ => Ok(()),
    }
}

/// T in ms: a number, or `auto` = MobileNetV2-1.0 measured on the latency source.
fn resolve_target(
    target: &str,
    latency: &SearchLatency,
    resolution: u32,
    classes: u32,
    observer: &mut dyn SetupObserver,
) -> Result<f64> {
    if target == "auto" {
        let mut mnv2 = mnas_space::lookup(mnas_latency::lut_build::TARGET_REFERENCE)?;
        mnv2.resolution = resolution;
        mnv2.num_classes = classes;
        observer.on_target_measure(resolution);
        return match latency.latency(&mnv2) {
            LatencyResult::Ok { median_ms, .. } => Ok(median_ms),
            LatencyResult::Failed(reason) | LatencyResult::Unavailable(reason) => Err(PipelineError::Run(format!(
                "the automatic target: measuring MobileNetV2-1.0 failed ({reason}); give a target in ms instead"
            ))),
        };
    }
    match target.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms > 0.0 => Ok(ms),
        _ => Err(PipelineError::Run(format!("the target must be a latency in ms (> 0) or `auto`, got `{target}`"))),
    }
}

impl PreparedRun {
    /// A new run in `dir` (which must not hold one).
    pub fn create(dir: &Path, req: &SearchRequest<'_>, observer: &mut dyn SetupObserver) -> Result<PreparedRun> {
        if dir.join(mnas_search::store::STORE_FILE).exists() {
            return Err(PipelineError::Run(format!("{} already holds a search", dir.display())));
        }
        let proxy = (req.proxy)(&default_proxy());
        let spec = req.latency.clone().unwrap_or_default();
        let latency = SearchLatency(spec.open(&req.access)?);
        let deploy_resolution = req.deploy_resolution.unwrap_or(DEFAULT_RESOLUTION);
        let probe = LoopConfig {
            models_per_step: req.models_per_step.unwrap_or(DEFAULT_MODELS_PER_STEP),
            max_trials: req.trials.unwrap_or(DEFAULT_TRIALS),
            deploy_resolution,
            num_classes: 10,
            seed: 0,
        };
        probe.validate()?;
        let trainer = ProxyTrainer::new(proxy.clone())?;
        observer.on_proxy_ready(&trainer);
        let classes = trainer.data.classes.len() as u32;
        let space = SearchSpace::default();
        let sample =
            deployed_arch(&space, &LoopConfig { num_classes: classes, ..probe.clone() }, &vec![0; space.num_tokens()])?;
        latency.0.check_covers(&sample).map_err(|e| PipelineError::Latency(e.to_string()))?;
        let target = req.target.clone().unwrap_or_else(|| "auto".into());
        let constraint = req.constraint.unwrap_or(Constraint::Soft);
        let target_ms = resolve_target(&target, &latency, deploy_resolution, classes, observer)?;
        Reward::new(target_ms, constraint)?;
        let config = RunConfig {
            mnas_version: env!("CARGO_PKG_VERSION").into(),
            strategy: req.strategy.unwrap_or(StrategyKind::Ppo),
            strategy_config: StrategyConfig::default(),
            seed: req.seed.unwrap_or(0),
            trials: probe.max_trials,
            models_per_step: probe.models_per_step,
            constraint,
            target,
            target_ms,
            deploy_resolution,
            num_classes: classes,
            proxy,
            latency: spec,
            run_id: new_run_id(),
            distributed: req.broker.is_some(),
        };
        let workers = open_workers(req, &config, &trainer)?;
        let store = RunStore::create(dir, &serde_json::to_value(&config).map_err(mnas_search::SearchError::from)?)?;
        Ok(PreparedRun { dir: dir.to_path_buf(), store, config, latency, trainer, workers })
    }

    /// The run in `dir`, with its stored settings; a setting given again must agree with them.
    pub fn resume(dir: &Path, req: &SearchRequest<'_>, observer: &mut dyn SetupObserver) -> Result<PreparedRun> {
        let store = RunStore::open(dir)?;
        let config: RunConfig = serde_json::from_value(store.config()?).map_err(|e| {
            PipelineError::Run(format!("{}: the stored search config is not one this mnas reads ({e})", dir.display()))
        })?;
        agree("strategy", req.strategy, &config.strategy)?;
        agree("trial budget", req.trials, &config.trials)?;
        agree("models per step", req.models_per_step, &config.models_per_step)?;
        agree("seed", req.seed, &config.seed)?;
        agree("constraint", req.constraint, &config.constraint)?;
        agree("target", req.target.clone(), &config.target)?;
        agree("deployment resolution", req.deploy_resolution, &config.deploy_resolution)?;
        let proxy = (req.proxy)(&config.proxy);
        if proxy != config.proxy {
            return Err(PipelineError::Contradicts {
                setting: "proxy recipe",
                given: serde_json::to_string(&proxy).unwrap_or_default(),
                stored: serde_json::to_string(&config.proxy).unwrap_or_default(),
            });
        }
        agree("latency source", req.latency.clone(), &config.latency)?;
        let latency = SearchLatency(config.latency.open(&req.access)?);
        let trainer = ProxyTrainer::new(config.proxy.clone())?;
        observer.on_proxy_ready(&trainer);
        let workers = open_workers(req, &config, &trainer)?;
        Ok(PreparedRun { dir: dir.to_path_buf(), store, config, latency, trainer, workers })
    }

    pub fn loop_config(&self) -> LoopConfig {
        LoopConfig {
            models_per_step: self.config.models_per_step,
            max_trials: self.config.trials,
            deploy_resolution: self.config.deploy_resolution,
            num_classes: self.config.num_classes,
            seed: self.config.seed,
        }
    }

    /// Writes what `mnas report` reads besides the trials.
    fn record_meta(&self, status: &str) -> Result<()> {
        let store = &self.store;
        store.set_meta(meta_keys::TARGET_MS, &self.config.target_ms.to_string())?;
        store.set_meta(meta_keys::STRATEGY, self.config.strategy.as_str())?;
        store.set_meta(meta_keys::CONSTRAINT, &describe_constraint(self.config.constraint))?;
        store.set_meta(meta_keys::DEVICE, &self.latency.0.describe())?;
        store.set_meta(meta_keys::STATUS, status)?;
        Ok(())
    }

    /// Runs the search until its trial budget or `time_budget` is spent, then writes
    /// `RUN/report.html`. The trials done so far are in the store whatever happens.
    pub fn run(&self, time_budget: Option<Duration>, observer: &mut dyn SearchObserver) -> Result<Outcome> {
        let space = SearchSpace::default();
        let mut strategy = build(self.config.strategy, &space, &self.config.strategy_config, self.config.seed)?;
        let loop_config = self.loop_config();
        self.record_meta("running")?;
        let mut search = Search {
            store: &self.store,
            space: &space,
            strategy: strategy.as_mut(),
            config: &loop_config,
            reward: Reward::new(self.config.target_ms, self.config.constraint)?,
            accuracy: match &self.workers {
                Some(w) => w,
                None => &self.trainer,
            },
            latency: &self.latency,
            time_budget,
        };
        let outcome = search.run(observer)?;
        self.record_meta(if outcome.out_of_time { "paused" } else { "finished" })?;
        self.write_report()?;
        Ok(outcome)
    }

    pub fn report_path(&self) -> PathBuf {
        self.dir.join("report.html")
    }

    /// Writes RUN/report.html; returns the Pareto front.
    pub fn write_report(&self) -> Result<Vec<Trial>> {
        let trials = self.store.trials()?;
        let run =
            ReportRun { label: self.dir.display().to_string(), trials, meta: ReportMeta::from_store(&self.store)? };
        write_report(std::slice::from_ref(&run), &self.report_path())?;
        Ok(pareto_front(&run.trials).into_iter().cloned().collect())
    }
}
