//! Training: the short proxy run the search scores every model with, and the paper's full recipe.
//!
//! Weight decay is an L2 term on conv and classifier weights only (no BN, no biases), as in the
//! reference TF code. A loss that turns NaN/inf ends the run as a failed result, not an error:
//! the caller (the search) decides what a failed candidate is worth.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, Optimizer, RmsPropConfig, SgdConfig};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{activation, Int, Tensor, TensorData};
use mnas_data::{batches, Augment, Batch, ImageSet, Splits};
use mnas_space::Arch;
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::ema::Ema;
use crate::error::ModelError;
use crate::net::MnasNet;
use crate::weights::{self, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    /// SGD with Nesterov momentum 0.9 (PyTorch semantics: no dampening).
    Sgd,
    /// RMSProp as in the MnasNet recipe: decay 0.9, momentum 0.9, epsilon 1e-3.
    RmsProp,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrDecay {
    /// Cosine from the peak to 0 over the run.
    Cosine,
    /// x `rate` every `every_epochs` epochs (the paper: 0.97 every 2.4).
    Exponential { rate: f64, every_epochs: f64 },
}

/// Everything a run needs besides the model and the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    pub optimizer: OptimizerKind,
    pub decay: LrDecay,
    pub warmup_epochs: f64,
    /// L2 coefficient on conv/linear weights (loss += wd/2 * sum w^2).
    pub weight_decay: f64,
    pub label_smoothing: f64,
    pub seed: u64,
    /// EMA of the weights (see [`crate::ema`]): evaluated, saved and returned instead of the raw
    /// weights when set. `None` in proxy mode: a 5-epoch run has too few steps to benefit.
    #[serde(default)]
    pub ema_decay: Option<f64>,
}

impl TrainConfig {
    /// The proxy task: a few epochs of SGD with a cosine schedule.
    pub fn proxy() -> Self {
        TrainConfig {
            epochs: 5,
            batch_size: 64,
            lr: 0.1,
            optimizer: OptimizerKind::Sgd,
            decay: LrDecay::Cosine,
            warmup_epochs: 0.5,
            weight_decay: 4e-5,
            label_smoothing: 0.0,
            seed: 0,
            ema_decay: None,
        }
    }

    /// The paper's recipe (DESIGN §1), lr scaled linearly from 0.016 per 256 images.
    pub fn full(epochs: usize, batch_size: usize) -> Self {
        TrainConfig {
            epochs,
            batch_size,
            lr: 0.016 * batch_size as f64 / 256.0,
            optimizer: OptimizerKind::RmsProp,
            decay: LrDecay::Exponential { rate: 0.97, every_epochs: 2.4 },
            warmup_epochs: 5.0_f64.min(epochs as f64 / 4.0),
            weight_decay: 1e-5,
            label_smoothing: 0.1,
            seed: 0,
            ema_decay: Some(0.9999),
        }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |m: String| Err(ModelError::Config(m));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be > 0, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!("label smoothing must be in [0, 1), got {}", self.label_smoothing));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight decay must be >= 0, got {}", self.weight_decay));
        }
        if let Some(d) = self.ema_decay {
            if !(0.0..1.0).contains(&d) {
                return bad(format!("EMA decay must be in [0, 1), got {d}"));
            }
        }
        Ok(())
    }

    /// Learning rate at a fractional epoch.
    pub fn lr_at(&self, epoch: f64) -> f64 {
        if epoch < self.warmup_epochs {
            return self.lr * (epoch + 1e-3) / self.warmup_epochs;
        }
        match self.decay {
            LrDecay::Cosine => {
                let span = (self.epochs as f64 - self.warmup_epochs).max(1e-9);
                let t = ((epoch - self.warmup_epochs) / span).clamp(0.0, 1.0);
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * t).cos())
            }
            LrDecay::Exponential { rate, every_epochs } => {
                self.lr * rate.powf(((epoch - self.warmup_epochs) / every_epochs).floor())
            }
        }
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub train_loss: f64,
    pub train_top1: f64,
    pub val_top1: f64,
    pub val_top5: f64,
    pub lr: f64,
    pub images_per_sec: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum TrainStatus {
    Completed,
    /// The run could not produce a usable model (e.g. the loss diverged).
    Failed {
        reason: String,
    },
}

