//! `mnas pareto`: the accuracy/latency Pareto front of a search run.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use mnas_search::pareto::pareto_front;
use mnas_search::report::blocks_of;
use mnas_search::{Trial, TrialStatus};

use super::report::load_run;
use crate::table::{render, thousands};

/// Arguments of `mnas pareto`.
#[derive(Args, Debug)]
#[command(after_help = "A model is on the front when no other successful trial of the run is both at least as \
    accurate and at least as fast (and better in one). Sorted by latency; identical results (a reused \
    arch) appear once.\n\nExamples:\n  mnas pareto runs/ppo\n  mnas pareto runs/ppo --json | jq '.front[0]'")]
pub struct ParetoArgs {
    /// Run directory written by `mnas search` (it may still be running).
    #[arg(value_name = "RUN")]
    pub run: PathBuf,
    /// Print the front's trials as JSON (every stored field) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Every trial of a run, refusing a run with nothing to rank.
pub fn ranked_trials(dir: &Path) -> Result<Vec<Trial>> {
    let (_, trials) = load_run(dir)?;
    if trials.is_empty() {
        bail!("run {} has no trials yet", dir.display());
    }
    if !trials.iter().any(|t| t.status == TrialStatus::Ok) {
        bail!("run {} has no successful trials yet ({} failed)", dir.display(), trials.len());
    }
    Ok(trials)
}

pub fn run(args: ParetoArgs) -> Result<()> {
    let trials = ranked_trials(&args.run)?;
    let front = pareto_front(&trials);
    if args.json {
        let out = serde_json::json!({
            "run": args.run.display().to_string(),
            "trials": trials.len(),
            "front": front,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let blocks: Vec<String> = front.iter().map(|t| blocks_of(&t.arch)).collect();
    // The table right-aligns numeric columns; padding keeps the block lists left-aligned.
    let width = blocks.iter().map(|b| b.len()).max().unwrap_or(0);
    let rows: Vec<Vec<String>> = front
        .iter()
        .zip(&blocks)
        .map(|(t, b)| {
            vec![
                t.step.to_string(),
                t.index.to_string(),
                format!("{:.2}", t.accuracy.unwrap_or(0.0) * 100.0),
                format!("{:.3}", t.latency_ms.unwrap_or(0.0)),
                format!("{:.4}", t.reward),
                thousands(t.params),
                thousands(t.macs),
                format!("{b:<width$}"),
            ]
        })
        .collect();
    let header = ["step", "index", "acc %", "latency ms", "reward", "params", "MACs", &format!("{:<width$}", "arch")];
    print!("{}", render(&header, &rows));
    println!("{} of {} trials on the front, fastest first", front.len(), trials.len());
    Ok(())
}
