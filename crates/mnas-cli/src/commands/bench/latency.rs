//! `mnas bench latency`: the built-in engine against ONNX Runtime in the same run: MnasNet-A1
//! side by side (their ratio), the built-in engine's op breakdown, and how well the two engines
//! agree on the order of sampled models (Kendall tau).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use mnas_latency::engines::{rank_fidelity, side_by_side};
use mnas_latency::measure::{op_breakdown, planned_cores};
use mnas_latency::{BuiltIn, LocalEngine, MeasureOptions, OrtEngine};

/// The engine set against ONNX Runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Contender {
    /// mnas's own engine.
    #[value(name = "built-in")]
    BuiltIn,
    /// A second ONNX Runtime session, measured exactly as the built-in engine would be.
    Ort,
}

impl Contender {
    fn label(self) -> &'static str {
        match self {
            Contender::BuiltIn => "built-in",
            Contender::Ort => "ORT again",
        }
    }

    /// The CSV column of its latencies.
    fn column(self) -> &'static str {
        match self {
            Contender::BuiltIn => "builtin_ms",
            Contender::Ort => "ort_again_ms",
        }
    }
}

#[derive(Args, Debug)]
pub struct BenchLatencyArgs {
    /// The engine compared with ONNX Runtime. `ort` sets ORT against a second session of itself,
    /// measured in the same turns: the tau it reaches is the most that any engine can reach against
    /// ORT here with these runs and passes, the ceiling that measurement noise puts on the figure.
    #[arg(long, value_enum, default_value = "built-in")]
    pub engine: Contender,
    /// The model compared side by side.
    #[arg(long, default_value = "mnasnet-a1")]
    pub arch: String,
    #[arg(long, default_value_t = 224)]
    pub resolution: u32,
    /// Engine threads (each pinned to its own core; ORT gets as many intra-op threads).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Timed runs per measurement.
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// Alternating rounds of the side-by-side comparison.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Sampled architectures for the rank agreement (0 skips it).
    #[arg(long, default_value_t = 50)]
    pub archs: usize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Timed runs per sampled architecture.
    #[arg(long, default_value_t = 10)]
    pub archs_runs: usize,
    /// Passes over the sampled architectures, each measuring all of them on both engines; a
    /// latency is the median of its passes. One measurement lands in whatever speed the machine
    /// has then (a VM's moves by 10-20 % in spells of seconds); passes average the spells out.
    #[arg(long, default_value_t = 3)]
    pub passes: usize,
    /// Also write the sampled architectures' latencies (arch, built-in ms, ORT ms, MACs) as CSV.
    #[arg(long, value_name = "PATH")]
    pub csv: Option<PathBuf>,
    /// libonnxruntime.so [default: $MNAS_ORT_LIB, else the onnxruntime wheel of $VIRTUAL_ENV or ./.venv].
    #[arg(long, env = "MNAS_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
}

pub fn run(args: BenchLatencyArgs) -> Result<()> {
    if args.runs == 0 || args.rounds == 0 || args.archs_runs == 0 || args.passes == 0 {
        bail!("--runs, --rounds, --archs-runs and --passes must be at least 1");
    }
    if let Some(path) = &args.csv {
        // Before minutes of measuring, not after.
        std::fs::write(path, "").with_context(|| format!("cannot write {}", path.display()))?;
    }
    let ort = OrtEngine::load(args.ort_lib.as_deref())?;
    let (contender, label): (&dyn LocalEngine, _) = match args.engine {
        Contender::BuiltIn => (&BuiltIn, args.engine.label()),
        Contender::Ort => (ort, args.engine.label()),
    };
    let mut arch = crate::spec::resolve(&args.arch, &Default::default())?;
    arch.resolution = args.resolution;
    let opts = MeasureOptions { threads: args.threads, runs: args.runs, warmup: 10, ..MeasureOptions::default() };
    let cores = planned_cores(&opts)?;
    println!(
        "bench latency: batch 1, {} thread(s) pinned to {:?}, {} vs ONNX Runtime {} ({})",
        args.threads,
        cores,
        match args.engine {
            Contender::BuiltIn => format!("built-in engine {}", mnas_latency::ENGINE_VERSION),
            Contender::Ort => "ONNX Runtime (a second session)".to_string(),
        },
        ort.version,
        ort.library.display()
    );
    println!("load average before: {}", super::load_avg());
    let s = side_by_side(&arch, &opts, contender, ort, args.rounds)?;
    let name = arch.name.clone().unwrap_or_else(|| args.arch.clone());
    for (i, (a, b)) in s.rounds.iter().enumerate() {
        println!("  round {}: {label} {a:.2} ms, ORT {b:.2} ms", i + 1);
    }
    println!(
        "{name} at {r}x{r}: {label} median {:.2} ms, ORT median {:.2} ms: {label} / ORT = {:.2}x",
        s.a_ms(),
        s.b_ms(),
        s.ratio(),
        r = args.resolution
    );
    if args.engine == Contender::BuiltIn {
        let ops = op_breakdown(&arch, &opts)?;
        let total: f64 = ops.iter().map(|o| o.1).sum();
        println!("built-in engine by op ({name}, median of {} passes):", args.runs);
        for (op, ms) in &ops {
            println!("  {op:<16} {ms:7.2} ms  {:5.1} %", 100.0 * ms / total.max(1e-9));
        }
    }
    if args.archs > 0 {
        let space = mnas_space::SearchSpace { resolution: args.resolution, num_classes: 10, ..Default::default() };
        let small = MeasureOptions { runs: args.archs_runs, warmup: 3, ..opts.clone() };
        let r = rank_fidelity(&space, args.archs, args.seed, &small, args.passes, contender, ort, &mut |done, n| {
            eprint!("\r  rank agreement: {done}/{n} measurements on both engines");
        })?;
        eprintln!();
        if let Some(path) = &args.csv {
            let mut text = format!("arch,{},ort_ms,macs\n", args.engine.column());
            for (arch, a, b, macs) in &r.rows {
                text.push_str(&format!("\"{arch}\",{a:.4},{b:.4},{macs}\n"));
            }
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
            println!("latencies of the sampled architectures: {}", path.display());
        }
        let ratios: Vec<f64> = r.rows.iter().map(|x| x.1 / x.2).collect();
        let mean_ratio = ratios.iter().sum::<f64>() / ratios.len().max(1) as f64;
        let fmt = |v: Option<f64>| v.map(|t| format!("{t:.3}")).unwrap_or_else(|| "n/a".into());
        let repeat = if r.passes == 1 { "measured again" } else { "one pass against another" };
        println!(
            "rank agreement over {} sampled architectures at {r}x{r} (seed {}, median of {} passes): Kendall tau \
             {label} vs ORT {} (95 % interval {}), MACs vs ORT {}, ORT vs ORT {repeat} {} (the noise of one \
             measurement); {label} / ORT {:.2}x on average",
            r.rows.len(),
            args.seed,
            r.passes,
            fmt(r.tau),
            r.tau_ci.map(|(a, b)| format!("[{a:.3}, {b:.3}]")).unwrap_or_else(|| "n/a".into()),
            fmt(r.tau_macs),
            fmt(r.tau_repeat),
            mean_ratio,
            r = args.resolution
        );
    }
    println!("load average after: {}", super::load_avg());
    Ok(())
}
