//! `mnas search`: the MnasNet search loop on this machine, with a crash-proof trial store.

mod progress;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mnas_pipeline::latency::{LatencyAccess, LatencySpec, LocalEngineKind};
use mnas_pipeline::search_run::{PreparedRun, SearchRequest, SetupObserver};
use mnas_pipeline::{PipelineError, ProxyTrainer};
use mnas_search::report::blocks_of;
use mnas_search::{Constraint, StrategyKind, TrialStatus};
use mnas_space::SearchSpace;

use self::progress::{SearchProgress, WorkerLines};
use super::latency::report::default_store;
use super::proxy_args::{describe, ProxyArgs};

pub const LONG_ABOUT: &str = "Search the MnasNet space for models that are accurate and fast on this device.\n\n\
Every step the strategy (default: the paper's LSTM controller trained with PPO) proposes models; each is trained \
briefly on the proxy task (held-out accuracy) and measured on the device at the deployment resolution (batch 1), \
and scored with R = ACC * (LAT/T)^w (w = alpha if LAT <= T, else beta). Every trial lands in RUN/search.sqlite \
before the next starts: after a crash or kill -9, `mnas search --resume RUN` continues where it stopped.\n\n\
With no arguments it searches on the embedded CIFAR-10 subset with local CPU latency and finishes in about \
15 minutes on 2 cores. Then: `mnas report RUN`, `mnas pareto RUN`, `mnas export-arch RUN --top 3`.\n\nThe default proxy (chosen with `mnas bench proxy`, README \"Proxy fidelity\"): width x0.5 and stem stride 1 during proxy training (the last blocks see 2x2 maps at 32 px), one seed for every model, no dropout, no augmentation, 7,000 train images once (batch 32, SGD lr 0.025, 5 % warm-up, linear decay, label smoothing 0.1), held-out top-1 on 2,000 images: about 14 s per model on 2 cores. It ranks 24 reference models (trained 26x longer) with Kendall tau 0.58 per seed (target 0.6; parameter count 0.07, MACs 0.15), and two seeds agree with tau 0.74. No budget measured on 2 cores reaches 0.6 per seed with accuracy: all 45,000 CIFAR-10 train images for 1.33 epochs with pad-crop + flip (about 100 s per model) rank with 0.56 per seed. Scored by held-out loss, that budget reaches 0.62 per seed (seeds agree with 0.71): for more cores, workers or a GPU, `--data cifar10-jpg.tar.gz --val-fraction 0.1 --proxy-images 45000 --proxy-epochs 1.33 --proxy-augment --proxy-score val-loss` (the reward then multiplies exp(-held-out loss), 0.1 at chance like accuracy; trials keep their accuracy). bench/proxy/recipes.sh measures what other budgets buy.";

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
    /// Where latency is measured: `local` (this machine, pinned core), agents on the target
    /// device(s), `tcp://HOST:PORT[,tcp://HOST2:PORT]` (`mnas agent` there), or `broker:CLASS`
    /// (any `mnas agent --broker --device-class CLASS`; needs --broker) [default: local].
    #[arg(long, value_name = "local|tcp://HOST:PORT,...|broker:CLASS", conflicts_with_all = ["latency_engine", "latency_lut"])]
    pub latency_device: Option<String>,
    /// The agents' token (or MNAS_AGENT_TOKEN).
    #[arg(long, env = "MNAS_AGENT_TOKEN", hide_env_values = true)]
    pub latency_token: Option<String>,
    /// Measure with ONNX Runtime in this process (`ort`), or with your own engine: `cmd:TEMPLATE`,
    /// run on each exported ONNX model with {model} substituted (see `mnas latency --help`).
    #[arg(long, value_name = "ort|cmd:TEMPLATE", conflicts_with = "latency_lut")]
    pub latency_engine: Option<String>,
    /// libonnxruntime.so for --latency-engine ort [default: $MNAS_ORT_LIB, else the onnxruntime
    /// wheel of $VIRTUAL_ENV or ./.venv].
    #[arg(long, value_name = "PATH", env = "MNAS_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
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
    /// Dispatch trials to `mnas worker`s through this broker instead of training here:
    /// redis://[user:password@]HOST:PORT, rediss://..., unix:///PATH[?pass=...] (or
    /// MNAS_BROKER_URL). Needed again with --resume for such a run.
    #[arg(long, env = "MNAS_BROKER_URL", hide_env_values = true)]
    pub broker: Option<String>,
    /// With --broker: train the trials on this machine anyway (the broker then only serves
    /// --latency-device broker:CLASS).
    #[arg(long, requires = "broker")]
    pub train_here: bool,
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

