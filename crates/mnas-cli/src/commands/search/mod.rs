//! `mnas search`: the MnasNet search loop on this machine, with a crash-proof trial store.

mod config;
mod latency;
mod progress;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mnas_pipeline::{ProxySettings, ProxyTrainer};
use mnas_search::pareto::pareto_front;
use mnas_search::report::{blocks_of, describe_constraint, write_report, ReportMeta, ReportRun};
use mnas_search::search_loop::{deployed_arch, LatencyEvaluator, LatencyResult, LoopConfig, Search};
use mnas_search::store::{meta_keys, RunStore};
use mnas_search::strategies::{build, StrategyConfig};
use mnas_search::{Constraint, Reward, StrategyKind, TrialStatus};
use mnas_space::SearchSpace;

use self::config::{agree, LatencySource, RunConfig};
use self::latency::DeviceLatency;
use self::progress::SearchProgress;
use super::latency::report::default_store;
use super::proxy_args::{describe, ProxyArgs};

pub const LONG_ABOUT: &str = "Search the MnasNet space for models that are accurate and fast on this device.\n\n\
Every step the strategy (default: the paper's LSTM controller trained with PPO) proposes models; each is trained \
briefly on the proxy task (held-out accuracy) and measured on the device at the deployment resolution (batch 1), \
and scored with R = ACC * (LAT/T)^w (w = alpha if LAT <= T, else beta). Every trial lands in RUN/search.sqlite \
before the next starts: after a crash or kill -9, `mnas search --resume RUN` continues where it stopped.\n\n\
With no arguments it searches on the embedded CIFAR-10 subset with local CPU latency and finishes in about \
15 minutes on 2 cores. Then: `mnas report RUN`, `mnas pareto RUN`, `mnas export-arch RUN --top 3`.";

/// The default search must end within 15 minutes on 2 cores, whatever the machine's speed.
const DEFAULT_BUDGET_MINUTES: f64 = 14.0;

