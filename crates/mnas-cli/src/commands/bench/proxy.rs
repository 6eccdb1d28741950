//! `mnas bench reference` and `mnas bench proxy`: printing and progress around the fidelity
//! benchmark of mnas-pipeline.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::ProgressBar;
use mnas_engine::train::{Decay, Optimizer, Progress, RunResult};
use mnas_pipeline::fidelity::{JobObserver, ProxyBench, Reference, ReferenceJob};
use mnas_pipeline::{ProxySettings, Score};

use crate::commands::progress;
use crate::commands::proxy_args::{describe, ProxyArgs};

pub const REFERENCE_ABOUT: &str = "Train the reference accuracies that `mnas bench proxy` judges proxy recipes \
against: every architecture of a fixed sample of the search space (--archs, --archs-seed; stratified by MACs) \
trained on the full data set with far more compute than a proxy.\n\n\
One row is appended to --out per finished architecture; run the same command again to continue after a crash \
or kill (finished architectures are not trained again). A file made from another sample, search space, data set \
or recipe is refused with the reason.\n\n\
Defaults (the committed bench/proxy/reference-cifar10.csv): CIFAR-10 45,000 train / 5,000 held-out, width 0.5, \
stem stride 1 (32 px images reach the last blocks at 2x2), 4 epochs, batch 32, SGD Nesterov lr 0.05, 3 % \
warm-up, linear decay, weight decay 5e-5, label smoothing 0.1, pad-crop + flip. About 3 hours on 2 cores.\n\n\
Example: mnas bench reference --data ../shared/data/cifar10-jpg.tar.gz --out bench/proxy/reference-cifar10.csv";

pub const PROXY_ABOUT: &str = "Judge a proxy recipe: train every architecture of the reference's sample with the \
proxy (--seeds runs each), then compare the proxy's scores with the reference accuracies.\n\n\
Prints Kendall tau-b (with a 95 % bootstrap interval over architectures) and Spearman rho of the proxy score \
against the reference (of the seeds' mean score, and of one seed's score: what a search trial ranks with), \
the seed-to-seed tau, the same tau for parameter count and MACs (the baselines a proxy \
must beat), the overlap of the top quarter, mean accuracy, and seconds and images/s per trial, for every score \
(held-out accuracy, held-out loss, training-loss sum). --json prints one object instead (keys archs, tau, tau_ci, \
tau_one_seed, tau_params, tau_macs, tau_seed, mean_accuracy, seconds_per_trial, ...).\n\n\
Proxy runs are cached per recipe under --cache, so a rerun of the same recipe prints at once and an interrupted \
one continues. The data set and its split must be the reference's (its header names them; --data defaults to it).\n\n\
Example: mnas bench proxy --reference bench/proxy/reference-cifar10.csv --proxy-images 5000 --proxy-epochs 1";

/// The reference recipe (see REFERENCE_ABOUT).
pub fn reference_settings() -> ProxySettings {
    ProxySettings {
        images: 0,
        val_images: 0,
        epochs: 4.0,
        batch_size: 32,
        optimizer: Optimizer::Sgd,
        lr: 0.05,
        warmup: 0.03,
        decay: Decay::Linear,
        weight_decay: 5e-5,
        label_smoothing: 0.1,
        width: 0.5,
        stem_stride: 1,
        // Spelled out, not taken from the search's default recipe: a committed reference must stay
        // continuable when that default changes.
        data: None,
        val_fraction: 0.1,
        split_seed: 0,
        resolution: None,
        augment: true,
        seed: 0,
        score: Score::Accuracy,
    }
}

#[derive(Args, Debug)]
pub struct BenchReferenceArgs {
    /// The reference file (created, or continued when it exists).
    #[arg(long)]
    pub out: PathBuf,
    /// Architectures in the sample.
    #[arg(long, default_value_t = 24)]
    pub archs: usize,
    /// Seed of the sample.
    #[arg(long, default_value_t = 7)]
    pub archs_seed: u64,
    /// Threads for training [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

#[derive(Args, Debug)]
pub struct BenchProxyArgs {
    /// The reference file (`mnas bench reference`).
    #[arg(long)]
    pub reference: PathBuf,
    /// Proxy runs per architecture, with seeds --proxy-seed, +1, ...
    #[arg(long, default_value_t = 2)]
    pub seeds: usize,
    /// Where proxy runs are cached, one file per recipe.
    #[arg(long, default_value = "runs/bench-proxy")]
    pub cache: PathBuf,
    /// Do not read or write the cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Compare on the architectures an unfinished reference holds so far.
    #[arg(long)]
    pub partial: bool,
    /// Threads for training [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    #[command(flatten)]
    pub proxy: ProxyArgs,
}

/// A bar per run on a terminal, a line per finished run otherwise.
struct Display {
    bar: Option<ProgressBar>,
}

impl Display {
    fn new() -> Display {
        Display { bar: None }
    }
}

impl JobObserver for Display {
    fn on_run_start(&mut self, what: &str, done: usize, total: usize) {
        self.bar = progress::bar(None, "{prefix} [{bar:25}] {pos}/{len} steps ({elapsed}, eta {eta}) {msg}");
        if let Some(bar) = &self.bar {
            bar.set_prefix(format!("[{}/{total}] {what}", done + 1));
        }
    }