/// The result of a run. `val_top1`/`val_top5` are on the held-out split (0 for a failed run).
#[derive(Debug, Clone)]
pub struct TrainOutcome<B: Backend> {
    pub status: TrainStatus,
    pub history: Vec<EpochMetrics>,
    pub val_top1: f64,
    pub val_top5: f64,
    pub model: MnasNet<B>,
}

/// Everything a resumed run needs, handed to [`TrainObserver::on_checkpoint`] after each epoch.
pub struct Checkpoint<'a, B: Backend> {
    /// Epochs completed.
    pub epochs_done: usize,
    /// The raw (optimised) weights.
    pub model: &'a MnasNet<B>,
    /// The EMA weights, when the run keeps an average.
    pub ema: Option<&'a MnasNet<B>>,
    /// Optimizer state (momentum / RMS buffers), opaque: give it back in [`Resume::optimizer`].
    pub optimizer: &'a [u8],
}

/// Hooks for progress display and checkpointing. `on_epoch` sees the model that the epoch's
/// held-out figures were measured on (the EMA weights when the run keeps an average).
pub trait TrainObserver<B: Backend> {
    fn on_step(&mut self, _epoch: usize, _step: usize, _steps: usize, _loss: f64, _images_per_sec: f64) {}
    fn on_epoch(&mut self, _metrics: &EpochMetrics, _model: &MnasNet<B>) {}
    fn on_checkpoint(&mut self, _checkpoint: &Checkpoint<'_, B>) {}
    /// Asked after each checkpoint: true ends the run there (it can be resumed later).
    fn should_stop(&self) -> bool {
        false
    }
}

/// Where a resumed run starts: the state a [`Checkpoint`] held.
pub struct Resume<B: AutodiffBackend> {
    pub model: MnasNet<B>,
    pub ema: Option<MnasNet<B::InnerBackend>>,
    pub optimizer: Option<Vec<u8>>,
    /// Epochs already done; training continues with this one.
    pub first_epoch: usize,
}

/// An observer that does nothing.
pub struct Quiet;
impl<B: Backend> TrainObserver<B> for Quiet {}

fn to_tensors<B: Backend>(batch: &Batch, device: &B::Device) -> (Tensor<B, 4>, Vec<i64>) {
    let n = batch.len();
    let s = batch.size;
    let x = Tensor::from_data(TensorData::new(batch.images.clone(), [n, 3, s, s]), device);
    (x, batch.labels.clone())
}

/// Cross-entropy with label smoothing, averaged over the batch.
pub fn smoothed_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: &[i64],
    smoothing: f64,
    device: &B::Device,
) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let idx: Tensor<B, 2, Int> = Tensor::from_data(TensorData::new(labels.to_vec(), [n, 1]), device);
    let logp = activation::log_softmax(logits, 1);
    let nll = logp.clone().gather(1, idx).mean().neg();
    if smoothing > 0.0 {
        nll.mul_scalar(1.0 - smoothing) + logp.mean().neg().mul_scalar(smoothing)
    } else {
        nll
    }
}

fn l2_of_weights<B: Backend>(model: &MnasNet<B>) -> Option<Tensor<B, 1>> {
    let mut total: Option<Tensor<B, 1>> = None;
    weights::visit(model, |_, slot| {
        let term = match slot {
            Slot::P4(p) => Some(p.val().square().sum()),
            Slot::P2(p) => Some(p.val().square().sum()),
            _ => None,
        };
        if let Some(t) = term {
            total = Some(match total.take() {
                Some(acc) => acc + t,
                None => t,
            });
        }
    });
    total
}

