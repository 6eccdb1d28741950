//! `mnas train` and `mnas eval`: proxy and full training runs on real data, with checkpoints.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use mnas_data::{DataSpec, Source, Splits};
use mnas_model::backend::{Cpu, CpuTrain};
use mnas_model::train::{
    evaluate, train_from, Checkpoint, EpochMetrics, Resume, TrainConfig, TrainObserver, TrainStatus,
};
use mnas_model::{weights, MnasNet};
use serde::{Deserialize, Serialize};

use crate::spec::{resolve, ArchOverrides};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
pub enum Mode {
    /// Few epochs, SGD + cosine: the search's proxy task; reports held-out accuracy.
    Proxy,
    /// The paper's recipe: RMSProp, warm-up then x0.97 every 2.4 epochs, label smoothing 0.1.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Device {
    Cpu,
    Cuda,
}

/// Options shared by `train` and `eval` for choosing data.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Dataset: an ImageFolder directory or .tar.gz, a CIFAR-10 binary directory, or an IDX
    /// directory. Default: the embedded CIFAR-10 subset (10,000 train / 1,000 test).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Fraction of train held out for validation.
    #[arg(long, default_value_t = 0.1)]
    pub val_fraction: f64,
    /// Seed of the held-out split.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
}

impl DataArgs {
    fn load(&self, resolution: Option<u32>) -> Result<Splits> {
        let spec = DataSpec {
            source: self.data.clone().map(Source::Path).unwrap_or(Source::Embedded),
            resolution: resolution.map(|r| r as usize),
            val_fraction: self.val_fraction,
            split_seed: self.split_seed,
        };
        let splits = mnas_data::open(&spec)?;
        eprintln!(
            "data: {} — {} train, {} held-out, {} test, {} classes, {}x{}",
            splits.name,
            splits.train.len(),
            splits.val.len(),
            splits.test.len(),
            splits.classes.len(),
            splits.train.size,
            splits.train.size
        );
        Ok(splits)
    }
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Architecture: model name, arch JSON file, block strings, or the one-line form outputs print.
    #[arg(long, default_value = "mnasnet-small")]
    pub arch: String,
    #[command(flatten)]
    pub overrides: ArchOverrides,
    #[command(flatten)]
    pub data: DataArgs,
    #[arg(long, value_enum, default_value_t = Mode::Proxy)]
    pub mode: Mode,
    /// Epochs (default: 5 for proxy, 20 for full).
    #[arg(long)]
    pub epochs: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Peak learning rate (default: 0.1 proxy; 0.016 per 256 images full).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep an exponential moving average of the weights with this decay, and evaluate and save
    /// the average (default: 0.9999 in full mode, as in the paper, warmed up as
    /// min(decay, (1+step)/(10+step)); off in proxy mode). 0 turns it off.
    #[arg(long)]
    pub ema_decay: Option<f64>,
    /// Run directory for checkpoints and metrics (default: runs/train-<time>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint.
    #[arg(long, conflicts_with = "out")]
    pub resume: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    pub device: Device,
    /// Stop (resumably) once this many epochs are done in total, as if killed there.
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[arg(long)]
    pub arch: String,
    #[command(flatten)]
    pub overrides: ArchOverrides,
    /// Weights to evaluate (mnas safetensors).
    #[arg(long)]
    pub weights: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
}

/// What a run directory remembers between epochs.
#[derive(Debug, Serialize, Deserialize)]
struct RunState {
    arch: mnas_space::Arch,
    mode: Mode,
    config: TrainConfig,
    data: Option<PathBuf>,
    val_fraction: f64,
    split_seed: u64,
    /// `--resolution`: the size the data is resized to (`None`: the data set's own).
    #[serde(default)]
    resolution: Option<u32>,
    epochs_done: usize,
    history: Vec<EpochMetrics>,
    status: Option<TrainStatus>,
}

struct Observer {
    bar: ProgressBar,
    dir: PathBuf,
    state: RunState,
    stop_after: Option<usize>,
}

impl Observer {
    fn say(&self, line: String) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }
}

impl TrainObserver<Cpu> for Observer {
    fn on_step(&mut self, epoch: usize, step: usize, steps: usize, loss: f64, ips: f64) {
        if step == 0 {
            self.bar.set_length(steps as u64);
            self.bar.set_position(0);
        }
        self.bar.set_prefix(format!("epoch {}/{}", epoch + 1, self.state.config.epochs));
        self.bar.set_message(format!("loss {loss:.3}  {ips:.0} img/s"));
        self.bar.inc(1);
    }

