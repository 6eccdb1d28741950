//! Exponential moving average of the weights (the paper's recipe: decay 0.9999), with the TF
//! reference code's warm-up `min(decay, (1 + step) / (10 + step))`: with 0.9999 alone the average
//! would still be mostly the random init after a short run (it needs ~10^4 steps to forget it).
//! BN running statistics are averaged too, as TF's `moving_average_variables` are.

use burn::module::{Param, RunningState};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::net::MnasNet;
use crate::weights::{visit, visit_mut, Slot};

/// The averaged tensors, in the model's visiting order.
#[derive(Debug, Clone)]
pub struct Ema {
    decay: f64,
    values: Vec<Vec<f32>>,
}

impl Ema {
    /// Starts the average at the model's current weights.
    pub fn new<B: Backend>(model: &MnasNet<B>, decay: f64) -> Self {
        let mut values = Vec::new();
        visit(model, |_, slot| values.push(slot.to_vec()));
        Ema { decay, values }
    }

    /// The decay used at global step `step` (0-based).
    pub fn decay_at(&self, step: u64) -> f64 {
        self.decay.min((1.0 + step as f64) / (10.0 + step as f64))
    }

    /// avg = d * avg + (1 - d) * current, with d = [`Ema::decay_at`]`(step)`.
    pub fn update<B: Backend>(&mut self, model: &MnasNet<B>, step: u64) {
        let d = self.decay_at(step) as f32;
        let mut i = 0;
        visit(model, |_, slot| {
            let cur = slot.to_vec();
            for (a, c) in self.values[i].iter_mut().zip(cur) {
                *a = d * *a + (1.0 - d) * c;
            }
            i += 1;
        });
    }

    /// A copy of `model` holding the averaged weights.
    pub fn apply<B: Backend>(&self, model: &MnasNet<B>) -> MnasNet<B> {
        let mut out = model.clone();
        let device = model.conv_stem.weight.device();
        let mut i = 0;
        visit_mut(&mut out, &mut |_, slot| {
            let values = self.values[i].clone();
            i += 1;
            let shape = slot.shape();
            let data = TensorData::new(values, shape);
            match slot {
                Slot::P4(p) => *p = Param::initialized(p.id, Tensor::from_data(data, &device)),
                Slot::P2(p) => *p = Param::initialized(p.id, Tensor::from_data(data, &device)),
                Slot::P1(p) => *p = Param::initialized(p.id, Tensor::from_data(data, &device)),
                Slot::Running(r) => *r = RunningState::new(Tensor::from_data(data, &device)),
            }
        });
        out
    }
}
