//! SGD training and evaluation on the engine: what every proxy trial runs. One seed drives the
//! weights' initialisation (given to [`Net::new`] by the caller), the data order, augmentation and
//! dropout, so that two trials of one recipe differ only by their architectures.

use std::time::Instant;

use mnas_data::{batches_in, Augment, ImageSet, Layout, Normalize};
use serde::{Deserialize, Serialize};

use crate::error::EngineError;
use crate::loss::cross_entropy;
use crate::net::Net;
use crate::params::Role;

/// How the learning rate falls after the warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Half a cosine down to 0.
    Cosine,
    /// A straight line down to 0.
    Linear,
}

/// The update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// SGD with Nesterov momentum (PyTorch semantics: no dampening); weight decay as L2.
    Sgd,
    /// AdamW (betas 0.9 / 0.999, eps 1e-8); weight decay decoupled, on conv and dense weights.
    AdamW,
}

/// One training run's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SgdRecipe {
    pub optimizer: Optimizer,
    /// Passes over the training set (fractions allowed: 0.5 = half of it).
    pub epochs: f64,
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Share of the steps spent warming up linearly from 0.
    pub warmup: f64,
    pub decay: Decay,
    /// Nesterov momentum (PyTorch semantics: no dampening).
    pub momentum: f64,
    /// L2 on conv and dense weights (not BN, not biases), added to the gradient.
    pub weight_decay: f64,
    pub label_smoothing: f64,
    /// Pad-crop (small images) or resized-crop (larger) plus flips.
    pub augment: bool,
    /// Data order, augmentation and dropout.
    pub seed: u64,
}

