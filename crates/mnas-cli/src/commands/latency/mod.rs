//! `mnas latency`: inference latency of an architecture on this machine, through the latency store.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use indicatif::ProgressBar;
use mnas_latency::{measure, measure_cached_on, BuiltIn, LocalEngine, MeasureOptions, Progress, Store};

pub mod lut;
pub mod remote;
pub mod report;

use self::report::{default_store, print_report};
use crate::commands::progress;
use crate::spec::{resolve, ArchOverrides};

/// The long help of `mnas latency` (`main.rs` attaches it; its one-line summary is the doc comment there).
pub const LONG_ABOUT: &str = "Measure inference latency: on this machine (batch 1, pinned core), on \
remote agents (--device tcp://HOST:PORT, `mnas agent` there), with ONNX Runtime in process (--engine ort) or \
your own engine (--engine cmd:...), \
or predicted from a lookup table (the build-lut / predict / lut-report subcommands).

The model gets random weights (weights do not change latency) and runs in inference form: BN \
folded into the convolutions, no autodiff. Each engine thread is pinned to its own core; after \
the warm-up, --runs timed forward passes give median / p10 / p90 / CV, and the runs are repeated \
(up to twice) when the CV exceeds --max-cv.

Results go to a SQLite store keyed by (arch, resolution, batch, threads, device fingerprint, \
engine): asking again on the same device answers from the store without measuring. Each \
measurement also records its pace: MobileNetV2 at 64 px timed on the same engine and cores right \
after it. A stored result whose pace was more than 15 % slower than the pace now (taken while \
another load, a VM's neighbours or a power mode slowed the machine) is measured again, not served \
(--max-slowdown).

Examples:
  mnas latency --arch mnasnet-a1 --per-layer
  mnas latency --arch mnasnet-a1 --device tcp://phone:7878 --token \"$T\"
  mnas latency --arch mnasnet-a1 --engine ort           ONNX Runtime in this process (pip wheel in .venv)
  mnas latency --arch mnasnet-a1 --engine \"cmd:onnxruntime_perf_test -I -r 50 {model}\"
  mnas latency build-lut --resolution 224 --out lut.json && mnas latency predict --arch FILE --lut lut.json";

/// Arguments of `mnas latency`.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct LatencyArgs {
    /// The lookup-table predictor: build-lut, predict, lut-report (`mnas latency --arch A` measures).
    #[command(subcommand)]
    pub command: Option<lut::LutCommand>,
    /// Architecture: a zoo name (mnasnet-a1, ...), an arch JSON file, block strings, or the one-line
    /// form outputs print (stem32|...|r224).
    #[arg(long, required = true)]
    pub arch: Option<String>,
    #[command(flatten)]
    pub overrides: ArchOverrides,
    /// Engine threads, each pinned to its own core.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed forward passes.
    #[arg(long, default_value_t = 50)]
    pub runs: usize,
    /// Untimed forward passes first.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Core to pin to (the first of them with --threads > 1); default: the last allowed core(s).
    #[arg(long)]
    pub core: Option<usize>,
    /// Largest coefficient of variation (std / mean) accepted before re-measuring.
    #[arg(long, default_value_t = 0.10)]
    pub max_cv: f64,
    /// A stored result taken while this machine ran more than this much slower than now (its
    /// pace against the pace now; 0.15 = 15 %) is measured again; `inf` serves it whatever the pace.
    #[arg(long, default_value_t = mnas_latency::measure::DEFAULT_MAX_SLOWDOWN)]
    pub max_slowdown: f64,
    /// Latency store [default: $XDG_CACHE_HOME/mnas/latency.sqlite, else ~/.cache/mnas/latency.sqlite].
    #[arg(long, value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Measure without reading or writing the store.
    #[arg(long, conflicts_with = "store")]
    pub no_store: bool,
    /// Measure even when the store has this arch, and replace the stored value.
    #[arg(long)]
    pub refresh: bool,
    /// Also time every layer (stem, blocks.i.j, head, classifier); always measures.
    #[arg(long)]
    pub per_layer: bool,
    /// Print the measurement as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub elsewhere: remote::ElsewhereArgs,
}

pub fn run(args: LatencyArgs) -> Result<()> {
    if let Some(cmd) = args.command {
        return lut::run(cmd);
    }
    let Some(spec) = args.arch.as_deref() else {
        bail!("pass --arch (or a subcommand: build-lut, predict, lut-report)")
    };
    let arch = resolve(spec, &args.overrides)?;
    let opts = MeasureOptions {
        threads: args.threads,
        runs: args.runs,
        warmup: args.warmup,
        batch: args.batch,
        max_cv: args.max_cv,
        max_slowdown: args.max_slowdown,
        core: args.core,
        per_layer: args.per_layer,
        ..MeasureOptions::default()
    };
    opts.validate()?;
    if args.elsewhere.is_set() {
        let store = remote::StoreArgs {
            store: args.store.clone(),
            no_store: args.no_store,
            refresh: args.refresh,
            json: args.json,
        };
        return remote::run(&args.elsewhere, &arch, &opts, &store);
    }
    // Fail on a thread count, core or engine this machine cannot honour before touching the store.
    measure::planned_cores(&opts)?;
    let engine: &dyn LocalEngine = match args.elsewhere.ort()? {
        Some(ort) => {
            if opts.per_layer {
                bail!("--per-layer times mnas's own engine; ONNX Runtime times whole passes (drop --engine ort)");
            }
            ort
        }
        None => &BuiltIn,
    };
    let store = if args.no_store {
        None
    } else {
        let Some(path) = args.store.clone().or_else(default_store) else {
            bail!("no cache directory (neither XDG_CACHE_HOME nor HOME is set): pass --store PATH or --no-store");
        };
        Some(Store::open(&path)?)
    };

    let bar = progress_bar(&opts);
    let on_progress = |p: Progress| {
        if let Some(bar) = &bar {
            match p {
                Progress::Start { attempt, total } => {
                    bar.set_length(total as u64);
                    bar.set_position(0);
                    bar.set_message(if attempt == 1 { "timing".to_string() } else { format!("re-timing ({attempt})") });
                }
                Progress::Run { done } => bar.set_position(done as u64),
                Progress::Layers { done, total } => {
                    bar.set_length(total as u64);
                    bar.set_message("per layer");
                    bar.set_position(done as u64);
                }
            }
        }
    };
    let run_measure = |a: &_, o: &_| measure::measure_on(engine, a, o, &on_progress);
    let outcome = match &store {
        None => run_measure(&arch, &opts).map(|m| (m, false)),
        Some(store) if args.refresh => run_measure(&arch, &opts).and_then(|m| store.put(&m).map(|()| (m, false))),
        Some(store) => measure_cached_on(store, engine, &arch, &opts, run_measure),
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let (m, cached) = outcome?;

    let store_path = store.as_ref().map(|s| s.path().display().to_string());
    if args.json {
        let out = serde_json::json!({
            "measurement": m,
            "fingerprint_key": m.fingerprint.key(),
            "cached": cached,
            "store": store_path,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    print_report(&m, cached, store_path.as_deref(), &opts);
    Ok(())
}

/// A bar on stderr for the timed runs, only when stderr is a terminal.
fn progress_bar(opts: &MeasureOptions) -> Option<ProgressBar> {
    let bar = progress::bar(Some(opts.runs as u64), "{msg:>12} [{bar:30}] {pos}/{len} runs, {elapsed}")?;
    bar.set_message("warming up");
    Some(bar)
}