/// The latency source the options describe; `None` when no latency option was given.
fn latency_spec_of(args: &SearchArgs) -> Result<Option<LatencySpec>> {
    let threads = args.latency_threads.unwrap_or(1);
    let runs = args.latency_runs.unwrap_or(10);
    let warmup = 3;
    if let Some(path) = &args.latency_lut {
        return Ok(Some(LatencySpec::lut(path).with_context(|| format!("latency table {}", path.display()))?));
    }
    match args.latency_engine.as_deref() {
        Some("ort") => return Ok(Some(LatencySpec::Local { threads, runs, warmup, engine: LocalEngineKind::Ort })),
        Some(command) => return Ok(Some(LatencySpec::Engine { command: command.to_string(), threads, runs, warmup })),
        None => {}
    }
    if let Some(class) = args.latency_device.as_deref().and_then(|d| d.strip_prefix("broker:")) {
        return Ok(Some(LatencySpec::Broker { class: class.to_string(), threads, runs, warmup }));
    }
    match args.latency_device.as_deref() {
        Some("local") | None => {
            let given = args.latency_device.is_some() || args.latency_runs.is_some() || args.latency_threads.is_some();
            Ok(given.then_some(LatencySpec::Local { threads, runs, warmup, engine: LocalEngineKind::BuiltIn }))
        }
        Some(list) => {
            let addrs: Vec<String> = list.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
            if addrs.is_empty() || !addrs.iter().all(|a| a.starts_with("tcp://")) {
                bail!(
                    "--latency-device must be `local`, tcp://HOST:PORT[,tcp://HOST:PORT...] or broker:CLASS, got `{list}`"
                );
            }
            Ok(Some(LatencySpec::Agents { addrs, threads, runs, warmup }))
        }
    }
}

fn default_run_dir() -> PathBuf {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from("runs").join(format!("search-{secs}"))
}

/// The option behind a setting the library names, for error messages.
fn flag_of(setting: &str) -> &'static str {
    match setting {
        "strategy" => "--strategy",
        "trial budget" => "--trials",
        "models per step" => "--models-per-step",
        "seed" => "--seed",
        "constraint" => "--constraint/--alpha/--beta",
        "target" => "--target",
        "deployment resolution" => "--resolution",
        "proxy recipe" => "the --proxy-* / --data options",
        _ => "the latency options",
    }
}

/// Library errors in the words of the command line.
fn in_cli_words(e: PipelineError) -> anyhow::Error {
    match e {
        PipelineError::Contradicts { setting, given, stored } => anyhow::anyhow!(
            "{} {given} contradicts this run's stored setting {stored}; a resumed search keeps its settings \
             (start a new run with --out to change them)",
            flag_of(setting)
        ),
        PipelineError::Run(m) if m.starts_with("the target must be") => anyhow::anyhow!("--{}", &m[4..]),
        PipelineError::Run(m) if m.starts_with("the automatic target") => {
            anyhow::anyhow!("--target auto{}", &m["the automatic target".len()..])
        }
        other => other.into(),
    }
}

/// Prints what the set-up does.
struct SetupLines;

impl SetupObserver for SetupLines {
    fn on_target_measure(&mut self, r: u32) {
        eprintln!("target: MobileNetV2-1.0 at {r}x{r} from the search's latency source (measured, or predicted by --latency-lut) (--target auto)");
    }

    fn on_proxy_ready(&mut self, trainer: &ProxyTrainer) {
        let d = &trainer.data;
        eprintln!(
            "proxy task: {} — {} train images per trial, {} held-out, {}x{}; {}",
            d.name,
            d.train.len(),
            d.val.len(),
            d.train.size,
            d.train.size,
            describe(&trainer.settings)
        );
    }
}

