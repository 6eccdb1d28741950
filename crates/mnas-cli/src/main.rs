//! `mnas`: platform-aware neural architecture search (MnasNet) in one binary.

mod commands;
mod spec;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mnas",
    version,
    about = "Platform-aware neural architecture search (MnasNet, Tan et al. 2019)",
    long_about = "mnas searches the MnasNet factorized hierarchical space for CNNs that are both accurate \
                  and fast on your hardware, and builds, measures and exports the paper's models.\n\n\
                  Start with:\n  mnas arch show mnasnet-a1       layer table, params and MACs of MnasNet-A1\n  \
                  mnas space info                 the search space and its size\n  \
                  mnas space sample --seed 1      a random model from the space\n  \
                  mnas train --epochs 1           a proxy training run on the embedded CIFAR-10 subset\n  \
                  mnas latency --arch mnasnet-a1  its latency on this machine\n  \
                  mnas search                     a search on the embedded data (~15 min on 2 cores)",
    propagate_version = true
)]
struct Cli {
    /// More log output (-v info, -vv debug); also RUST_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Inspect architectures: the model zoo, block strings, arch JSON files.
    #[command(subcommand)]
    Arch(commands::arch::ArchCommand),
    /// The paper's search space: its decisions, size, and seeded samples.
    #[command(subcommand)]
    Space(commands::space::SpaceCommand),
    /// Model weights: import timm checkpoints, initialise, inspect.
    #[command(subcommand)]
    Weights(commands::weights::WeightsCommand),
    /// Export a model to ONNX for deployment.
    #[command(subcommand)]
    Export(commands::export::ExportCommand),
    /// Train a model: a short proxy run (the search's accuracy signal) or the paper's full recipe.
    Train(commands::train::TrainArgs),
    /// Top-1/top-5 of trained weights on a dataset's test split (or the held-out split).
    Eval(commands::train::EvalArgs),
    /// Search the MnasNet space: proxy-train + measure each sampled model, PPO on the reward.
    #[command(long_about = commands::search::LONG_ABOUT)]
    Search(commands::search::SearchArgs),
    /// HTML report of search runs: accuracy vs latency with Pareto fronts, rewards per step.
    Report(commands::report::ReportArgs),
    /// The accuracy/latency Pareto front of a search run, as a table or JSON.
    Pareto(commands::pareto::ParetoArgs),
    /// Write a run's best models as arch JSON files for `mnas train --arch` / `mnas export onnx --arch`.
    ExportArch(commands::export_arch::ExportArchArgs),
    /// Measure inference latency (batch 1): this machine, remote agents, your engine, or a lookup table.
    #[command(long_about = commands::latency::LONG_ABOUT)]
    Latency(commands::latency::LatencyArgs),
    /// Benchmarks: training speed against PyTorch, proxy fidelity against reference trainings.
    #[command(subcommand)]
    Bench(commands::bench::BenchCommand),
    /// Train the trials of searches that dispatch to a broker (`mnas search --broker`).
    #[command(long_about = commands::worker::LONG_ABOUT)]
    Worker(commands::worker::WorkerArgs),
    /// Serve latency measurements of this machine to `mnas latency --device` elsewhere.
    #[command(long_about = commands::agent::LONG_ABOUT)]
    Agent(commands::agent::AgentArgs),
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Arch(cmd) => commands::arch::run(cmd),
        Command::Space(cmd) => commands::space::run(cmd),
        Command::Weights(cmd) => commands::weights::run(cmd),
        Command::Export(cmd) => commands::export::run(cmd),
        Command::Latency(args) => commands::latency::run(args),
        Command::Agent(args) => commands::agent::run(args),
        Command::Worker(args) => commands::worker::run(args),
        Command::Search(args) => commands::search::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Pareto(args) => commands::pareto::run(args),
        Command::ExportArch(args) => commands::export_arch::run(args),
        Command::Bench(cmd) => commands::bench::run(cmd),
        Command::Train(args) => commands::train::run_train(args),
        Command::Eval(args) => commands::train::run_eval(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line that names the problem: the context chain joined, no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