/// Top-1 and top-5 accuracy of `model` on `set` (eval mode).
pub fn evaluate<B: Backend>(
    model: &MnasNet<B>,
    set: &ImageSet,
    norm: mnas_data::Normalize,
    batch_size: usize,
) -> (f64, f64) {
    let device = model.conv_stem.weight.device();
    let (mut top1, mut top5, mut n) = (0usize, 0usize, 0usize);
    for batch in batches(set, batch_size, norm, Augment::None, None, false) {
        let (x, labels) = to_tensors::<B>(&batch, &device);
        let logits = model.forward(x);
        let [rows, classes] = logits.dims();
        let values = logits.into_data().convert::<f32>().to_vec::<f32>().expect("float logits");
        for (r, &label) in labels.iter().enumerate().take(rows) {
            let row = &values[r * classes..(r + 1) * classes];
            let target = row[label as usize];
            let better = row.iter().filter(|&&v| v > target).count();
            top1 += usize::from(better == 0);
            top5 += usize::from(better < 5);
        }
        n += rows;
    }
    let n = n.max(1) as f64;
    (top1 as f64 / n, top5 as f64 / n)
}

/// Trains `arch` (classes taken from the data) on `data.train`, scoring on `data.val` each epoch.
/// `start` continues from a model with fresh optimizer state; `first_epoch` skips epochs already
/// done. [`train_from`] resumes exactly (optimizer state and EMA included).
pub fn train<B: AutodiffBackend>(
    arch: &Arch,
    data: &Splits,
    cfg: &TrainConfig,
    device: &B::Device,
    start: Option<MnasNet<B>>,
    first_epoch: usize,
    observer: &mut dyn TrainObserver<B::InnerBackend>,
) -> Result<TrainOutcome<B::InnerBackend>, ModelError> {
    let resume = start.map(|model| Resume { model, ema: None, optimizer: None, first_epoch });
    train_from(arch, data, cfg, device, resume, observer)
}

/// The random stream of one epoch (dropout), so that a resumed run draws what a straight one would.
fn epoch_seed(cfg: &TrainConfig, epoch: usize) -> u64 {
    cfg.seed.wrapping_mul(1_000_003).wrapping_add(epoch as u64)
}

