//! `mnas report`: the HTML report of one or several search runs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use mnas_search::pareto::pareto_front;
use mnas_search::report::{write_report, ReportMeta, ReportRun};
use mnas_search::store::RunStore;
use mnas_search::trial::{by_strategy, last_quarter_mean};
use mnas_search::{Trial, TrialStatus};

use crate::table::render;

/// Arguments of `mnas report`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    mnas report runs/ppo                          writes runs/ppo/report.html\n  \
    mnas report runs/ppo runs/random              both in runs/ppo/compare.html, one colour each\n  \
    mnas report runs/ppo runs/random --out c.html\n\n\
    The page is one file (inline SVG, no scripts): scatter of accuracy vs latency with each run's \
    Pareto front and the target T, latency histogram, mean +/- std reward per step, front tables.")]
pub struct ReportArgs {
    /// Run directories written by `mnas search`. Several runs are drawn in one page, one colour
    /// each, to compare strategies or constraints. A running search can be reported at any time.
    #[arg(required = true, value_name = "RUN")]
    pub runs: Vec<PathBuf>,
    /// The HTML file to write [default: RUN/report.html for one run, FIRST_RUN/compare.html for
    /// several].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Opens a run without taking its lock (a search may be writing it) and reads every trial.
pub fn load_run(dir: &Path) -> Result<(RunStore, Vec<Trial>)> {
    let store = RunStore::open_read_only(dir)?;
    let trials = store.trials().with_context(|| format!("cannot read the trials of run {}", dir.display()))?;
    Ok((store, trials))
}

/// Short labels: the directory names, or the paths as given when two names coincide.
fn labels(dirs: &[PathBuf]) -> Vec<String> {
    let name = |d: &PathBuf| {
        d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| d.display().to_string())
    };
    let names: Vec<String> = dirs.iter().map(name).collect();
    let unique = names.iter().enumerate().all(|(i, n)| !names[..i].contains(n));
    if unique {
        names
    } else {
        dirs.iter().map(|d| d.display().to_string()).collect()
    }
}

pub fn run(args: ReportArgs) -> Result<()> {
    let mut runs = Vec::with_capacity(args.runs.len());
    for (dir, label) in args.runs.iter().zip(labels(&args.runs)) {
        let (store, trials) = load_run(dir)?;
        if trials.is_empty() {
            eprintln!("note: run {} has no trials yet; the report says so", dir.display());
        }
        let meta = ReportMeta::from_store(&store)?;
        runs.push(ReportRun { label, trials, meta });
    }
    let out = match (&args.out, args.runs.as_slice()) {
        (Some(out), _) => out.clone(),
        (None, [one]) => one.join("report.html"),
        (None, [first, ..]) => first.join("compare.html"),
        (None, []) => bail!("give at least one RUN directory"),
    };
    write_report(&runs, &out)?;
    print_summary(&runs);
    println!("{}", out.display());
    Ok(())
}

/// One line per run on stdout: what a comparison of strategies is read from.
fn print_summary(runs: &[ReportRun]) {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let ok = r.trials.iter().filter(|t| t.status == TrialStatus::Ok).count();
            let best = r.trials.iter().map(|t| t.reward).fold(f64::NAN, f64::max);
            let fmt = |v: Option<f64>| v.filter(|v| v.is_finite()).map(|v| format!("{v:.4}")).unwrap_or("-".into());
            vec![
                r.label.clone(),
                r.meta.strategy.clone(),
                r.trials.len().to_string(),
                ok.to_string(),
                fmt(Some(best)),
                fmt(last_quarter_mean(&r.trials)),
                pareto_front(&r.trials).len().to_string(),
            ]
        })
        .collect();
    print!(
        "{}",
        render(&["run", "strategy", "trials", "ok", "best reward", "mean reward, last quarter", "Pareto"], &rows)
    );
    let summaries = by_strategy(runs.iter().map(|r| (r.meta.strategy.as_str(), r.trials.as_slice())));
    if summaries.iter().any(|s| s.runs > 1) {
        for s in &summaries {
            let se = s.standard_error.map_or("no SE with one run".to_string(), |se| format!("+- {se:.4} (SE)"));
            println!("{}: last-quarter mean reward {:.4} {se} over {} runs", s.strategy, s.mean, s.runs);
        }
        if let [a, b] = summaries.as_slice() {
            if let (Some(sa), Some(sb)) = (a.standard_error, b.standard_error) {
                let (diff, se) = (a.mean - b.mean, (sa * sa + sb * sb).sqrt());
                let verdict = if diff.abs() > se { "larger" } else { "not larger" };
                println!(
                    "{} - {}: {diff:+.4} +- {se:.4} (SE): the difference is {verdict} than its standard error",
                    a.strategy, b.strategy
                );
            }
        }
    }
}
