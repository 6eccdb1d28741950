//! `mnas export-arch`: the best models of a search run as arch JSON files, ready for
//! `mnas train --arch FILE` and `mnas export onnx --arch FILE`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mnas_search::pareto::pareto_front;
use mnas_search::{Trial, TrialStatus};
use mnas_space::Arch;

use super::pareto::ranked_trials;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RankBy {
    /// The highest rewards among all successful trials (the search's own objective).
    Reward,
    /// Pareto-front models only, highest reward first: the accuracy/latency trade-offs.
    Pareto,
}

/// Arguments of `mnas export-arch`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    mnas export-arch runs/ppo --top 15                 the 15 best rewards into runs/ppo/archs/\n  \
    mnas export-arch runs/ppo --top 5 --by pareto --out best/\n  \
    mnas train --arch runs/ppo/archs/rank01_step12_i3.json --epochs 5")]
pub struct ExportArchArgs {
    /// Run directory written by `mnas search` (it may still be running).
    #[arg(value_name = "RUN")]
    pub run: PathBuf,
    /// How many models to export (the paper retrained its top 15 fully).
    #[arg(long, value_name = "K")]
    pub top: usize,
    /// Which models count as best. An arch met several times (reused results) is exported once.
    #[arg(long, value_enum, default_value_t = RankBy::Reward)]
    pub by: RankBy,
    /// Directory for the files rankNN_stepS_iI.json [default: RUN/archs].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Up to `k` trials by reward (ties: earliest first), one per arch.
fn best(candidates: Vec<&Trial>, k: usize) -> Vec<&Trial> {
    let mut sorted = candidates;
    sorted.sort_by(|a, b| b.reward.total_cmp(&a.reward).then((a.step, a.index).cmp(&(b.step, b.index))));
    let mut seen = std::collections::HashSet::new();
    sorted.into_iter().filter(|t| seen.insert(t.arch.as_str())).take(k).collect()
}

pub fn run(args: ExportArchArgs) -> Result<()> {
    if args.top == 0 {
        bail!("--top must be at least 1");
    }
    let trials = ranked_trials(&args.run)?;
    let candidates: Vec<&Trial> = match args.by {
        RankBy::Reward => trials.iter().filter(|t| t.status == TrialStatus::Ok).collect(),
        RankBy::Pareto => pareto_front(&trials),
    };
    let chosen = best(candidates, args.top);
    let dir = args.out.clone().unwrap_or_else(|| args.run.join("archs"));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (rank, t) in chosen.iter().enumerate() {
        let text = serde_json::to_string_pretty(&t.arch_json)?;
        // What `--arch FILE` will read back must be a valid arch: check before writing.
        Arch::from_json(&text)
            .with_context(|| format!("trial (step {}, index {}) has an unreadable arch", t.step, t.index))?;
        let path = dir.join(format!("rank{:02}_step{}_i{}.json", rank + 1, t.step, t.index));
        std::fs::write(&path, text + "\n").with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "{}  acc {:.2}%  latency {:.3} ms  reward {:.4}",
            path.display(),
            t.accuracy.unwrap_or(0.0) * 100.0,
            t.latency_ms.unwrap_or(0.0),
            t.reward
        );
    }
    if chosen.len() < args.top {
        let what = match args.by {
            RankBy::Reward => "distinct successful models",
            RankBy::Pareto => "models on the Pareto front",
        };
        eprintln!("note: the run has only {} {what}; exported {}", chosen.len(), chosen.len());
    }
    Ok(())
}
