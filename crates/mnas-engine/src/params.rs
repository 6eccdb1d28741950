//! Where a network's tensors live: every trainable tensor in one flat `f32` vector (so that the
//! optimizer is one loop) and the BN running statistics in another, each tensor named as in timm
//! and converted to and from PyTorch's layout by name.

use std::ops::Range;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::EngineError;

/// A tensor's place in its flat vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Slot {
    pub offset: usize,
    pub len: usize,
}

impl Slot {
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len
    }
}

/// How a tensor is laid out here, and so how it maps to PyTorch's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Engine `[ky][kx][cin][cout]`; PyTorch `[cout, cin, k, k]`.
    Conv {
        k: usize,
        cin: usize,
        cout: usize,
    },
    /// Engine `[ky][kx][c]`; PyTorch `[c, 1, k, k]`.
    Depthwise {
        k: usize,
        c: usize,
    },
    /// Engine `[in][out]`; PyTorch `[out, in]` (`conv`: `[out, in, 1, 1]`, the SE convs).
    Dense {
        ins: usize,
        outs: usize,
        conv: bool,
    },
    Vector(usize),
}

impl Layout {
    pub fn torch_shape(&self) -> Vec<usize> {
        match *self {
            Layout::Conv { k, cin, cout } => vec![cout, cin, k, k],
            Layout::Depthwise { k, c } => vec![c, 1, k, k],
            Layout::Dense { ins, outs, conv: true } => vec![outs, ins, 1, 1],
            Layout::Dense { ins, outs, conv: false } => vec![outs, ins],
            Layout::Vector(n) => vec![n],
        }
    }

    fn numel(&self) -> usize {
        self.torch_shape().iter().product()
    }

    /// Index in the engine layout of each PyTorch-layout element, in PyTorch order.
    fn engine_index(&self) -> Vec<usize> {
        match *self {
            Layout::Conv { k, cin, cout } => {
                let mut idx = Vec::with_capacity(self.numel());
                for co in 0..cout {
                    for ci in 0..cin {
                        for ky in 0..k {
                            for kx in 0..k {
                                idx.push(((ky * k + kx) * cin + ci) * cout + co);
                            }
                        }
                    }
                }
                idx
            }
            Layout::Depthwise { k, c } => (0..c).flat_map(|ch| (0..k * k).map(move |t| t * c + ch)).collect(),
            Layout::Dense { ins, outs, .. } => (0..outs).flat_map(|o| (0..ins).map(move |i| i * outs + o)).collect(),
            Layout::Vector(n) => (0..n).collect(),
        }
    }
}

/// What a tensor is, for weight decay and for telling parameters from state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Conv and dense weights: decayed.
    Weight,
    /// BN scale/shift and biases: not decayed.
    Affine,
    /// BN running statistics (state, in [`Params::state`]).
    Running,
}

/// One named tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub slot: Slot,
    pub layout: Layout,
    pub role: Role,
}

/// The flat vectors and their table of contents.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub values: Vec<f32>,
    pub state: Vec<f32>,
    pub tensors: Vec<TensorInfo>,
}

impl Params {
    fn push(&mut self, name: String, layout: Layout, role: Role, init: impl FnOnce(&mut [f32])) -> Slot {
        let target = if role == Role::Running { &mut self.state } else { &mut self.values };
        let slot = Slot { offset: target.len(), len: layout.numel() };
        target.resize(slot.offset + slot.len, 0.0);
        init(&mut target[slot.range()]);
        self.tensors.push(TensorInfo { name, slot, layout, role });
        slot
    }

    /// The tensor named `name`.
    pub fn info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    fn storage(&self, role: Role) -> &[f32] {
        if role == Role::Running {
            &self.state
        } else {
            &self.values
        }
    }

    /// A tensor in PyTorch's layout.
    pub fn get_torch(&self, name: &str) -> Option<Vec<f32>> {
        let t = self.info(name)?;
        let src = &self.storage(t.role)[t.slot.range()];
        Some(t.layout.engine_index().into_iter().map(|i| src[i]).collect())
    }

    /// Sets a tensor from PyTorch's layout; the length must match.
    pub fn set_torch(&mut self, name: &str, values: &[f32]) -> Result<(), EngineError> {
        let t = self.info(name).ok_or_else(|| EngineError::UnknownTensor(name.to_string()))?.clone();
        if values.len() != t.slot.len {
            return Err(EngineError::TensorSize { name: name.to_string(), expected: t.slot.len, got: values.len() });
        }
        let dst = if t.role == Role::Running { &mut self.state } else { &mut self.values };
        let dst = &mut dst[t.slot.range()];
        for (&i, &v) in t.layout.engine_index().iter().zip(values) {
            dst[i] = v;
        }
        Ok(())
    }

    /// A gradient vector (same layout as `values`) read out for one tensor in PyTorch's layout.
    pub fn grad_torch(&self, grads: &[f32], name: &str) -> Option<Vec<f32>> {
        let t = self.info(name).filter(|t| t.role != Role::Running)?;
        let src = &grads[t.slot.range()];
        Some(t.layout.engine_index().into_iter().map(|i| src[i]).collect())
    }

