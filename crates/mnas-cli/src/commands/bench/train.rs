//! `mnas bench train`: the training-step benchmark "T" (DESIGN §6), mnas and PyTorch side by side.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use mnas_engine::loss::cross_entropy;
use mnas_engine::train::{Optimizer as EngineOptimizer, UpdateRule};
use mnas_engine::{Net, NetOptions};
use mnas_model::backend::CpuTrain;
use mnas_model::burn::module::AutodiffModule;
use mnas_model::burn::optim::momentum::MomentumConfig;
use mnas_model::burn::optim::{GradientsParams, Optimizer, SgdConfig};
use mnas_model::burn::tensor::backend::Backend;
use mnas_model::burn::tensor::{Device, Distribution, Tensor};
use mnas_model::train::smoothed_cross_entropy;
use mnas_model::{cpu_ops, MnasNet};
use rand::{Rng, SeedableRng};

/// PyTorch twin of the benchmark, shipped inside the binary so that it runs from anywhere.
const TORCH_SCRIPT: &str = include_str!("../../../../../bench/reference/bench_train_t.py");

/// Net T in block strings. Its stem has stride 1, which block strings cannot say (mnas stems
/// have stride 2); the bench sets it on the built model.
pub const NET_T: &str = "stem16 ir_r1_k3_s2_e6_c24 ir_r1_k5_s2_e6_c40_se0.25 ir_r1_k3_s2_e6_c80 head320";
/// Trainable parameters of PyTorch's NetT (shared/reference/pyref_bench.py).
pub const NET_T_PARAMS: usize = 82_480;

#[derive(Args, Debug)]
pub struct BenchTrainArgs {
    /// Threads for mnas (rayon pool) and for PyTorch (torch.set_num_threads).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Timed steps (the median is reported).
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,
    /// Skip the PyTorch twin.
    #[arg(long)]
    pub no_torch: bool,
    /// Also time the burn path (what `mnas train --mode full` and the GPU build train with).
    #[arg(long)]
    pub burn: bool,
}

/// Step-time figures in milliseconds.
struct Figures {
    median: f64,
    min: f64,
    n: usize,
}

fn figures(mut ms: Vec<f64>) -> Figures {
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 { ms[n / 2] } else { (ms[n / 2 - 1] + ms[n / 2]) / 2.0 };
    Figures { median, min: ms[0], n }
}

/// Net T as a burn model: the block strings above with the stem's stride set to 1.
fn net_t(device: &Device<CpuTrain>) -> Result<MnasNet<CpuTrain>> {
    let mut model = MnasNet::<CpuTrain>::new(&net_t_arch()?, device)?;
    model.conv_stem.stride = 1;
    Ok(model)
}

pub fn run(args: BenchTrainArgs) -> Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if !cpu_ops::set_threads(args.threads) {
        eprintln!("warning: the thread pool was already started; --threads {} may not apply", args.threads);
    }
    println!("bench train T: batch 64x3x32x32, SGD lr 0.01 momentum 0.9, threads {}", args.threads);
    println!("load average before: {}", super::load_avg());
    let ours = bench_engine(&args)?;
    println!(
        "mnas:    median {:8.1} ms  min {:8.1} ms  ({} steps, {} warm-up; CPU engine, {})",
        ours.median,
        ours.min,
        ours.n,
        args.warmup,
        mnas_engine::simd::level()
    );
    if args.burn {
        let b = bench_burn(&args)?;
        println!("burn:    median {:8.1} ms  min {:8.1} ms  ({} steps; the burn path)", b.median, b.min, b.n);
    }
    if args.no_torch {
        println!("pytorch: skipped (--no-torch)");
        return Ok(());
    }
    match bench_torch(&args) {
        Ok(t) => {
            println!("pytorch: median {:8.1} ms  min {:8.1} ms  ({} steps)", t.median, t.min, t.n);
            println!("ratio mnas/pytorch (median): {:.2}", ours.median / t.median);
        }
        Err(reason) => println!("pytorch: skipped ({reason:#})"),
    }
    Ok(())
}

fn net_t_arch() -> Result<mnas_space::Arch> {
    let mut arch = mnas_space::parse_block_list(NET_T)?;
    arch.num_classes = 10;
    arch.resolution = 32;
    arch.dropout = 0.0;
    Ok(arch)
}

