//! `mnas latency build-lut | predict | lut-report`: the lookup-table latency predictor.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use mnas_latency::lut::Accuracy;
use mnas_latency::lut_build::{self, LutOptions, LutProgress, StageTimer};
use mnas_latency::{lut_report, Lut, LutError, MeasureOptions, Store};
use mnas_space::{Arch, SearchSpace};

use super::report::default_store;
use crate::commands::engine_arg::EngineArg;
use crate::commands::progress;
use crate::spec::{resolve, ArchOverrides};
use crate::table::thousands;

/// The lookup-table subcommands of `mnas latency`.
#[derive(Subcommand, Debug)]
pub enum LutCommand {
    /// Measure every distinct layer of the search space once: a per-layer latency lookup table.
    #[command(long_about = BUILD_ABOUT)]
    BuildLut(BuildLutArgs),
    /// Predict an arch's latency from a lookup table, in microseconds, without running it.
    Predict(PredictArgs),
    /// How well a lookup table predicts measured latency on held-out random archs (and how badly MACs do).
    #[command(long_about = REPORT_ABOUT)]
    LutReport(ReportArgs),
}

const BUILD_ABOUT: &str = "Measure every distinct layer of the search space once: a per-layer latency lookup table.

A layer's cost depends on its op, kernel, expansion, SE, skip, input and output channels, stride \
and input size, all fixed by its own block's decisions and the previous block's filter choice. \
build-lut enumerates each such configuration once (plus the stem and the three possible heads), \
times it alone in inference form (BN folded) on a pinned core (--warmup untimed, then --runs \
timed passes, median kept), then measures --fit-archs random archs end to end and fits \
`latency = a * (sum of their layers) + b`. `mnas latency predict` then answers in microseconds.

With --engine ort the table predicts ONNX Runtime (in this process, the library found as for \
`mnas latency --engine ort`): each configuration is exported as an ONNX graph of its own and timed \
in its own session, and the fit archs are measured end to end on ORT. predict and lut-report load \
the engine the table names (--ort-lib where it is not discovered).

Against a machine whose speed drifts, entries are timed in a seeded shuffled order (not block by \
block), an entry whose spread exceeds --max-cv is timed again (up to twice, the tightest kept), and \
a reference layer is re-timed every 100 entries: when it moved by more than 5 %, those 100 are \
timed again.

The table is saved atomically every 30 s; --resume continues an interrupted build. It is only valid \
on this device, at this resolution and thread count: the device fingerprint is stored with it.

Examples:
  mnas latency build-lut --resolution 224 --classes 10 --out lut224.json
  mnas latency build-lut --resolution 224 --classes 10 --engine ort --out lut224-ort.json";

const REPORT_ABOUT: &str = "How well a lookup table predicts measured latency on held-out random archs.