    /// Trainable parameters (BN running statistics excluded), the count timm reports.
    pub fn trainable(&self) -> usize {
        self.values.len()
    }
}

/// Builds [`Params`] with timm's initialisation ("goog": conv normal(0, sqrt(2 / fan_out)),
/// BN 1/0, dense uniform(+-1/sqrt(out)), biases 0), from a seeded stream.
pub struct ParamsBuilder {
    pub params: Params,
    rng: ChaCha8Rng,
}

/// Standard normal by Box-Muller.
fn normal(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.gen();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

impl ParamsBuilder {
    pub fn new(seed: u64) -> Self {
        ParamsBuilder { params: Params::default(), rng: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// A kxk convolution without bias (`groups` = 1 or = channels).
    pub fn conv(&mut self, name: &str, k: usize, cin: usize, cout: usize, depthwise: bool) -> Slot {
        let fan_out = if depthwise { k * k } else { k * k * cout };
        let std = (2.0 / fan_out.max(1) as f64).sqrt() as f32;
        let layout = if depthwise { Layout::Depthwise { k, c: cout } } else { Layout::Conv { k, cin, cout } };
        let rng = &mut self.rng;
        self.params
            .push(format!("{name}.weight"), layout, Role::Weight, |v| v.iter_mut().for_each(|x| *x = normal(rng) * std))
    }

    /// BN weight, bias (trainable) and running mean, var (state): returns (affine, running) slots,
    /// each covering two adjacent vectors of `c`.
    pub fn bn(&mut self, name: &str, c: usize) -> (Slot, Slot) {
        let w = self.params.push(format!("{name}.weight"), Layout::Vector(c), Role::Affine, |v| v.fill(1.0));
        self.params.push(format!("{name}.bias"), Layout::Vector(c), Role::Affine, |v| v.fill(0.0));
        let m = self.params.push(format!("{name}.running_mean"), Layout::Vector(c), Role::Running, |v| v.fill(0.0));
        self.params.push(format!("{name}.running_var"), Layout::Vector(c), Role::Running, |v| v.fill(1.0));
        (Slot { offset: w.offset, len: 2 * c }, Slot { offset: m.offset, len: 2 * c })
    }

    /// A dense layer `ins -> outs` with bias: returns one slot covering weight then bias.
    /// `conv`: stored by PyTorch as a 1x1 conv (SE), initialised like one.
    pub fn dense(&mut self, name: &str, ins: usize, outs: usize, conv: bool, init_range: Option<f32>) -> Slot {
        let rng = &mut self.rng;
        let layout = Layout::Dense { ins, outs, conv };
        let w = if conv {
            let std = (2.0 / outs.max(1) as f64).sqrt() as f32;
            self.params.push(format!("{name}.weight"), layout, Role::Weight, |v| {
                v.iter_mut().for_each(|x| *x = normal(rng) * std)
            })
        } else {
            let r = init_range.unwrap_or(1.0 / (outs as f32).sqrt());
            self.params.push(format!("{name}.weight"), layout, Role::Weight, |v| {
                v.iter_mut().for_each(|x| *x = if r > 0.0 { rng.gen_range(-r..r) } else { 0.0 })
            })
        };
        self.params.push(format!("{name}.bias"), Layout::Vector(outs), Role::Affine, |v| v.fill(0.0));
        Slot { offset: w.offset, len: ins * outs + outs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_layout_round_trips_for_every_layout() {
        let mut b = ParamsBuilder::new(1);
        b.conv("a", 3, 4, 5, false);
        b.conv("d", 5, 0, 6, true);
        b.dense("s", 6, 2, true, None);
        b.dense("fc", 7, 3, false, None);
        b.bn("bn", 4);
        let mut p = b.params;
        for t in p.tensors.clone() {
            let torch: Vec<f32> = (0..t.slot.len).map(|i| i as f32).collect();
            p.set_torch(&t.name, &torch).expect("known tensor");
            assert_eq!(p.get_torch(&t.name).expect("known tensor"), torch, "{}", t.name);
        }
        // PyTorch [cout, cin, k, k] element (co, ci, ky, kx) lands at [ky][kx][ci][co].
        let torch: Vec<f32> = (0..3 * 3 * 4 * 5).map(|i| i as f32).collect();
        p.set_torch("a.weight", &torch).expect("known tensor");
        let slot = p.info("a.weight").expect("known tensor").slot;
        let (co, ci, ky, kx) = (1, 2, 2, 1);
        let at = ((ky * 3 + kx) * 4 + ci) * 5 + co;
        assert_eq!(p.values[slot.offset + at], torch[((co * 4 + ci) * 3 + ky) * 3 + kx]);
        assert!(p.set_torch("a.weight", &[0.0]).is_err());
        assert!(p.set_torch("nope", &[0.0]).is_err());
    }
}