    fn on_step(&mut self, p: Progress) -> bool {
        if let Some(bar) = &self.bar {
            bar.set_length(p.steps as u64);
            bar.set_position(p.step as u64);
            bar.set_message(format!("loss {:.3}", p.loss));
        }
        true
    }

    fn on_run_end(&mut self, what: &str, r: &RunResult) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!(
            "{what}: held-out {:.2} % (loss {:.3}), train loss {:.3}, {:.0} s, {:.0} img/s",
            100.0 * r.val_top1,
            r.val_loss,
            r.train_loss,
            r.seconds,
            r.images_per_sec
        );
    }
}

fn threads(n: Option<usize>) -> Result<()> {
    if let Some(t) = n {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        mnas_engine::set_threads(t);
    }
    Ok(())
}

pub fn run_reference(args: BenchReferenceArgs) -> Result<()> {
    threads(args.threads)?;
    let settings = args.proxy.apply(&reference_settings());
    if settings.data.is_none() {
        bail!("--data is required: the reference trains on a full data set (e.g. ../shared/data/cifar10-jpg.tar.gz)");
    }
    let command: Vec<String> = std::env::args().collect();
    let job = ReferenceJob {
        out: args.out.clone(),
        archs: args.archs,
        archs_seed: args.archs_seed,
        settings,
        command: command.join(" "),
        commit: option_env!("MNAS_GIT_COMMIT").unwrap_or("unknown").to_string(),
    };
    eprintln!("reference: {} architectures (seed {}), {}", job.archs, job.archs_seed, describe(&job.settings));
    eprintln!("load average at start: {}", super::load_avg());
    let reference = job.run(&mut Display::new()).with_context(|| format!("reference job {}", args.out.display()))?;
    let done = reference.rows.len();
    println!("{done}/{} reference trainings in {}", reference.header.archs, args.out.display());
    Ok(())
}

fn fmt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:+.3}")).unwrap_or_else(|| "  n/a".into())
}

fn fmt_ci(v: Option<[f64; 2]>) -> String {
    v.map(|[a, b]| format!("[{a:+.2}, {b:+.2}]")).unwrap_or_else(|| "n/a".into())
}

pub fn run_proxy(args: BenchProxyArgs) -> Result<()> {
    if args.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    threads(args.threads)?;
    let reference = Reference::read(&args.reference).context("the proxy benchmark's reference")?;
    // The reference's data and split unless told otherwise; the proxy recipe's defaults otherwise.
    let base = ProxySettings {
        data: reference.header.settings.data.clone(),
        val_fraction: reference.header.settings.val_fraction,
        split_seed: reference.header.settings.split_seed,
        resolution: reference.header.settings.resolution,
        ..ProxySettings::default()
    };
    let settings = args.proxy.apply(&base);
    let bench = ProxyBench {
        reference: &reference,
        settings: settings.clone(),
        seeds: args.seeds,
        cache: (!args.no_cache).then(|| args.cache.clone()),
        partial: args.partial,
    };
    if !args.json {
        eprintln!("proxy: {}", describe(&settings));
        eprintln!("load average at start: {}", super::load_avg());
    }
    let report = bench.run(&mut Display::new()).context("proxy benchmark")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if report.archs < report.sample {
        println!("partial reference: {} of {} architectures", report.archs, report.sample);
    }
    println!(
        "{} architectures x {} seeds against {} (reference mean held-out {:.1} %)",
        report.archs,
        report.seeds,
        args.reference.display(),
        100.0 * report.reference_mean_accuracy
    );
    println!(
        "{:<12} {:>7} {:>16} {:>8} {:>9} {:>9} {:>6}",
        "score", "tau", "95% interval", "rho", "one seed", "seed tau", "top25"
    );
    for f in &report.scores {
        let mark = if f.score == report.score { "*" } else { " " };
        println!(
            "{:<12} {:>7} {:>16} {:>8} {:>9} {:>9} {:>6}",
            format!("{}{mark}", f.score.name()),
            fmt(f.tau),
            fmt_ci(f.tau_ci),
            fmt(f.spearman),
            fmt(f.tau_one_seed),
            fmt(f.tau_seed),
            f.top25.map(|v| format!("{:.2}", v)).unwrap_or_else(|| "n/a".into())
        );
    }
    println!("{:<12} {:>7} {:>16}", "params", fmt(report.tau_params), fmt_ci(report.tau_params_ci));
    println!("{:<12} {:>7} {:>16}", "MACs", fmt(report.tau_macs), fmt_ci(report.tau_macs_ci));
    println!(
        "proxy mean held-out {:.1} %, {:.1} s per trial, {:.0} img/s{}; load average now {}",
        100.0 * report.mean_accuracy,
        report.seconds_per_trial,
        report.images_per_sec,
        if report.diverged > 0 { format!(", {} runs diverged", report.diverged) } else { String::new() },
        super::load_avg()
    );
    if report.score != Score::Accuracy {
        println!("(* = the recipe's --proxy-score)");
    }
    Ok(())
}