    fn on_epoch(&mut self, m: &EpochMetrics, _model: &MnasNet<Cpu>) {
        self.say(format!(
            "epoch {:>3}: loss {:.4}  train {:.2}%  held-out top-1 {:.2}%  top-5 {:.2}%  lr {:.4}  {:.0} img/s  {:.1}s",
            m.epoch + 1,
            m.train_loss,
            m.train_top1 * 100.0,
            m.val_top1 * 100.0,
            m.val_top5 * 100.0,
            m.lr,
            m.images_per_sec,
            m.seconds
        ));
        self.state.history.push(m.clone());
    }

    fn on_checkpoint(&mut self, c: &Checkpoint<'_, Cpu>) {
        self.state.epochs_done = c.epochs_done;
        // Weights and optimizer state first, then the state that points past them: a kill
        // between the two replays one epoch instead of skipping one.
        let saved = save_checkpoint(&self.dir, c).and_then(|_| write_metrics(&self.dir, &self.state));
        if let Err(e) = saved {
            self.say(format!("warning: cannot write checkpoint: {e:#}"));
        }
    }

    fn should_stop(&self) -> bool {
        self.stop_after.is_some_and(|n| self.state.epochs_done >= n)
    }
}

/// Raw weights (checkpoint.safetensors), the EMA (ema.safetensors) and the optimizer state
/// (optimizer.bin): what `--resume` needs to continue as if never stopped.
fn save_checkpoint(dir: &Path, c: &Checkpoint<'_, Cpu>) -> Result<()> {
    weights::save(c.model, &dir.join("checkpoint.safetensors"))?;
    if let Some(ema) = c.ema {
        weights::save(ema, &dir.join("ema.safetensors"))?;
    }
    write_atomic(&dir.join("optimizer.bin"), c.optimizer)
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.sync_all().ok();
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn write_metrics(dir: &Path, state: &RunState) -> Result<()> {
    write_atomic(&dir.join("state.json"), serde_json::to_string_pretty(state)?.as_bytes())?;
    let mut csv = String::from("epoch,train_loss,train_top1,val_top1,val_top5,lr,images_per_sec,seconds\n");
    for m in &state.history {
        csv += &format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:.1},{:.2}\n",
            m.epoch + 1,
            m.train_loss,
            m.train_top1,
            m.val_top1,
            m.val_top5,
            m.lr,
            m.images_per_sec,
            m.seconds
        );
    }
    write_atomic(&dir.join("metrics.csv"), csv.as_bytes())
}

fn default_run_dir() -> PathBuf {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    PathBuf::from("runs").join(format!("train-{secs}"))
}