Samples --archs random archs of the search space (with --seed, which must differ from the LUT's fit \
seed), measures each end to end (through the latency store: archs measured before cost nothing), \
and prints the share of predictions within +-10%, the RMSE, and Kendall's tau-b between prediction \
and measurement: how well the predictor ranks models, which is what a search needs. Beside it, the \
tau-b of MACs vs measured latency: the paper's point that FLOPs rank latency poorly.";

#[derive(Args, Debug)]
pub struct BuildLutArgs {
    /// Input resolution the table is measured at (a LUT only predicts archs at this resolution).
    #[arg(long, default_value_t = 224)]
    pub resolution: u32,
    /// Classes of the classifier (a search on CIFAR-10 deploys 10-class models).
    #[arg(long, default_value_t = 1000)]
    pub classes: u32,
    /// Engine threads, each pinned to its own core.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// The engine the table predicts: `built-in` (mnas's own) or `ort` (ONNX Runtime in this
    /// process, each stage timed as an ONNX graph of its own).
    #[arg(long, value_enum, default_value = "built-in")]
    pub engine: EngineArg,
    #[command(flatten)]
    pub ort: OrtLibArg,
    /// Timed passes per layer (the median is kept; 20 measured 98 % within +-10 % where 10 gave 89 %).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Untimed passes per layer first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Core to pin to; default: the last allowed core(s).
    #[arg(long)]
    pub core: Option<usize>,
    /// An entry whose spread (coefficient of variation) exceeds this is timed again, up to twice.
    #[arg(long, default_value_t = 0.05)]
    pub max_cv: f64,
    /// Random archs measured end to end for the overhead fit.
    #[arg(long, default_value_t = 50)]
    pub fit_archs: usize,
    /// Seed of the fit archs (lut-report refuses the same seed, so its archs are held out).
    #[arg(long, default_value_t = 1)]
    pub fit_seed: u64,
    /// Timed runs per fit arch and pass.
    #[arg(long, default_value_t = 20)]
    pub fit_runs: usize,
    /// Passes over the fit archs, each measuring all of them; a point is the median of its
    /// passes (a machine whose speed moves in spells of seconds, as a VM's does, then reads
    /// each arch at several speeds).
    #[arg(long, default_value_t = 3)]
    pub fit_passes: usize,
    /// Where to write the table (JSON).
    #[arg(long, default_value = "lut.json")]
    pub out: PathBuf,
    /// Continue the build in --out (same resolution, runs, threads and device) instead of starting over.
    #[arg(long)]
    pub resume: bool,
    /// Count the configurations and exit without measuring.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct OrtLibArg {
    /// libonnxruntime.so, for a table of ONNX Runtime [default: $MNAS_ORT_LIB, else the
    /// onnxruntime wheel of $VIRTUAL_ENV or ./.venv].
    #[arg(long, value_name = "PATH", env = "MNAS_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Architecture: a zoo name, an arch JSON file, block strings (see `mnas space sample`), or the
    /// one-line form outputs print.
    #[arg(long, required_unless_present = "tokens", conflicts_with = "tokens")]
    pub arch: Option<String>,
    /// Or the search-space tokens (42, space or comma separated), decoded in the LUT's space and resolution.
    #[arg(long)]
    pub tokens: Option<String>,
    #[command(flatten)]
    pub overrides: ArchOverrides,
    /// The lookup table (from `mnas latency build-lut`).
    #[arg(long)]
    pub lut: PathBuf,
    /// Use a LUT measured on another device or build anyway (with a warning).
    #[arg(long)]
    pub any_device: bool,
    #[command(flatten)]
    pub ort: OrtLibArg,
    /// Also print every stage's entry.
    #[arg(long)]
    pub stages: bool,
    /// Print the prediction as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The lookup table to judge.
    #[arg(long)]
    pub lut: PathBuf,
    /// Held-out random archs to measure.
    #[arg(long, default_value_t = 200)]
    pub archs: usize,
    /// Seed of the held-out archs; must differ from the LUT's fit seed.
    #[arg(long, default_value_t = 2)]
    pub seed: u64,
    /// Timed passes per arch.
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// Untimed passes per arch first.
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    /// Core to pin to; default: the last allowed core(s).
    #[arg(long)]
    pub core: Option<usize>,
    /// Largest coefficient of variation (std / mean) of a stable measurement; a noisier one is
    /// stored marked unstable and measured again by the next report.
    #[arg(long, default_value_t = 0.10)]
    pub max_cv: f64,
    /// A stored measurement taken while this machine ran more than this much slower than now is
    /// measured again (as `mnas latency --max-slowdown`).
    #[arg(long, default_value_t = mnas_latency::measure::DEFAULT_MAX_SLOWDOWN)]
    pub max_slowdown: f64,
    /// Latency store [default: as `mnas latency`].
    #[arg(long, value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Measure without reading or writing the store.
    #[arg(long, conflicts_with = "store")]
    pub no_store: bool,
    /// Judge a LUT measured on another device or build anyway (the comparison is then meaningless
    /// for this device, but shows how well the table transfers).
    #[arg(long)]
    pub any_device: bool,
    #[command(flatten)]
    pub ort: OrtLibArg,
    /// Measure every arch this many times, in passes over all of them, and judge the table
    /// against the median of each arch's measurements. One measurement (--runs back to back,
    /// a fraction of a second) lands in whatever speed the machine has then, and a VM's speed
    /// moves by 10-20 % in spells of seconds; passes minutes apart average the spells out. With
    /// 2 or more the report also prints how well one pass agrees with another: the noise of a
    /// single measurement here now.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub passes: u32,
    /// Print the report as JSON (with every arch's prediction and measurement).
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: LutCommand) -> Result<()> {
    match cmd {
        LutCommand::BuildLut(args) => build(args),
        LutCommand::Predict(args) => predict(args),
        LutCommand::LutReport(args) => report(args),
    }
}

/// A bar with ETA on stderr, only when stderr is a terminal.
fn bar(len: u64, message: &str, unit: &str) -> Option<ProgressBar> {
    let template = format!("{{msg:>10}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{elapsed}}, ETA {{eta}}");
    let bar = progress::bar(Some(len), &template)?;
    bar.set_message(message.to_string());
    Some(bar)
}

fn build(args: BuildLutArgs) -> Result<()> {
    let opts = LutOptions {
        resolution: args.resolution,
        threads: args.threads,
        runs: args.runs,
        warmup: args.warmup,
        core: args.core,
        fit_archs: args.fit_archs,
        fit_seed: args.fit_seed,
        fit_runs: args.fit_runs,
        fit_passes: args.fit_passes,
        seed: 0,
        max_cv: args.max_cv,
    };
    opts.validate()?;
    if args.classes == 0 {
        bail!("--classes must be at least 1");
    }
    let space =
        SearchSpace { num_classes: args.classes, ..lut_build::space_at(&SearchSpace::default(), args.resolution) };
    let configs = lut_build::enumerate(&space);
    // The stages only the `--target auto` reference has are counted apart from the space's.
    let reference = lut_build::TARGET_REFERENCE;
    let of_space: Vec<_> = configs.iter().filter(|c| !c.description.starts_with(reference)).collect();
    let count = |prefix: &str| of_space.iter().filter(|c| c.key.starts_with(prefix)).count();
    let (stems, heads) = (count("stem_"), count("head_"));
    let layers = of_space.len() - stems - heads;
    let target_only = configs.len() - of_space.len();
    if args.dry_run {
        if args.json {
            let out = serde_json::json!({
                "configs": configs.len(), "space": of_space.len(), "stems": stems, "layers": layers, "heads": heads,
                "target_reference": target_only,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            println!(
                "{} configurations at {r}x{r}: {stems} stem, {} layers, {heads} heads of the search space, and \
                 {target_only} stages of {reference} (the --target auto reference)",
                thousands(of_space.len() as u64),
                thousands(layers as u64),
                r = args.resolution
            );
        }
        return Ok(());
    }
    let previous = if args.resume && args.out.exists() {
        let lut = Lut::load(&args.out)?;
        eprintln!("resuming {}: {} of {} entries measured", args.out.display(), lut.entries.len(), lut.configs);
        Some(lut)
    } else {
        None
    };

    let entries_bar = bar(configs.len() as u64, "layers", "entries");
    let fit_bar = std::sync::Mutex::new(None::<ProgressBar>);
    let on_progress = |p: LutProgress| match p {
        LutProgress::Entries { done, .. } => {
            if let Some(b) = &entries_bar {
                b.set_position(done as u64);
            }
        }
        LutProgress::Fit { done, total } => {
            if let Some(b) = &entries_bar {
                b.finish_and_clear();
            }
            if let Ok(mut slot) = fit_bar.lock() {
                if slot.is_none() {
                    *slot = bar(total as u64, "fit", "archs");
                }
                if let Some(b) = slot.as_ref() {
                    b.set_position(done as u64);
                }
            }
        }
    };
    let engine = args.engine.load(args.ort.ort_lib.as_deref())?;
    let started = Instant::now();
    let outcome = lut_build::build(&space, &opts, engine, previous, Some(&args.out), &on_progress);
    if let Some(b) = &entries_bar {
        b.finish_and_clear();
    }
    if let Some(b) = fit_bar.lock().ok().and_then(|mut s| s.take()) {
        b.finish_and_clear();
    }
    let lut = outcome.with_context(|| format!("building {}", args.out.display()))?;
    let wall = started.elapsed().as_secs_f64();
    let fit = lut.fit.as_ref().context("the build finished without a fit")?;
    if args.json {
        let out = serde_json::json!({
            "out": args.out,
            "configs": lut.configs, "stems": stems, "layers": layers, "heads": heads,
            "resolution": lut.resolution, "runs": lut.runs, "warmup": lut.warmup, "threads": lut.threads,
            "wall_seconds": wall, "build_seconds": lut.build_seconds,
            "fit": fit, "fingerprint_key": lut.fingerprint_key, "fingerprint": lut.fingerprint,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let layer_ms: f64 = lut.entries.values().map(|e| e.median_ms).sum();
    println!(
        "{} configurations at {r}x{r} ({stems} stem, {} layers, {heads} heads of the space, {target_only} of \
         {reference}), {} runs + {} warm-up each: {wall:.1} s this run, {:.1} s in all",
        thousands(lut.configs as u64),
        thousands(layers as u64),
        lut.runs,
        lut.warmup,
        lut.build_seconds,
        r = lut.resolution
    );
    println!("sum of all entry medians: {layer_ms:.1} ms");
    let excluded = fit.points.iter().filter(|p| p.excluded).count();
    println!(
        "overhead fit on {} archs (seed {}, {} runs each in {} passes{}): measured = {:.4} x layer sum {} {:.3} ms \
         (RMSE {:.3} ms)",
        fit.points.len(),
        fit.seed,
        fit.runs,
        fit.passes,
        if excluded > 0 { format!("; {excluded} left out, measured far off the line") } else { String::new() },
        fit.a,
        if fit.b_ms < 0.0 { "-" } else { "+" },
        fit.b_ms.abs(),
        fit.rmse_ms
    );
    println!("device: {}", lut.fingerprint.summary());
    println!("fingerprint: {}", lut.fingerprint_key);
    println!("written: {}", args.out.display());
    Ok(())
}

/// The LUT at `path` and the engine it was measured with, refused (or, with `any_device`,
/// warned about) when measured elsewhere.
fn load_checked(path: &PathBuf, any_device: bool, ort: &OrtLibArg) -> Result<(Lut, &'static dyn StageTimer)> {
    let lut = Lut::load(path)?;
    let engine = mnas_latency::timers::engine_of(&lut.fingerprint, ort.ort_lib.as_deref())
        .with_context(|| format!("{}: the table's engine", path.display()))?;
    if let Err(e) = lut.check_device(engine) {
        if !any_device {
            bail!("{e} (pass --any-device to use it anyway)");
        }
        eprintln!("warning: {e}");
    }
    Ok((lut, engine))
}

fn parse_tokens(text: &str) -> Result<Vec<usize>> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(|t| t.parse::<usize>().with_context(|| format!("--tokens: `{t}` is not a token index")))
        .collect()
}

fn predict(args: PredictArgs) -> Result<()> {
    let (lut, _) = load_checked(&args.lut, args.any_device, &args.ort)?;
    let arch: Arch = match (&args.arch, &args.tokens) {
        (Some(spec), _) => resolve(spec, &args.overrides)?,
        (None, Some(tokens)) => lut.space().decode(&parse_tokens(tokens)?).context("--tokens")?,
        (None, None) => bail!("pass --arch or --tokens"),
    };
    let started = Instant::now();
    let prediction = lut.predict_detailed(&arch);
    let micros = started.elapsed().as_secs_f64() * 1e6;
    let prediction = prediction?;
    if args.json {
        let out = serde_json::json!({
            "arch": arch.canonical(),
            "name": arch.name,
            "predicted_ms": prediction.predicted_ms,
            "layer_sum_ms": prediction.layer_sum_ms,
            "prediction_us": micros,
            "stages": prediction.stages,
            "lut": args.lut,
            "fingerprint_key": lut.fingerprint_key,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let name = arch.name.as_deref().unwrap_or("custom arch");
    let fit = lut.fit.as_ref().context("the LUT has no fit")?;
    println!(
        "{name} at {r}x{r}: predicted {:.2} ms (sum of {} LUT entries {:.2} ms, fit {:.4} x sum {} {:.3} ms)",
        prediction.predicted_ms,
        prediction.stages.len(),
        prediction.layer_sum_ms,
        fit.a,
        if fit.b_ms < 0.0 { "-" } else { "+" },
        fit.b_ms.abs(),
        r = arch.resolution
    );
    println!("prediction took {micros:.1} µs");
    println!("LUT: {} ({}), device {}", args.lut.display(), lut.fingerprint_key, lut.fingerprint.summary());
    if args.stages {
        for (stage, ms) in &prediction.stages {
            println!("  {stage:<12} {ms:>9.3} ms");
        }
    }
    Ok(())
}

fn report(args: ReportArgs) -> Result<()> {
    let (lut, engine) = load_checked(&args.lut, args.any_device, &args.ort)?;
    let fit = lut.fit.as_ref().ok_or(LutError::Incomplete { have: lut.entries.len(), want: lut.configs })?;
    if args.seed == fit.seed {
        bail!("--seed {} is the LUT's fit seed: pick another so that the archs are held out", args.seed);
    }
    if args.archs < 2 {
        bail!("--archs must be at least 2 (a rank correlation needs pairs), got {}", args.archs);
    }
    let opts = MeasureOptions {
        threads: lut.threads,
        runs: args.runs,
        warmup: args.warmup,
        core: args.core,
        // One attempt per arch: the median of --runs is the estimate; re-measuring every noisy arch
        // would triple a report's time on a busy machine without changing what it judges.
        retries: 0,
        max_cv: args.max_cv,
        max_slowdown: args.max_slowdown,
        ..MeasureOptions::default()
    };
    opts.validate()?;
    mnas_latency::measure::planned_cores(&opts)?;
    let store = if args.no_store {
        None
    } else {
        let Some(path) = args.store.clone().or_else(default_store) else {
            bail!("no cache directory (neither XDG_CACHE_HOME nor HOME is set): pass --store PATH or --no-store");
        };
        Some(Store::open(&path)?)
    };
    let archs = lut_report::held_out(&lut, args.seed, args.archs)?;
    let passes = args.passes as usize;
    let progress = bar((archs.len() * passes) as u64, "measuring", "measurements");
    let report = lut_report::judge(&lut, engine, &archs, &opts, passes, store.as_ref(), &mut |done, _| {
        if let Some(b) = &progress {
            b.set_position(done as u64);
        }
    })?;
    if let Some(b) = &progress {
        b.finish_and_clear();
    }
    let (rows, acc, seconds) = (&report.rows, &report.accuracy, report.seconds);
    let (mean_predict_us, warm_predict_us) = (report.mean_predict_us, report.warm_predict_us);
    if args.json {
        let out = serde_json::json!({
            "lut": args.lut, "seed": args.seed, "runs": args.runs, "passes": passes, "archs": rows.len(),
            "cached": report.cached, "seconds": seconds, "mean_predict_us": mean_predict_us,
            "warm_predict_us": warm_predict_us, "accuracy": acc, "per_pass": report.per_pass,
            "pass_agreement": report.pass_agreement, "pace_ms": report.pace_ms, "build_pace_ms": fit.pace_ms,
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let tau = |t: Option<f64>| t.map_or("undefined".to_string(), |t| format!("{t:.3}"));
    let (lo, hi) =
        rows.iter().map(|r| r.measured).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let times = if passes == 1 { "once".to_string() } else { format!("{passes} times (in passes over all of them)") };
    let truth = if passes == 1 { "the measurement".to_string() } else { format!("the median of {passes} passes") };
    println!(
        "{} held-out archs (seed {}) at {r}x{r}, each measured end to end {times} with {} runs ({} from the store) \
         in {seconds:.1} s; {truth} {lo:.2}..{hi:.2} ms",
        rows.len(),
        args.seed,
        args.runs,
        report.cached,
        r = lut.resolution
    );
    println!(
        "LUT prediction: {:.1}% within +-10% of {truth}, RMSE {:.3} ms, MAPE {:.1}%, Kendall tau-b {} (layer sum \
         alone {})",
        100.0 * acc.within_10pct,
        acc.rmse_ms,
        100.0 * acc.mape,
        tau(acc.tau_prediction),
        tau(acc.tau_layer_sum)
    );
    println!("MACs:           Kendall tau-b {} vs measured latency", tau(acc.tau_macs));
    if passes > 1 {
        let joined = |f: &dyn Fn(&Accuracy) -> String| report.per_pass.iter().map(f).collect::<Vec<_>>().join(" / ");
        println!(
            "against each pass alone: {} % within +-10%, Kendall tau-b {}",
            joined(&|a| format!("{:.1}", 100.0 * a.within_10pct)),
            joined(&|a| tau(a.tau_prediction))
        );
    }
    if let Some(c) = &report.pass_agreement {
        println!(
            "one pass against another: {:.1}% within +-10%, Kendall tau-b {} (mean of {} pairs: the noise of one \
             measurement here now; a table scoring above it predicts a measurement better than another \
             measurement does)",
            100.0 * c.within_10pct,
            tau(c.tau),
            c.pairs
        );
    }
    if let (Some(now), Some(then)) = (report.pace_ms, fit.pace_ms) {
        let change = 100.0 * (now / then - 1.0);
        let direction = if change >= 0.0 { "slower" } else { "faster" };
        println!(
            "machine pace: {now:.3} ms now, {then:.3} ms while the table's fit was measured ({:.1} % {direction}; \
             the fastest run of {} at {} px, median over the measurements): measurements now read about that much \
             off the table",
            change.abs(),
            mnas_latency::measure::PACE_REFERENCE,
            mnas_latency::measure::PACE_RESOLUTION,
        );
    }
    println!(
        "prediction time: {warm_predict_us:.1} µs per arch back to back ({} predictions), {mean_predict_us:.1} µs \
         cold (mean, each right after a measurement)",
        report.warm_predictions
    );
    Ok(())
}
