//! `mnas bench`: benchmarks that measure mnas against a reference in the same run.

pub mod latency;
pub mod proxy;
pub mod train;

use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Training-step benchmark T: one SGD step (zero grad, forward, cross-entropy, backward,
    /// update) of a small MBConv net (82,480 parameters) on a batch of 64 3x32x32 images.
    ///
    /// Prints mnas's median step time and, when a Python with torch is found, PyTorch's for the
    /// same net and thread count measured in the same run, and their ratio. Python is taken
    /// from $MNAS_PYTHON, else <workspace>/.venv/bin/python, else python3; without torch the
    /// PyTorch half is skipped with the reason.
    ///
    /// Example: mnas bench train --threads 2 --steps 20
    Train(train::BenchTrainArgs),
    /// Proxy fidelity: how well a proxy recipe ranks a fixed sample of architectures against
    /// their reference accuracies (`mnas bench reference`), next to parameter count and MACs.
    #[command(long_about = proxy::PROXY_ABOUT)]
    Proxy(proxy::BenchProxyArgs),
    /// Latency engines: the built-in engine against ONNX Runtime on one model (ratio, op
    /// breakdown) and their rank agreement over sampled models (Kendall tau).
    ///
    /// Example: mnas bench latency --arch mnasnet-a1 --archs 50
    ///
    /// The ceiling noise puts on that tau: mnas bench latency --engine ort --against ort
    Latency(latency::BenchLatencyArgs),
    /// Train the reference accuracies of the proxy benchmark's sample (hours; resumable).
    #[command(long_about = proxy::REFERENCE_ABOUT)]
    Reference(proxy::BenchReferenceArgs),
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Train(args) => train::run(args),
        BenchCommand::Proxy(args) => proxy::run_proxy(args),
        BenchCommand::Latency(args) => latency::run(args),
        BenchCommand::Reference(args) => proxy::run_reference(args),
    }
}

/// The 1, 5 and 15 minute load averages, printed with every benchmark figure.
fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