/// The engine's step: what every proxy trial runs.
fn bench_engine(args: &BenchTrainArgs) -> Result<Figures> {
    let options = NetOptions { stem_stride: 1, ..NetOptions::default() };
    let mut net = Net::new(&net_t_arch()?, options, 0)?;
    let params = net.params.trainable();
    if params != NET_T_PARAMS {
        bail!("net T has {params} trainable parameters here, PyTorch's has {NET_T_PARAMS}");
    }
    println!("net T: {NET_T} (stem stride 1), {params} trainable parameters (PyTorch: {NET_T_PARAMS})");
    // The same input distribution as the twin: N(0, 1) pixels, labels i * 7 mod 10.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let x: Vec<f32> = (0..64 * 32 * 32 * 3)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.gen_range(f64::MIN_POSITIVE..1.0), rng.gen());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect();
    let labels: Vec<u32> = (0..64).map(|i| i * 7 % 10).collect();
    let mut rule = UpdateRule::new(&net, EngineOptimizer::Sgd, 0.9, false, 0.0);
    let mut times = Vec::with_capacity(args.steps);
    let mut last_loss = f64::NAN;
    for i in 0..args.warmup + args.steps {
        let started = Instant::now();
        let (logits, tape) = net.forward_train(&x, 64, 32, 0)?;
        let out = cross_entropy(&logits, &labels, 10, 0.0);
        let grads = net.backward(tape, &out.dlogits);
        rule.step(&mut net, grads, 0.01);
        last_loss = out.loss;
        if i >= args.warmup {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    if !last_loss.is_finite() {
        bail!("the benchmark's loss diverged ({last_loss})");
    }
    Ok(figures(times))
}

/// The burn path's step, for comparison.
fn bench_burn(args: &BenchTrainArgs) -> Result<Figures> {
    let device = Default::default();
    CpuTrain::seed(&device, 0);
    let mut model = net_t(&device)?;
    let mut optim = SgdConfig::new()
        .with_momentum(Some(MomentumConfig { momentum: 0.9, dampening: 0.0, nesterov: false }))
        .init::<CpuTrain, MnasNet<CpuTrain>>();
    let x = Tensor::<CpuTrain, 4>::random([64, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let labels: Vec<i64> = (0..64).map(|i| (i * 7 % 10) as i64).collect();
    let mut times = Vec::with_capacity(args.steps);
    let mut last_loss = f32::NAN;
    for i in 0..args.warmup + args.steps {
        let started = Instant::now();
        let logits = model.forward(x.clone());
        let loss = smoothed_cross_entropy(logits, &labels, 0.0, &device);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.01, model, grads);
        // Reading the loss is part of PyTorch's step too (loss.item()).
        last_loss = loss.into_scalar();
        if i >= args.warmup {
            times.push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let _ = model.valid();
    if !last_loss.is_finite() {
        bail!("the benchmark's loss diverged ({last_loss})");
    }
    Ok(figures(times))
}

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("MNAS_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    if venv.is_file() {
        return venv;
    }
    PathBuf::from("python3")
}

fn bench_torch(args: &BenchTrainArgs) -> Result<Figures> {
    let py = python();
    let probe = Command::new(&py).args(["-c", "import torch"]).output();
    match probe {
        Err(e) => bail!("cannot run {}: {e}", py.display()),
        Ok(o) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            let last = err.lines().last().unwrap_or("import failed");
            bail!("{} has no torch ({last}); set MNAS_PYTHON to a Python with torch", py.display())
        }
        Ok(_) => {}
    }
    let script = std::env::temp_dir().join(format!("mnas-bench-train-t-{}.py", std::process::id()));
    std::fs::write(&script, TORCH_SCRIPT).with_context(|| format!("cannot write {}", script.display()))?;
    let out = Command::new(&py)
        .arg(&script)
        .args(["--threads", &args.threads.to_string()])
        .args(["--steps", &args.steps.to_string(), "--warmup", &args.warmup.to_string()])
        .output();
    let _ = std::fs::remove_file(&script);
    let out = out.with_context(|| format!("cannot run {}", py.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        bail!("the PyTorch twin failed: {}", err.lines().last().unwrap_or("no output"));
    }
    let line = stdout.lines().find(|l| l.starts_with("FIG ")).context("the PyTorch twin printed no FIG line")?;
    let field = |name: &str| -> Result<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in `{line}`"))
    };
    let params = field("params")? as usize;
    if params != NET_T_PARAMS {
        bail!("PyTorch's net T has {params} parameters, expected {NET_T_PARAMS}");
    }
    Ok(Figures { median: field("median_ms")?, min: field("min_ms")?, n: field("n")? as usize })
}
