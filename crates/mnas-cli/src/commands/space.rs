use anyhow::{bail, Result};
use clap::Subcommand;
use mnas_space::space::{DECISIONS, MOBILENETV2_SKELETON};
use mnas_space::{count, SearchSpace};

use crate::table::{render, thousands};

#[derive(Subcommand)]
pub enum SpaceCommand {
    /// The decisions per block, the MobileNetV2 skeleton, and the exact size of the space.
    Info {
        #[arg(long)]
        json: bool,
    },
    /// Sample models uniformly from the space; the same seed gives the same models.
    Sample {
        /// Random seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// How many models.
        #[arg(short = 'n', long, default_value_t = 1)]
        count: usize,
        /// Print arch JSON (one object per model, in an array) instead of a summary.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: SpaceCommand) -> Result<()> {
    let space = SearchSpace::default();
    match cmd {
        SpaceCommand::Info { json } => info(&space, json),
        SpaceCommand::Sample { seed, count, json } => sample(&space, seed, count, json),
    }
}

fn info(space: &SearchSpace, json: bool) -> Result<()> {
    if json {
        let decisions: Vec<_> =
            DECISIONS.iter().map(|d| serde_json::json!({"decision": d.name(), "options": d.option_labels()})).collect();
        let out = serde_json::json!({
            "blocks": space.num_blocks(),
            "tokens": space.num_tokens(),
            "decisions": decisions,
            "skeleton": space.skeleton,
            "block_size": space.block_size(),
            "size": space.size().to_string(),
            "distinct_size": space.distinct_size().to_string(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("MnasNet factorized hierarchical search space (paper §4.1)");
    println!(
        "{} blocks x {} decisions = {} tokens; stem conv3x3 s2 {}, head conv1x1 {}",
        space.num_blocks(),
        DECISIONS.len(),
        space.num_tokens(),
        space.stem_channels,
        space.head_channels
    );
    println!();
    let rows: Vec<Vec<String>> =
        DECISIONS.iter().map(|d| vec![d.name().to_string(), d.option_labels().join(", ")]).collect();
    print!("{}", render(&["decision", "options"], &rows));
    println!();
    let rows: Vec<Vec<String>> = MOBILENETV2_SKELETON
        .iter()
        .enumerate()
        .map(|(i, (c, n, s))| {
            vec![
                format!("block {i}"),
                format!("{c}"),
                format!("{n}"),
                format!("{s}"),
                format!("{}", space.distinct_block_configs(i)),
            ]
        })
        .collect();
    print!("{}", render(&["skeleton", "filters", "layers", "stride", "distinct configs"], &rows));
    println!();
    println!("per-block size S = {}", space.block_size());
    println!("token combinations S^B = {} (~{:.2e})", space.size(), space.size() as f64);
    println!(
        "distinct block configurations (clamped layer counts, coinciding filter roundings merged) = {} (~{:.2e})",
        space.distinct_size(),
        space.distinct_size() as f64
    );
    Ok(())
}

fn sample(space: &SearchSpace, seed: u64, n: usize, json: bool) -> Result<()> {
    if n == 0 {
        bail!("-n must be at least 1");
    }
    if n > 100_000 {
        bail!("-n must be at most 100000, got {n}");
    }
    let samples = space.sample(seed, n);
    if json {
        let archs: Vec<_> =
            samples.iter().map(|(tokens, arch)| serde_json::json!({"tokens": tokens, "arch": arch})).collect();
        println!("{}", serde_json::to_string_pretty(&archs)?);
        return Ok(());
    }
    for (i, (tokens, arch)) in samples.iter().enumerate() {
        let c = count(arch);
        println!("#{i} seed {seed}: {} params, {} MACs @{}", thousands(c.params), thousands(c.macs), arch.resolution);
        println!("  tokens: {}", tokens.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(" "));
        println!("  blocks: {}", arch.blocks.iter().map(|b| b.to_block_string()).collect::<Vec<_>>().join(" "));
    }
    Ok(())
}