impl SgdRecipe {
    pub fn validate(&self) -> Result<(), EngineError> {
        let bad = |m: String| Err(EngineError::Config(m));
        if !(self.epochs.is_finite() && self.epochs > 0.0) {
            return bad(format!("epochs must be > 0, got {}", self.epochs));
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("learning rate must be > 0, got {}", self.lr));
        }
        if !(0.0..1.0).contains(&self.warmup) {
            return bad(format!("warm-up must be a share of the steps in [0, 1), got {}", self.warmup));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("momentum must be in [0, 1), got {}", self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!("weight decay must be >= 0, got {}", self.weight_decay));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad(format!("label smoothing must be in [0, 1), got {}", self.label_smoothing));
        }
        Ok(())
    }

    /// Steps over a training set of `n` images (whole batches only).
    pub fn steps(&self, n: usize) -> usize {
        let per_epoch = n / self.batch_size.min(n.max(1)).max(1);
        ((self.epochs * per_epoch as f64).round() as usize).max(1)
    }

    /// The learning rate at step `t` of `total`.
    pub fn lr_at(&self, t: usize, total: usize) -> f64 {
        let warm = (self.warmup * total as f64).round() as usize;
        if t < warm {
            return self.lr * (t + 1) as f64 / warm as f64;
        }
        let span = (total - warm).max(1) as f64;
        let x = ((t - warm) as f64 / span).clamp(0.0, 1.0);
        match self.decay {
            Decay::Cosine => 0.5 * self.lr * (1.0 + (std::f64::consts::PI * x).cos()),
            Decay::Linear => self.lr * (1.0 - x),
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunStatus {
    Completed,
    /// The loss turned NaN or infinite: the architecture cannot train with this recipe.
    Diverged {
        reason: String,
    },
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub status: RunStatus,
    pub steps: usize,
    /// Mean training loss over all steps (the "sum of training losses", TSE).
    pub train_loss: f64,
    /// Mean training loss over the second half of the steps.
    pub train_loss_late: f64,
    /// Held-out top-1 and mean cross-entropy (no smoothing).
    pub val_top1: f64,
    pub val_loss: f64,
    pub seconds: f64,
    /// Training images per second (evaluation excluded).
    pub images_per_sec: f64,
}

/// Progress of a run, for displays.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
}

/// An optimizer's state and update: SGD with momentum (PyTorch semantics: no dampening; weight
/// decay as L2 added to the gradient) or AdamW (decoupled decay). Decay applies to conv and dense
/// weights only.
pub struct UpdateRule {
    kind: Optimizer,
    momentum: f32,
    nesterov: bool,
    weight_decay: f32,
    decayed: Vec<(usize, usize)>,
    first: Vec<f32>,
    second: Vec<f32>,
    steps: i32,
}

impl UpdateRule {
    pub fn new(net: &Net, kind: Optimizer, momentum: f64, nesterov: bool, weight_decay: f64) -> Self {
        let decayed = net
            .params
            .tensors
            .iter()
            .filter(|t| t.role == Role::Weight)
            .map(|t| (t.slot.offset, t.slot.offset + t.slot.len))
            .collect();
        let n = net.params.values.len();
        UpdateRule {
            kind,
            momentum: momentum as f32,
            nesterov,
            weight_decay: weight_decay as f32,
            decayed,
            first: vec![0.0; n],
            second: if kind == Optimizer::AdamW { vec![0.0; n] } else { Vec::new() },
            steps: 0,
        }
    }

    /// One update of `net`'s parameters with `grads` (laid out as the parameters).
    pub fn step(&mut self, net: &mut Net, mut grads: Vec<f32>, lr: f32) {
        let wd = self.weight_decay;
        let values = &mut net.params.values;
        self.steps += 1;
        match self.kind {
            Optimizer::Sgd => {
                if wd > 0.0 {
                    for &(lo, hi) in &self.decayed {
                        crate::simd::axpy(&mut grads[lo..hi], &values[lo..hi], wd);
                    }
                }
                let mu = self.momentum;
                for ((w, v), g) in values.iter_mut().zip(self.first.iter_mut()).zip(&grads) {
                    *v = mu * *v + g;
                    *w -= lr * if self.nesterov { g + mu * *v } else { *v };
                }
            }
            Optimizer::AdamW => {
                if wd > 0.0 {
                    for &(lo, hi) in &self.decayed {
                        values[lo..hi].iter_mut().for_each(|w| *w -= lr * wd * *w);
                    }
                }
                let (b1, b2) = (0.9f32, 0.999f32);
                let (c1, c2) = (1.0 - b1.powi(self.steps), 1.0 - b2.powi(self.steps));
                let it = values.iter_mut().zip(self.first.iter_mut()).zip(self.second.iter_mut()).zip(&grads);
                for (((w, m), v), g) in it {
                    *m = b1 * *m + (1.0 - b1) * g;
                    *v = b2 * *v + (1.0 - b2) * g * g;
                    *w -= lr * (*m / c1) / ((*v / c2).sqrt() + 1e-8);
                }
            }
        }
    }
}

/// Top-1 and mean cross-entropy of `net` (eval mode) on `set`.
pub fn evaluate(net: &mut Net, set: &ImageSet, norm: Normalize) -> Result<(f64, f64), EngineError> {
    let (mut correct, mut loss, mut n) = (0usize, 0f64, 0usize);
    for batch in batches_in(set, 250, norm, Augment::None, None, false, Layout::Nhwc) {
        let rows = batch.len();
        let logits = net.forward_eval(&batch.images, rows, batch.size)?;
        let labels: Vec<u32> = batch.labels.iter().map(|&l| l as u32).collect();
        let out = cross_entropy(&logits, &labels, net.classes(), 0.0);
        correct += out.correct;
        loss += out.loss * rows as f64;
        n += rows;
    }
    let n = n.max(1) as f64;
    Ok((correct as f64 / n, loss / n))
}

/// Trains `net` on `train` with `recipe`, then scores it on `val`. `progress` is called after
/// every step; returning false stops the run early (it then reports what it has, unscored).
pub fn train(
    net: &mut Net,
    train: &ImageSet,
    val: &ImageSet,
    norm: Normalize,
    recipe: &SgdRecipe,
    progress: &mut dyn FnMut(Progress) -> bool,
) -> Result<RunResult, EngineError> {
    recipe.validate()?;
    if train.is_empty() {
        return Err(EngineError::Config("the training set is empty".into()));
    }
    let started = Instant::now();
    let total = recipe.steps(train.len());
    let batch = recipe.batch_size.min(train.len());
    let aug = if recipe.augment { Augment::for_size(train.size) } else { Augment::None };
    let mut optimizer = UpdateRule::new(net, recipe.optimizer, recipe.momentum, true, recipe.weight_decay);
    let mut losses = Vec::with_capacity(total);
    let mut step = 0;
    let mut epoch = 0u64;
    'epochs: while step < total {
        let order_seed = recipe.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(epoch);
        for b in batches_in(train, batch, norm, aug, Some(order_seed), true, Layout::Nhwc) {
            if step == total {
                break 'epochs;
            }
            let labels: Vec<u32> = b.labels.iter().map(|&l| l as u32).collect();
            let (logits, tape) = net.forward_train(&b.images, b.len(), b.size, order_seed ^ step as u64)?;
            let out = cross_entropy(&logits, &labels, net.classes(), recipe.label_smoothing);
            if !out.loss.is_finite() {
                let reason = format!("the training loss became {} at step {step} of {total}", out.loss);
                return Ok(diverged(reason, step, &losses, started));
            }
            losses.push(out.loss);
            let grads = net.backward(tape, &out.dlogits);
            optimizer.step(net, grads, recipe.lr_at(step, total) as f32);
            step += 1;
            if !progress(Progress { step, steps: total, loss: out.loss }) {
                break 'epochs;
            }
        }
        epoch += 1;
    }
    let train_seconds = started.elapsed().as_secs_f64();
    if net.params.values.iter().any(|v| !v.is_finite()) {
        return Ok(diverged("the weights became non-finite".into(), step, &losses, started));
    }
    let (val_top1, val_loss) = evaluate(net, val, norm)?;
    let half = losses.len() / 2;
    Ok(RunResult {
        status: RunStatus::Completed,
        steps: step,
        train_loss: mean(&losses),
        train_loss_late: mean(&losses[half..]),
        val_top1,
        val_loss,
        seconds: started.elapsed().as_secs_f64(),
        images_per_sec: (step * batch) as f64 / train_seconds.max(1e-9),
    })
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn diverged(reason: String, step: usize, losses: &[f64], started: Instant) -> RunResult {
    RunResult {
        status: RunStatus::Diverged { reason },
        steps: step,
        train_loss: mean(losses),
        train_loss_late: f64::NAN,
        val_top1: 0.0,
        val_loss: f64::NAN,
        seconds: started.elapsed().as_secs_f64(),
        images_per_sec: 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> SgdRecipe {
        SgdRecipe {
            optimizer: Optimizer::Sgd,
            epochs: 1.0,
            batch_size: 10,
            lr: 0.1,
            warmup: 0.1,
            decay: Decay::Cosine,
            momentum: 0.9,
            weight_decay: 5e-5,
            label_smoothing: 0.1,
            augment: true,
            seed: 0,
        }
    }

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let r = recipe();
        let total = 100;
        assert!((r.lr_at(0, total) - 0.01).abs() < 1e-12);
        assert!((r.lr_at(9, total) - 0.1).abs() < 1e-12);
        assert!((r.lr_at(10, total) - 0.1).abs() < 1e-12);
        assert!(r.lr_at(99, total) < 1e-3);
        let linear = SgdRecipe { decay: Decay::Linear, ..r.clone() };
        assert!((linear.lr_at(55, total) - 0.05).abs() < 1e-12);
        assert_eq!(r.steps(95), 9);
        assert_eq!(SgdRecipe { epochs: 0.5, ..r.clone() }.steps(100), 5);
    }

    #[test]
    fn bad_settings_are_refused_with_the_field() {
        for (bad, word) in [
            (SgdRecipe { epochs: 0.0, ..recipe() }, "epochs"),
            (SgdRecipe { batch_size: 0, ..recipe() }, "batch"),
            (SgdRecipe { lr: f64::NAN, ..recipe() }, "learning rate"),
            (SgdRecipe { warmup: 1.0, ..recipe() }, "warm-up"),
            (SgdRecipe { label_smoothing: -0.1, ..recipe() }, "smoothing"),
        ] {
            let e = bad.validate().expect_err("refused").to_string();
            assert!(e.contains(word), "{e}");
        }
    }
}