pub fn run_train(args: TrainArgs) -> Result<()> {
    if args.device == Device::Cuda {
        bail!("--device cuda needs a binary built with `--features cuda` and an NVIDIA GPU; this build runs on the CPU only");
    }
    let (dir, mut state) = match &args.resume {
        Some(dir) => {
            let path = dir.join("state.json");
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!("{} is not a training run directory (no readable state.json)", dir.display())
            })?;
            let state: RunState =
                serde_json::from_str(&text).with_context(|| format!("{}: corrupt run state", path.display()))?;
            if matches!(state.status, Some(TrainStatus::Completed)) && state.epochs_done >= state.config.epochs {
                bail!("{}: the run already finished all {} epochs", dir.display(), state.config.epochs);
            }
            if let Some(r) = args.overrides.resolution.filter(|r| Some(*r) != state.resolution) {
                let stored = state.resolution.map(|s| format!("{s}x{s}")).unwrap_or_else(|| "the data's own".into());
                bail!(
                    "--resolution {r} contradicts the run's {stored} resolution; a resumed run keeps its settings \
                     (start a new run with --out to change them)"
                );
            }
            (dir.clone(), state)
        }
        None => {
            let arch = resolve(&args.arch, &args.overrides)?;
            let mut config = match args.mode {
                Mode::Proxy => TrainConfig::proxy(),
                // The warm-up length follows the epoch count (a quarter of it, at most 5).
                Mode::Full => TrainConfig::full(args.epochs.unwrap_or(20), args.batch_size),
            };
            config.batch_size = args.batch_size;
            if let Some(e) = args.epochs {
                config.epochs = e;
            }
            if let Some(lr) = args.lr {
                config.lr = lr;
            }
            if let Some(d) = args.ema_decay {
                config.ema_decay = (d != 0.0).then_some(d);
            }
            config.seed = args.seed;
            config.validate()?;
            let dir = args.out.clone().unwrap_or_else(default_run_dir);
            if dir.join("state.json").exists() {
                bail!("{} already holds a run; use --resume {} or another --out", dir.display(), dir.display());
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create run directory {}", dir.display()))?;
            let state = RunState {
                arch,
                mode: args.mode,
                config,
                data: args.data.data.clone(),
                val_fraction: args.data.val_fraction,
                split_seed: args.data.split_seed,
                resolution: args.overrides.resolution,
                epochs_done: 0,
                history: Vec::new(),
                status: None,
            };
            (dir, state)
        }
    };
    let data_args =
        DataArgs { data: state.data.clone(), val_fraction: state.val_fraction, split_seed: state.split_seed };
    let splits = data_args.load(state.resolution)?;
    let device = Default::default();
    let checkpoint = dir.join("checkpoint.safetensors");
    let resume = if state.epochs_done > 0 && checkpoint.exists() {
        let mut arch = state.arch.clone();
        arch.num_classes = splits.classes.len() as u32;
        arch.resolution = splits.train.size as u32;
        let mut model = MnasNet::<CpuTrain>::new(&arch, &device)?;
        weights::load(&mut model, &checkpoint, &device)?;
        let ema_path = dir.join("ema.safetensors");
        let ema = match state.config.ema_decay.is_some() && ema_path.exists() {
            true => {
                let mut m = MnasNet::<Cpu>::new(&arch, &device)?;
                weights::load(&mut m, &ema_path, &device)?;
                Some(m)
            }
            false => None,
        };
        let opt_path = dir.join("optimizer.bin");
        let optimizer = match opt_path.exists() {
            true => Some(std::fs::read(&opt_path).with_context(|| format!("cannot read {}", opt_path.display()))?),
            false => {
                eprintln!("warning: {} missing: the optimizer restarts with empty state", opt_path.display());
                None
            }
        };
        eprintln!("resuming {} after epoch {}", dir.display(), state.epochs_done);
        Some(Resume { model, ema, optimizer, first_epoch: state.epochs_done })
    } else {
        None
    };
    if resume.is_none() {
        state.history.clear();
    }
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let config = state.config.clone();
    let arch = state.arch.clone();
    let mut observer = Observer { bar, dir: dir.clone(), state, stop_after: args.stop_after };
    let outcome = train_from::<CpuTrain>(&arch, &splits, &config, &device, resume, &mut observer)?;
    observer.bar.finish_and_clear();
    let mut state = observer.state;
    // The model to use: the EMA weights when the run keeps an average.
    weights::save(&outcome.model, &dir.join("weights.safetensors"))?;
    state.status = Some(outcome.status.clone());
    write_metrics(&dir, &state)?;
    match outcome.status {
        TrainStatus::Completed => println!(
            "held-out accuracy: top-1 {:.2}%  top-5 {:.2}%  ({} epochs)  -> {}",
            outcome.val_top1 * 100.0,
            outcome.val_top5 * 100.0,
            state.epochs_done,
            dir.display()
        ),
        TrainStatus::Failed { reason } => println!("training failed: {reason} -> {}", dir.display()),
    }
    Ok(())
}

pub fn run_eval(args: EvalArgs) -> Result<()> {
    let stored = weights::stored_arch(&args.weights)?;
    let mut arch = resolve(&args.arch, &args.overrides)?;
    let splits = args.data.load(Some(stored.as_ref().map(|a| a.resolution).unwrap_or(arch.resolution)))?;
    arch.num_classes = splits.classes.len() as u32;
    arch.resolution = splits.train.size as u32;
    let device = Default::default();
    let mut model = MnasNet::<Cpu>::new(&arch, &device)?;
    weights::load(&mut model, &args.weights, &device)
        .with_context(|| format!("cannot load {} for this architecture", args.weights.display()))?;
    let (set, which) = if splits.test.is_empty() { (&splits.val, "held-out") } else { (&splits.test, "test") };
    let (top1, top5) = evaluate(&model, set, splits.norm, 256);
    println!("{which} ({} images): top-1 {:.2}%  top-5 {:.2}%", set.len(), top1 * 100.0, top5 * 100.0);
    Ok(())
}