/// `--budget`, or the default search's promise when the user sized nothing.
fn budget_minutes(args: &SearchArgs) -> Option<f64> {
    let sized = args.trials.is_some() || args.resume.is_some();
    args.budget.or((!sized).then_some(DEFAULT_BUDGET_MINUTES))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConstraintArg {
    /// alpha = beta = -0.07: the paper's search; explores a range of latencies.
    Soft,
    /// alpha = 0, beta = -1: crowds just under the target.
    Hard,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Run directory (default: runs/search-<unix time>).
    #[arg(long, conflicts_with = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the search in this run directory (after a crash, kill -9 or --budget).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Search strategy [default: ppo].
    #[arg(long, value_enum)]
    pub strategy: Option<StrategyArg>,
    /// Trials in total (rounded up to whole steps) [default: 40].
    #[arg(long)]
    pub trials: Option<usize>,
    /// Models proposed per controller step [default: 4].
    #[arg(long)]
    pub models_per_step: Option<usize>,
    /// Wall-clock minutes for this invocation: no step starts that would overrun it (judged by
    /// the last step); `--resume` continues later [default: 14 for a new search without --trials,
    /// else none].
    #[arg(long)]
    pub budget: Option<f64>,
    /// Seed of the strategy and the trials' training [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Reward shape [default: soft].
    #[arg(long, value_enum, conflicts_with_all = ["alpha", "beta"])]
    pub constraint: Option<ConstraintArg>,
    /// Exponent below the target (with --beta instead of --constraint).
    #[arg(long, allow_negative_numbers = true, requires = "beta")]
    pub alpha: Option<f64>,
    /// Exponent above the target.
    #[arg(long, allow_negative_numbers = true, requires = "alpha")]
    pub beta: Option<f64>,
    /// Target latency T in ms, or `auto`: MobileNetV2-1.0 measured on the same device (the
    /// paper's T was that of a MobileNetV2-like model) [default: auto].
    #[arg(long, allow_hyphen_values = true)]
    pub target: Option<String>,
    /// Deployment resolution: latency is measured there, whatever the proxy trains at [default: 224].
    #[arg(long)]
    pub resolution: Option<u32>,
    #[command(flatten)]
    pub proxy: ProxyArgs,
    /// Where latency is measured: `local` (this machine, pinned core) or agents on the target
    /// device(s), `tcp://HOST:PORT[,tcp://HOST2:PORT]` (`mnas agent` there) [default: local].
    #[arg(long, value_name = "local|tcp://HOST:PORT,...", conflicts_with_all = ["latency_engine", "latency_lut"])]
    pub latency_device: Option<String>,
    /// The agents' token (or MNAS_AGENT_TOKEN).
    #[arg(long, env = "MNAS_AGENT_TOKEN", hide_env_values = true)]
    pub latency_token: Option<String>,
    /// Measure with your own engine: `cmd:TEMPLATE`, run on each exported ONNX model with
    /// {model} substituted (see `mnas latency --help` for the output formats it reads).
    #[arg(long, value_name = "cmd:TEMPLATE", conflicts_with = "latency_lut")]
    pub latency_engine: Option<String>,
    /// Predict latency from a lookup table (`mnas latency build-lut`) instead of measuring.
    #[arg(long, value_name = "LUT.json")]
    pub latency_lut: Option<PathBuf>,
    /// Timed runs per latency measurement [default: 10].
    #[arg(long)]
    pub latency_runs: Option<usize>,
    /// Threads of the latency engine [default: 1, the paper's single big core].
    #[arg(long)]
    pub latency_threads: Option<usize>,
    /// Latency store shared across runs [default: the one `mnas latency` uses].
    #[arg(long)]
    pub latency_store: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// The paper's LSTM controller trained with PPO.
    Ppo,
    /// Uniform random samples (the baseline).
    Random,
    /// Regularized (aging) evolution.
    Evolution,
}

impl From<StrategyArg> for StrategyKind {
    fn from(s: StrategyArg) -> StrategyKind {
        match s {
            StrategyArg::Ppo => StrategyKind::Ppo,
            StrategyArg::Random => StrategyKind::Random,
            StrategyArg::Evolution => StrategyKind::Evolution,
        }
    }
}

fn constraint_of(args: &SearchArgs) -> Option<Constraint> {
    match (args.constraint, args.alpha, args.beta) {
        (Some(ConstraintArg::Soft), _, _) => Some(Constraint::Soft),
        (Some(ConstraintArg::Hard), _, _) => Some(Constraint::Hard),
        (None, Some(alpha), Some(beta)) => Some(Constraint::Custom { alpha, beta }),
        _ => None,
    }
}

/// The search's proxy recipe when nothing overrides it.
pub fn default_proxy() -> ProxySettings {
    ProxySettings::default()
}

fn proxy_of(args: &SearchArgs) -> ProxySettings {
    args.proxy.apply(&default_proxy())
}

/// The latency source the options describe; `None` when no latency option was given.
fn latency_source_of(args: &SearchArgs) -> Result<Option<LatencySource>> {
    let threads = args.latency_threads.unwrap_or(1);
    let runs = args.latency_runs.unwrap_or(10);
    let warmup = 3;
    if let Some(path) = &args.latency_lut {
        let lut = mnas_latency::lut::Lut::load(path).with_context(|| format!("latency table {}", path.display()))?;
        return Ok(Some(LatencySource::Lut { path: path.display().to_string(), fingerprint_key: lut.fingerprint_key }));
    }
    if let Some(command) = &args.latency_engine {
        return Ok(Some(LatencySource::Engine { command: command.clone(), threads, runs, warmup }));
    }
    match args.latency_device.as_deref() {
        Some("local") | None => {
            let given = args.latency_device.is_some() || args.latency_runs.is_some() || args.latency_threads.is_some();
            Ok(given.then_some(LatencySource::Local { threads, runs, warmup }))
        }
        Some(list) => {
            let addrs: Vec<String> = list.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
            if addrs.is_empty() || !addrs.iter().all(|a| a.starts_with("tcp://")) {
                bail!("--latency-device must be `local` or tcp://HOST:PORT[,tcp://HOST:PORT...], got `{list}`");
            }
            Ok(Some(LatencySource::Agents { addrs, threads, runs, warmup }))
        }
    }
}

fn check_resume_agrees(args: &SearchArgs, stored: &RunConfig) -> Result<()> {
    agree("--strategy", args.strategy.map(StrategyKind::from), &stored.strategy)?;
    agree("--trials", args.trials, &stored.trials)?;
    agree("--models-per-step", args.models_per_step, &stored.models_per_step)?;
    agree("--seed", args.seed, &stored.seed)?;
    agree("--constraint/--alpha/--beta", constraint_of(args), &stored.constraint)?;
    agree("--target", args.target.clone(), &stored.target)?;
    agree("--resolution", args.resolution, &stored.deploy_resolution)?;
    let proxy = args.proxy.apply(&stored.proxy);
    if proxy != stored.proxy {
        bail!(
            "the proxy options contradict this run's stored proxy ({}); a resumed search keeps its settings \
             (start a new run with --out to change them)",
            describe(&stored.proxy)
        );
    }
    agree("the latency options", latency_source_of(args)?, &stored.latency)?;
    Ok(())
}

fn default_run_dir() -> PathBuf {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from("runs").join(format!("search-{secs}"))
}

fn open_latency(args: &SearchArgs, source: &LatencySource) -> Result<DeviceLatency> {
    let store = args.latency_store.clone().or_else(default_store);
    DeviceLatency::open(source, args.latency_token.as_deref(), store.as_deref())
}

/// T in ms from `--target`: a number, or `auto` = MobileNetV2-1.0 on this device.
fn resolve_target(target: &str, latency: &dyn LatencyEvaluator, resolution: u32, classes: u32) -> Result<f64> {
    if target == "auto" {
        let mut mnv2 = mnas_space::lookup("mobilenetv2_100")?;
        mnv2.resolution = resolution;
        mnv2.num_classes = classes;
        eprintln!(
            "target: measuring MobileNetV2-1.0 at {resolution}x{resolution} on the latency device (--target auto)"
        );
        return match latency.latency(&mnv2) {
            LatencyResult::Ok { median_ms, .. } => Ok(median_ms),
            LatencyResult::Failed(reason) => {
                bail!("--target auto: measuring MobileNetV2-1.0 failed ({reason}); give --target MS instead")
            }
        };
    }
    match target.parse::<f64>() {
        Ok(ms) if ms.is_finite() && ms > 0.0 => Ok(ms),
        _ => bail!("--target must be a latency in ms (> 0) or `auto`, got `{target}`"),
    }
}

fn proxy_trainer(proxy: &ProxySettings) -> Result<ProxyTrainer> {
    let trainer = ProxyTrainer::new(proxy.clone()).context("the proxy task")?;
    let d = &trainer.data;
    eprintln!(
        "proxy task: {} — {} train images per trial, {} held-out, {}x{}; {}",
        d.name,
        d.train.len(),
        d.val.len(),
        d.train.size,
        d.train.size,
        describe(proxy)
    );
    Ok(trainer)
}

fn new_run(args: &SearchArgs, dir: &Path) -> Result<(RunStore, RunConfig, DeviceLatency, ProxyTrainer)> {
    if dir.join("search.sqlite").exists() {
        bail!("{} already holds a search: continue it with --resume {}", dir.display(), dir.display());
    }
    let proxy = proxy_of(args);
    let latency_source = latency_source_of(args)?.unwrap_or(LatencySource::Local { threads: 1, runs: 10, warmup: 3 });
    let latency = open_latency(args, &latency_source)?;
    let deploy_resolution = args.resolution.unwrap_or(224);
    let loop_probe = LoopConfig {
        models_per_step: args.models_per_step.unwrap_or(4),
        max_trials: args.trials.unwrap_or(40),
        deploy_resolution,
        num_classes: 10,
        seed: 0,
    };
    loop_probe.validate()?;
    let trainer = proxy_trainer(&proxy)?;
    let classes = trainer.data.classes.len() as u32;
    let probe = LoopConfig { num_classes: classes, ..loop_probe.clone() };
    latency.check_covers(&deployed_arch(
        &SearchSpace::default(),
        &probe,
        &vec![0; SearchSpace::default().num_tokens()],
    )?)?;
    let target = args.target.clone().unwrap_or_else(|| "auto".into());
    let constraint = constraint_of(args).unwrap_or(Constraint::Soft);
    let target_ms = resolve_target(&target, &latency, deploy_resolution, classes)?;
    Reward::new(target_ms, constraint)?;
    let config = RunConfig {
        mnas_version: env!("CARGO_PKG_VERSION").into(),
        strategy: args.strategy.map(StrategyKind::from).unwrap_or(StrategyKind::Ppo),
        strategy_config: StrategyConfig::default(),
        seed: args.seed.unwrap_or(0),
        trials: loop_probe.max_trials,
        models_per_step: loop_probe.models_per_step,
        constraint,
        target,
        target_ms,
        deploy_resolution,
        num_classes: classes,
        proxy,
        latency: latency_source,
    };
    let store = RunStore::create(dir, &serde_json::to_value(&config)?)?;
    Ok((store, config, latency, trainer))
}

pub fn run(args: SearchArgs) -> Result<()> {
    if let Some(b) = args.budget {
        if !(b.is_finite() && b > 0.0) {
            bail!("--budget must be a positive number of minutes, got {b}");
        }
    }
    let (dir, store, config, latency, trainer) = match &args.resume {
        Some(dir) => {
            let store = RunStore::open(dir)?;
            let config: RunConfig = serde_json::from_value(store.config()?)
                .with_context(|| format!("{}: the stored search config is not one this mnas reads", dir.display()))?;
            check_resume_agrees(&args, &config)?;
            let latency = open_latency(&args, &config.latency)?;
            let trainer = proxy_trainer(&config.proxy)?;
            (dir.clone(), store, config, latency, trainer)
        }
        None => {
            let dir = args.out.clone().unwrap_or_else(default_run_dir);
            let (store, config, latency, trainer) = new_run(&args, &dir)?;
            (dir, store, config, latency, trainer)
        }
    };
    let space = SearchSpace::default();
    if let Ok(sample) = space.decode(&vec![0; space.num_tokens()]) {
        for warning in trainer.warnings(&sample) {
            eprintln!("warning: {warning}");
        }
    }
    let mut strategy = build(config.strategy, &space, &config.strategy_config, config.seed)?;
    let loop_config = LoopConfig {
        models_per_step: config.models_per_step,
        max_trials: config.trials,
        deploy_resolution: config.deploy_resolution,
        num_classes: config.num_classes,
        seed: config.seed,
    };
    let reward = Reward::new(config.target_ms, config.constraint)?;
    eprintln!(
        "search: {} in {}, {} trials ({} per step), T = {:.2} ms ({}), {:?} constraint, latency at {}x{} batch 1",
        config.strategy.as_str(),
        dir.display(),
        loop_config.total_steps() as usize * config.models_per_step,
        config.models_per_step,
        config.target_ms,
        config.target,
        config.constraint,
        config.deploy_resolution,
        config.deploy_resolution,
    );
    let device = latency.describe();
    record_meta(&store, &config, "running", &device)?;
    let done = store.trials()?;
    let mut progress = SearchProgress::new(loop_config.total_steps() as usize * config.models_per_step, done);
    let mut search = Search {
        store: &store,
        space: &space,
        strategy: strategy.as_mut(),
        config: &loop_config,
        reward,
        accuracy: &trainer,
        latency: &latency,
        time_budget: budget_minutes(&args).map(|m| Duration::from_secs_f64(m * 60.0)),
    };
    let outcome = search.run(&mut progress);
    progress.finish();
    let outcome = outcome?;
    record_meta(&store, &config, if outcome.out_of_time { "paused" } else { "finished" }, &device)?;
    finish_report(&dir, &store)?;
    if outcome.out_of_time {
        println!(
            "budget spent after {} trials ({} run now); continue with: mnas search --resume {}",
            outcome.trials_done,
            outcome.trials_run,
            dir.display()
        );
    }
    Ok(())
}

/// Writes what `mnas report` reads besides the trials: the resolved target, the strategy, the
/// constraint in words, the latency device, and whether the search is running or finished.
fn record_meta(store: &RunStore, config: &RunConfig, status: &str, device: &str) -> Result<()> {
    store.set_meta(meta_keys::TARGET_MS, &config.target_ms.to_string())?;
    store.set_meta(meta_keys::STRATEGY, config.strategy.as_str())?;
    store.set_meta(meta_keys::CONSTRAINT, &describe_constraint(config.constraint))?;
    store.set_meta(meta_keys::DEVICE, device)?;
    store.set_meta(meta_keys::STATUS, status)?;
    Ok(())
}

/// Writes RUN/report.html and prints the front and where the report is.
fn finish_report(dir: &Path, store: &RunStore) -> Result<()> {
    let trials = store.trials()?;
    let out = dir.join("report.html");
    let run = ReportRun { label: dir.display().to_string(), trials, meta: ReportMeta::from_store(store)? };
    write_report(std::slice::from_ref(&run), &out)?;
    let front = pareto_front(&run.trials);
    let failed = run.trials.iter().filter(|t| t.status == TrialStatus::Failed).count();
    println!("{} trials ({failed} failed); Pareto front ({} models):", run.trials.len(), front.len());
    for t in &front {
        println!(
            "  step {:>3}.{:<2} acc {:5.1}%  {:8.2} ms  reward {:.4}  {}",
            t.step,
            t.index,
            100.0 * t.accuracy.unwrap_or(0.0),
            t.latency_ms.unwrap_or(0.0),
            t.reward,
            blocks_of(&t.arch)
        );
    }
    println!("report: {}", out.display());
    println!("next: mnas pareto {0}   |   mnas export-arch {0} --top 3", dir.display());
    Ok(())
}
