//! `mnas bench latency`: the built-in engine against ONNX Runtime (or either against a second
//! instance of itself) in the same run: MnasNet-A1 side by side (their ratio), the built-in
//! engine's op breakdown, and how well the two agree on the order of sampled models (Kendall tau).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use mnas_latency::engines::{rank_fidelity, side_by_side};
use mnas_latency::measure::{op_breakdown, planned_cores};
use mnas_latency::{BuiltIn, LocalEngine, MeasureOptions, OrtEngine};

use crate::commands::engine_arg::EngineArg;
use crate::commands::progress;

/// One side of the comparison: the engine and how the output names it.
struct Side {
    engine: &'static dyn LocalEngine,
    name: &'static str,
    /// The CSV column of its latencies.
    column: &'static str,
    description: String,
}

/// One side of the comparison for `engine`: the engine and how the output names it (ONNX
/// Runtime is loaded here, so only when a side needs it).
fn side(engine: EngineArg, ort_lib: Option<&Path>) -> Result<Side> {
    Ok(match engine {
        EngineArg::BuiltIn => Side {
            engine: &BuiltIn,
            name: "built-in",
            column: "builtin_ms",
            description: format!("the built-in engine {}", mnas_latency::ENGINE_VERSION),
        },
        EngineArg::Ort => {
            let ort = OrtEngine::load(ort_lib)?;
            Side {
                engine: ort,
                name: "ORT",
                column: "ort_ms",
                description: format!("ONNX Runtime {} ({})", ort.version, ort.library.display()),
            }
        }
    })
}

#[derive(Args, Debug)]
pub struct BenchLatencyArgs {
    /// The engine compared.
    #[arg(long, value_enum, default_value = "built-in")]
    pub engine: EngineArg,
    /// The engine it is compared with. The same engine as --engine sets a second instance of it
    /// against the first, measured in the same turns: the tau they reach is the most that any
    /// engine can reach against it here with these runs and passes (the ceiling that measurement
    /// noise puts on the figure).
    #[arg(long, value_enum, default_value = "ort")]
    pub against: EngineArg,
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
    /// Also write the sampled architectures' latencies (arch, engine ms, the --against engine ms, MACs) as CSV.
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
    let (a, b) = (side(args.engine, args.ort_lib.as_deref())?, side(args.against, args.ort_lib.as_deref())?);
    let same = args.engine == args.against;
    let b_name = b.name;
    // A second instance of the same engine is told apart by name.
    let a_label = if same { format!("{} again", a.name) } else { a.name.to_string() };
    let mut arch = crate::spec::resolve(&args.arch, &Default::default())?;
    arch.resolution = args.resolution;
    let opts = MeasureOptions { threads: args.threads, runs: args.runs, warmup: 10, ..MeasureOptions::default() };
    let cores = planned_cores(&opts)?;
    println!(
        "bench latency: batch 1, {} thread(s) pinned to {:?}, {} against {}",
        args.threads,
        cores,
        a.description,
        if same { "a second instance of it" } else { &b.description }
    );
    println!("load average before: {}", super::load_avg());
    let s = side_by_side(&arch, &opts, a.engine, b.engine, args.rounds)?;
    let name = arch.name.clone().unwrap_or_else(|| args.arch.clone());
    for (i, (a, b)) in s.rounds.iter().enumerate() {
        println!("  round {}: {a_label} {a:.2} ms, {b_name} {b:.2} ms", i + 1);
    }
    println!(
        "{name} at {r}x{r}: {a_label} median {:.2} ms, {b_name} median {:.2} ms: {a_label} / {b_name} = {:.2}x",
        s.a_ms(),
        s.b_ms(),
        s.ratio(),
        r = args.resolution
    );
    if args.engine == EngineArg::BuiltIn {
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
        let bar = progress::bar(
            Some((args.archs * args.passes) as u64),
            "  rank agreement [{bar:30}] {pos}/{len} measurements on both engines, {elapsed}, ETA {eta}",
        );
        let r =
            rank_fidelity(&space, args.archs, args.seed, &small, args.passes, a.engine, b.engine, &mut |done, _| {
                if let Some(bar) = &bar {
                    bar.set_position(done as u64);
                }
            });
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let r = r?;
        if let Some(path) = &args.csv {
            let a_column = if same { a.column.replace("_ms", "_again_ms") } else { a.column.into() };
            let mut text = format!("arch,{a_column},{},macs\n", b.column);
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
             {a_label} vs {b_name} {} (95 % interval {}), MACs vs {b_name} {}, {b_name} vs {b_name} {repeat} {} \
             (the noise of one measurement); {a_label} / {b_name} {:.2}x on average",
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