pub fn run(args: SearchArgs) -> Result<()> {
    if let Some(b) = args.budget {
        if !(b.is_finite() && b > 0.0) {
            bail!("--budget must be a positive number of minutes, got {b}");
        }
    }
    let apply_proxy = |base: &_| args.proxy.apply(base);
    let request = SearchRequest {
        strategy: args.strategy.map(StrategyKind::from),
        trials: args.trials,
        models_per_step: args.models_per_step,
        seed: args.seed,
        constraint: constraint_of(&args),
        target: args.target.clone(),
        deploy_resolution: args.resolution,
        proxy: &apply_proxy,
        latency: latency_spec_of(&args)?,
        access: LatencyAccess {
            token: args.latency_token.clone(),
            store: args.latency_store.clone().or_else(default_store),
            ort_lib: args.ort_lib.clone(),
            broker: args.broker.clone(),
        },
        broker: args.broker.clone().filter(|_| !args.train_here),
    };
    let run = match &args.resume {
        Some(dir) => PreparedRun::resume(dir, &request, &mut SetupLines),
        None => {
            let dir = args.out.clone().unwrap_or_else(default_run_dir);
            if dir.join(mnas_search::store::STORE_FILE).exists() {
                bail!("{} already holds a search: continue it with --resume {}", dir.display(), dir.display());
            }
            PreparedRun::create(&dir, &request, &mut SetupLines)
        }
    }
    .map_err(in_cli_words)?;
    let space = SearchSpace::default();
    if let Ok(sample) = space.decode(&vec![0; space.num_tokens()]) {
        for warning in run.trainer.warnings(&sample) {
            eprintln!("warning: {warning}");
        }
    }
    let config = &run.config;
    let loop_config = run.loop_config();
    let total = loop_config.total_steps() as usize * config.models_per_step;
    eprintln!(
        "search: {} in {}, {} trials ({} per step), T = {:.2} ms ({}), {:?} constraint, latency at {}x{} batch 1",
        config.strategy.as_str(),
        run.dir.display(),
        total,
        config.models_per_step,
        config.target_ms,
        config.target,
        config.constraint,
        config.deploy_resolution,
        config.deploy_resolution,
    );
    let mut progress = SearchProgress::new(total, run.store.trials()?);
    if let Some(workers) = &run.workers {
        eprintln!("trials go to workers through {}", workers.broker.label());
        *workers.watch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(WorkerLines(progress.printer())));
    }
    let budget = budget_minutes(&args).map(|m| Duration::from_secs_f64(m * 60.0));
    let outcome = run.run(budget, &mut progress);
    progress.finish();
    let outcome = outcome.map_err(in_cli_words)?;
    if let Some(workers) = &run.workers {
        print_round_trips(&workers.round_trips.lock().unwrap_or_else(|p| p.into_inner()));
    }
    print_front(&run)?;
    if outcome.out_of_time {
        println!(
            "budget spent after {} trials ({} run now); continue with: mnas search --resume {}",
            outcome.trials_done,
            outcome.trials_run,
            run.dir.display()
        );
    }
    Ok(())
}

/// What the broker cost: dispatch to result against the worker's own time, per trial.
fn print_round_trips(trips: &[(f64, f64)]) {
    if trips.is_empty() {
        return;
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let trip = median(trips.iter().map(|t| t.0).collect());
    let work = median(trips.iter().map(|t| t.1).collect());
    let over = median(trips.iter().map(|t| t.0 - t.1).collect());
    println!(
        "workers: {} results this session; per trial (median): dispatch to result {trip:.3} s, on the worker \
         {work:.3} s, difference {:.0} ms (queueing included when all workers were busy)",
        trips.len(),
        over * 1000.0
    );
}

/// Prints the front and where the report is.
fn print_front(run: &PreparedRun) -> Result<()> {
    let trials = run.store.trials()?;
    let front = run.write_report()?;
    let failed = trials.iter().filter(|t| t.status != TrialStatus::Ok).count();
    println!("{} trials ({failed} failed); Pareto front ({} models):", trials.len(), front.len());
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
    println!("report: {}", run.report_path().display());
    println!("next: mnas pareto {0}   |   mnas export-arch {0} --top 3", run.dir.display());
    Ok(())
}