/// [`train`] from a full checkpoint: a run of N epochs resumed after k gives the same weights as
/// one run straight through (same data order, dropout draws, optimizer and EMA state).
pub fn train_from<B: AutodiffBackend>(
    arch: &Arch,
    data: &Splits,
    cfg: &TrainConfig,
    device: &B::Device,
    resume: Option<Resume<B>>,
    observer: &mut dyn TrainObserver<B::InnerBackend>,
) -> Result<TrainOutcome<B::InnerBackend>, ModelError> {
    cfg.validate()?;
    let mut arch = arch.clone();
    arch.num_classes = data.classes.len() as u32;
    arch.resolution = data.train.size as u32;
    let (mut model, ema_start, optim_state, first_epoch) = match resume {
        Some(r) => (r.model, r.ema, r.optimizer, r.first_epoch),
        None => (MnasNet::<B>::seeded(&arch, device, cfg.seed)?, None, None, 0),
    };
    let mut optim_sgd = SgdConfig::new()
        .with_momentum(Some(MomentumConfig { momentum: 0.9, dampening: 0.0, nesterov: true }))
        .init::<B, MnasNet<B>>();
    let mut optim_rms =
        RmsPropConfig::new().with_alpha(0.9).with_momentum(0.9).with_epsilon(1e-3).init::<B, MnasNet<B>>();
    if let Some(bytes) = optim_state {
        match cfg.optimizer {
            OptimizerKind::Sgd => optim_sgd = optim_sgd.load_record(checkpoint::decode(bytes, &model, device)?),
            OptimizerKind::RmsProp => optim_rms = optim_rms.load_record(checkpoint::decode(bytes, &model, device)?),
        }
    }
    let mut ema = cfg.ema_decay.map(|d| match &ema_start {
        Some(avg) => Ema::new(avg, d),
        None => Ema::new(&model, d),
    });
    let steps = (data.train.len() / cfg.batch_size).max(1);
    let aug = Augment::for_size(data.train.size);
    let mut history = Vec::new();
    let mut final_model = None;
    for epoch in first_epoch..cfg.epochs {
        B::seed(device, epoch_seed(cfg, epoch) ^ 0x5eed);
        let started = Instant::now();
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0usize, 0usize);
        let drop_last = data.train.len() >= cfg.batch_size;
        let mut lr = cfg.lr;
        for (step, batch) in
            batches(&data.train, cfg.batch_size, data.norm, aug, Some(epoch_seed(cfg, epoch)), drop_last).enumerate()
        {
            lr = cfg.lr_at(epoch as f64 + step as f64 / steps as f64);
            let (x, labels) = to_tensors::<B>(&batch, device);
            let logits = model.forward(x);
            let mut loss = smoothed_cross_entropy(logits.clone(), &labels, cfg.label_smoothing, device);
            let loss_value = loss.clone().into_scalar().elem_f64();
            if !loss_value.is_finite() {
                let reason = format!("loss became {loss_value} at epoch {epoch}, step {step}");
                return Ok(TrainOutcome {
                    status: TrainStatus::Failed { reason },
                    history,
                    val_top1: 0.0,
                    val_top5: 0.0,
                    model: model.valid(),
                });
            }
            if cfg.weight_decay > 0.0 {
                if let Some(l2) = l2_of_weights(&model) {
                    loss = loss + l2.mul_scalar(cfg.weight_decay / 2.0);
                }
            }
            let predicted = logits.argmax(1).into_data().convert::<i64>().to_vec::<i64>().expect("int argmax");
            correct += predicted.iter().zip(&labels).filter(|(p, l)| p == l).count();
            seen += labels.len();
            loss_sum += loss_value * labels.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = match cfg.optimizer {
                OptimizerKind::Sgd => optim_sgd.step(lr, model, grads),
                OptimizerKind::RmsProp => optim_rms.step(lr, model, grads),
            };
            if let Some(avg) = ema.as_mut() {
                avg.update(&model, (epoch * steps + step) as u64);
            }
            let ips = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            observer.on_step(epoch, step, steps, loss_value, ips);
        }
        let raw = model.valid();
        let averaged = ema.as_ref().map(|avg| avg.apply(&raw));
        let eval_model = averaged.as_ref().unwrap_or(&raw);
        let (val_top1, val_top5) = evaluate(eval_model, &data.val, data.norm, 256);
        let seconds = started.elapsed().as_secs_f64();
        let metrics = EpochMetrics {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_top1: correct as f64 / seen.max(1) as f64,
            val_top1,
            val_top5,
            lr,
            images_per_sec: seen as f64 / seconds.max(1e-9),
            seconds,
        };
        observer.on_epoch(&metrics, eval_model);
        let optimizer = match cfg.optimizer {
            OptimizerKind::Sgd => checkpoint::encode(optim_sgd.to_record(), &model)?,
            OptimizerKind::RmsProp => checkpoint::encode(optim_rms.to_record(), &model)?,
        };
        observer.on_checkpoint(&Checkpoint {
            epochs_done: epoch + 1,
            model: &raw,
            ema: averaged.as_ref(),
            optimizer: &optimizer,
        });
        history.push(metrics);
        final_model = Some(averaged.unwrap_or(raw));
        if observer.should_stop() {
            break;
        }
    }
    let (val_top1, val_top5) = history.last().map(|m| (m.val_top1, m.val_top5)).unwrap_or((0.0, 0.0));
    let model = match final_model {
        Some(m) => m,
        None => match (&ema, ema_start) {
            (Some(_), Some(avg)) => avg,
            _ => model.valid(),
        },
    };
    Ok(TrainOutcome { status: TrainStatus::Completed, history, val_top1, val_top5, model })
}

trait ElemF64 {
    fn elem_f64(self) -> f64;
}
impl<E: burn::tensor::ElementConversion> ElemF64 for E {
    fn elem_f64(self) -> f64 {
        self.elem::<f64>()
    }
}
