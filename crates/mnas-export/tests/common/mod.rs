//! Helpers shared by the integration tests: models with non-trivial BN statistics.

#![allow(dead_code)]

use mnas_model::backend::Cpu;
use mnas_model::burn::module::{Param, RunningState};
use mnas_model::burn::tensor::{Distribution, Tensor};
use mnas_model::layers::{BatchNorm, Conv2d};
use mnas_model::MnasNet;
use mnas_space::Arch;

type Device = mnas_model::burn::tensor::Device<Cpu>;

fn uniform(n: usize, lo: f64, hi: f64, device: &Device) -> Tensor<Cpu, 1> {
    Tensor::random([n], Distribution::Uniform(lo, hi), device)
}

/// Random affine parameters and running statistics, and the given eps, so that folding matters.
fn bn(b: &mut BatchNorm<Cpu>, eps: f64, device: &Device) {
    let c = b.weight.dims()[0];
    b.weight = Param::from_tensor(uniform(c, 0.6, 1.4, device));
    b.bias = Param::from_tensor(uniform(c, -0.3, 0.3, device));
    b.running_mean = RunningState::new(uniform(c, -0.3, 0.3, device));
    b.running_var = RunningState::new(uniform(c, 0.4, 1.6, device));
    b.eps = eps;
}

fn bias(c: &mut Conv2d<Cpu>, device: &Device) {
    let n = c.weight.dims()[0];
    if c.bias.is_some() {
        c.bias = Some(Param::from_tensor(uniform(n, -0.5, 0.5, device)));
    }
}

/// A model of `arch` with seeded random weights (timm's init), random BN statistics and affine
/// parameters with BN eps `eps`, and random SE and classifier biases.
pub fn random_model(arch: &Arch, seed: u64, eps: f64) -> MnasNet<Cpu> {
    let device = Device::default();
    let mut m = MnasNet::<Cpu>::seeded(arch, &device, seed).expect("test archs are valid");
    bn(&mut m.bn1, eps, &device);
    bn(&mut m.bn2, eps, &device);
    for l in &mut m.blocks {
        for b in [l.bn_exp.as_mut(), Some(&mut l.bn_k), l.bn_proj.as_mut(), l.skip_bn.as_mut()].into_iter().flatten() {
            bn(b, eps, &device);
        }
        if let Some(se) = l.se.as_mut() {
            bias(&mut se.conv_reduce, &device);
            bias(&mut se.conv_expand, &device);
        }
    }
    let classes = m.classifier_bias.dims()[0];
    m.classifier_bias = Param::from_tensor(uniform(classes, -0.1, 0.1, &device));
    m
}

/// Values of a float tensor.
pub fn to_vec<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("float tensor")
}
