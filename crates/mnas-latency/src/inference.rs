//! The inference form of a network: every conv + BN pair folded into one biased conv, weights
//! laid out once for the forward pass (classifier and SE matrices pre-transposed), no autodiff,
//! no dropout. This is what a deployment runs, so it is what latency is measured on.
//!
//! Folding reuses [`mnas_export::fold`], the code the ONNX exporter writes its graph with, so the
//! measured model and the exported model are the same computation.

use std::time::{Duration, Instant};

use mnas_export::fold::{self, ConvParams};
use mnas_model::burn::tensor::activation;
use mnas_model::burn::tensor::backend::Backend;
use mnas_model::burn::tensor::module::{avg_pool2d, conv2d};
use mnas_model::burn::tensor::ops::ConvOptions;
use mnas_model::burn::tensor::{Tensor, TensorData};
use mnas_model::net::SearchLayer;
use mnas_model::MnasNet;
use mnas_space::{Activation, Arch, Residual};

use crate::error::{LatencyError, Result};

/// A convolution with its BN folded in: always biased, symmetric padding k/2.
#[derive(Debug, Clone)]
pub struct FoldedConv<B: Backend> {
    weight: Tensor<B, 4>,
    bias: Tensor<B, 1>,
    options: ConvOptions<2>,
}

impl<B: Backend> FoldedConv<B> {
    fn new(p: ConvParams, name: &str, device: &B::Device) -> Result<Self> {
        let [o, _, k, _] = p.shape;
        let bias = p.bias.ok_or_else(|| LatencyError::Engine(format!("{name}: folded conv without a bias")))?;
        let pad = k / 2;
        Ok(FoldedConv {
            weight: Tensor::from_data(TensorData::new(p.weight, p.shape), device),
            bias: Tensor::from_data(TensorData::new(bias, [o]), device),
            options: ConvOptions::new([p.stride; 2], [pad, pad], [1, 1], p.groups),
        })
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        conv2d(x, self.weight.clone(), Some(self.bias.clone()), self.options.clone())
    }
}

/// `y = x W + b` with W stored [in, out] (contiguous) and b [1, out].
#[derive(Debug, Clone)]
struct Dense<B: Backend> {
    weight: Tensor<B, 2>,
    bias: Tensor<B, 2>,
}

impl<B: Backend> Dense<B> {
    /// From a PyTorch-layout [out, in] weight and [out] bias.
    fn new(weight_out_in: Vec<f32>, outs: usize, ins: usize, bias: Vec<f32>, device: &B::Device) -> Self {
        let mut t = vec![0.0f32; weight_out_in.len()];
        for o in 0..outs {
            for i in 0..ins {
                t[i * outs + o] = weight_out_in[o * ins + i];
            }
        }
        Dense {
            weight: Tensor::from_data(TensorData::new(t, [ins, outs]), device),
            bias: Tensor::from_data(TensorData::new(bias, [1, outs]), device),
        }
    }

    /// From a 1x1 conv with bias (the SE convs).
    fn from_conv(p: ConvParams, device: &B::Device) -> Self {
        let [o, i, _, _] = p.shape;
        let bias = p.bias.unwrap_or_else(|| vec![0.0; o]);
        Dense::new(p.weight, o, i, bias, device)
    }

    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(self.weight.clone()) + self.bias.clone()
    }
}

fn act<B: Backend, const D: usize>(x: Tensor<B, D>, a: Activation) -> Tensor<B, D> {
    match a {
        Activation::Relu => activation::relu(x),
        Activation::Relu6 => x.clamp(0.0, 6.0),
    }
}

/// What a layer adds back to its output.
#[derive(Debug, Clone)]
enum Shortcut<B: Backend> {
    None,
    Identity,
    Pool { stride: usize, conv: Option<FoldedConv<B>> },
}

/// One searched layer in inference form.
#[derive(Debug, Clone)]
pub struct InferenceLayer<B: Backend> {
    name: String,
    expand: Option<FoldedConv<B>>,
    conv_k: FoldedConv<B>,
    se: Option<(Dense<B>, Dense<B>)>,
    project: Option<FoldedConv<B>>,
    shortcut: Shortcut<B>,
    act: Activation,
}

impl<B: Backend> InferenceLayer<B> {
    /// The inference form of one model layer; the LUT builder times layers one at a time with it.
    pub fn new(l: &SearchLayer<B>, device: &B::Device) -> Result<Self> {
        let name = format!("blocks.{}.{}", l.spec.block, l.spec.index);
        let pair = |conv: &Option<_>, bn: &Option<_>, part: &str| -> Result<Option<FoldedConv<B>>> {
            match (conv, bn) {
                (Some(c), Some(b)) => {
                    let n = format!("{name}.{part}");
                    Ok(Some(FoldedConv::new(fold::conv_bn(c, b, &n)?, &n, device)?))
                }
                _ => Ok(None),
            }
        };
        let k_name = format!("{name}.conv_k");
        let se = match &l.se {
            Some(se) => Some((
                Dense::from_conv(fold::plain(&se.conv_reduce, &format!("{name}.se.conv_reduce"))?, device),
                Dense::from_conv(fold::plain(&se.conv_expand, &format!("{name}.se.conv_expand"))?, device),
            )),
            None => None,
        };
        let shortcut = match l.spec.residual {
            Residual::None => Shortcut::None,
            Residual::Identity => Shortcut::Identity,
            Residual::Pool { stride, .. } => {
                Shortcut::Pool { stride: stride as usize, conv: pair(&l.skip_conv, &l.skip_bn, "skip")? }
            }
        };
        Ok(InferenceLayer {
            expand: pair(&l.conv_exp, &l.bn_exp, "conv_exp")?,
            conv_k: FoldedConv::new(fold::conv_bn(&l.conv_k, &l.bn_k, &k_name)?, &k_name, device)?,
            se,
            project: pair(&l.conv_proj, &l.bn_proj, "conv_proj")?,
            shortcut,
            act: l.act,
            name,
        })
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let shortcut = match &self.shortcut {
            Shortcut::None => None,
            Shortcut::Identity => Some(x.clone()),
            Shortcut::Pool { stride, conv } => {
                let s = *stride;
                let pooled = avg_pool2d(x.clone(), [s, s], [s, s], [0, 0], false, true);
                Some(match conv {
                    Some(c) => c.forward(pooled),
                    None => pooled,
                })
            }
        };
        let mut y = x;
        if let Some(c) = &self.expand {
            y = act(c.forward(y), self.act);
        }
        y = act(self.conv_k.forward(y), self.act);
        if let Some((reduce, expand)) = &self.se {
            let [n, c, h, w] = y.dims();
            let pooled: Tensor<B, 2> = y.clone().reshape([n, c, h * w]).mean_dim(2).reshape([n, c]);
            let gate = activation::sigmoid(expand.forward(act(reduce.forward(pooled), self.act)));
            y = y * gate.reshape([n, c, 1, 1]);
        }
        if let Some(c) = &self.project {
            y = c.forward(y);
        }
        match shortcut {
            Some(s) => y + s,
            None => y,
        }
    }
}

/// A whole network in inference form.
#[derive(Debug, Clone)]
pub struct InferenceNet<B: Backend> {
    stem: FoldedConv<B>,
    layers: Vec<InferenceLayer<B>>,
    head: FoldedConv<B>,
    classifier: Dense<B>,
    act: Activation,
    arch: Arch,
}

impl<B: Backend> InferenceNet<B> {
    /// The inference form of `model` (eval-mode BN statistics folded into the convs).
    pub fn fold(model: &MnasNet<B>) -> Result<Self> {
        let device = model.classifier_bias.device();
        let stem = FoldedConv::new(fold::conv_bn(&model.conv_stem, &model.bn1, "conv_stem")?, "conv_stem", &device)?;
        let layers = model.blocks.iter().map(|l| InferenceLayer::new(l, &device)).collect::<Result<Vec<_>>>()?;
        let head = FoldedConv::new(fold::conv_bn(&model.conv_head, &model.bn2, "conv_head")?, "conv_head", &device)?;
        let [classes, features] = model.classifier_weight.dims();
        let weight = fold::values(model.classifier_weight.val(), "classifier.weight")?;
        let bias = fold::values(model.classifier_bias.val(), "classifier.bias")?;
        let classifier = Dense::new(weight, classes, features, bias, &device);
        Ok(InferenceNet { stem, layers, head, classifier, act: model.arch.activation, arch: model.arch.clone() })
    }

    /// A randomly initialised network of `arch` (seeded), in inference form. Weights do not
    /// change latency.
    pub fn random(arch: &Arch, seed: u64, device: &B::Device) -> Result<Self> {
        B::seed(device, seed);
        InferenceNet::fold(&MnasNet::<B>::new(arch, device)?)
    }

    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    /// Stage names, in execution order, matching the rows of [`mnas_space::count`]:
    /// `stem`, `blocks.i.j`, `head`, `classifier`.
    pub fn stage_names(&self) -> Vec<String> {
        let mut names = vec!["stem".to_string()];
        names.extend(self.layers.iter().map(|l| l.name.clone()));
        names.extend(["head".to_string(), "classifier".to_string()]);
        names
    }

    /// Logits [N, classes] of a [N, 3, R, R] input.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_observed(x, |_| {})
    }

    /// The forward pass with the wall time of each stage (see [`Self::stage_names`]). The device
    /// is synchronised after every stage, so each time covers its own work only.
    pub fn forward_timed(&self, x: Tensor<B, 4>) -> Result<(Tensor<B, 2>, Vec<Duration>)> {
        let device = x.device();
        let mut times = Vec::with_capacity(self.layers.len() + 3);
        let mut failure = None;
        let mut start = Instant::now();
        let logits = self.forward_observed(x, |_| {
            if let Err(e) = B::sync(&device) {
                failure.get_or_insert(e);
            }
            times.push(start.elapsed());
            start = Instant::now();
        });
        match failure {
            Some(e) => Err(LatencyError::Engine(format!("{e:?}"))),
            None => Ok((logits, times)),
        }
    }

    /// The forward pass, calling `after(stage)` once each stage's output exists.
    fn forward_observed(&self, x: Tensor<B, 4>, mut after: impl FnMut(usize)) -> Tensor<B, 2> {
        let mut stage = 0;
        let mut done = |stage: &mut usize| {
            after(*stage);
            *stage += 1;
        };
        let mut y = act(self.stem.forward(x), self.act);
        done(&mut stage);
        for layer in &self.layers {
            y = layer.forward(y);
            done(&mut stage);
        }
        let y = act(self.head.forward(y), self.act);
        done(&mut stage);
        let [n, c, h, w] = y.dims();
        let features: Tensor<B, 2> = y.reshape([n, c, h * w]).mean_dim(2).reshape([n, c]);
        let logits = self.classifier.forward(features);
        done(&mut stage);
        logits
    }
}

#[cfg(test)]
mod tests {
    use mnas_model::backend::Cpu;
    use mnas_model::burn::module::{Param, RunningState};
    use mnas_model::burn::tensor::Distribution;
    use mnas_model::layers::{BatchNorm, Conv2d};
    use mnas_space::{lookup, SearchSpace};

    use super::*;

    type Device = mnas_model::burn::tensor::Device<Cpu>;

    fn uniform(n: usize, lo: f64, hi: f64, device: &Device) -> Tensor<Cpu, 1> {
        Tensor::random([n], Distribution::Uniform(lo, hi), device)
    }

    fn randomise_bn(b: &mut BatchNorm<Cpu>, device: &Device) {
        let c = b.weight.dims()[0];
        b.weight = Param::from_tensor(uniform(c, 0.6, 1.4, device));
        b.bias = Param::from_tensor(uniform(c, -0.3, 0.3, device));
        b.running_mean = RunningState::new(uniform(c, -0.3, 0.3, device));
        b.running_var = RunningState::new(uniform(c, 0.4, 1.6, device));
        b.eps = 1e-3;
    }

    fn randomise_bias(c: &mut Conv2d<Cpu>, device: &Device) {
        let n = c.weight.dims()[0];
        if c.bias.is_some() {
            c.bias = Some(Param::from_tensor(uniform(n, -0.5, 0.5, device)));
        }
    }

    /// A model with random weights, BN statistics, BN affine parameters and biases.
    fn random_model(arch: &Arch, seed: u64) -> MnasNet<Cpu> {
        let device = Device::default();
        Cpu::seed(&device, seed);
        let mut m = MnasNet::<Cpu>::new(arch, &device).expect("valid arch");
        randomise_bn(&mut m.bn1, &device);
        randomise_bn(&mut m.bn2, &device);
        for l in &mut m.blocks {
            for b in
                [l.bn_exp.as_mut(), Some(&mut l.bn_k), l.bn_proj.as_mut(), l.skip_bn.as_mut()].into_iter().flatten()
            {
                randomise_bn(b, &device);
            }
            if let Some(se) = l.se.as_mut() {
                randomise_bias(&mut se.conv_reduce, &device);
                randomise_bias(&mut se.conv_expand, &device);
            }
        }
        let classes = m.classifier_bias.dims()[0];
        m.classifier_bias = Param::from_tensor(uniform(classes, -0.1, 0.1, &device));
        m
    }

    fn to_vec(t: Tensor<Cpu, 2>) -> Vec<f32> {
        t.into_data().convert::<f32>().to_vec::<f32>().expect("float tensor")
    }

    /// max |a - b| / max |b|.
    fn rel_error(a: &[f32], b: &[f32]) -> f64 {
        assert_eq!(a.len(), b.len());
        let diff = a.iter().zip(b).map(|(x, y)| f64::from((x - y).abs())).fold(0.0, f64::max);
        let scale = b.iter().map(|y| f64::from(y.abs())).fold(0.0, f64::max);
        diff / scale.max(1e-12)
    }

    fn check(arch: &Arch, seed: u64) -> f64 {
        let model = random_model(arch, seed);
        let net = InferenceNet::fold(&model).expect("folds");
        let device = Device::default();
        let r = arch.resolution as usize;
        let x = Tensor::<Cpu, 4>::random([2, 3, r, r], Distribution::Normal(0.0, 1.0), &device);
        let reference = to_vec(model.forward(x.clone()));
        let folded = to_vec(net.forward(x.clone()));
        let (timed, times) = net.forward_timed(x).expect("timed forward");
        assert_eq!(times.len(), net.stage_names().len());
        assert_eq!(folded, to_vec(timed), "observed forward differs");
        rel_error(&folded, &reference)
    }

    #[test]
    fn folded_logits_match_the_model_for_a1() {
        let mut a1 = lookup("mnasnet-a1").unwrap();
        a1.resolution = 96;
        let err = check(&a1, 1);
        assert!(err < 1e-4, "mnasnet-a1 at 96: relative error {err:e}");
    }

    #[test]
    fn folded_logits_match_the_model_for_samples_and_relu6() {
        let space = SearchSpace { num_classes: 10, resolution: 64, ..SearchSpace::default() };
        let mut archs: Vec<Arch> = space.sample(3, 4).into_iter().map(|(_, a)| a).collect();
        let mut v2 = lookup("mobilenetv2_100").unwrap();
        v2.resolution = 64;
        archs.push(v2);
        // A pooling skip with projection, regular conv with SE, odd sizes.
        let mut custom = mnas_space::parse_block_list(
            "stem16 cn_r1_k3_s1_c16_se0.25_pool ds_r2_k3_s2_c24_pool ir_r1_k5_s2_e4_c40_pool",
        )
        .unwrap();
        custom.resolution = 45;
        custom.num_classes = 7;
        archs.push(custom);
        for (i, arch) in archs.iter().enumerate() {
            let err = check(arch, 10 + i as u64);
            assert!(err < 1e-4, "{}: relative error {err:e}", arch.canonical());
        }
    }

    #[test]
    fn stage_names_match_the_cost_table() {
        let mut a1 = lookup("mnasnet-a1").unwrap();
        a1.resolution = 32;
        let net = InferenceNet::<Cpu>::random(&a1, 0, &Device::default()).unwrap();
        let rows: Vec<String> = mnas_space::count(&a1).layers.into_iter().map(|l| l.name).collect();
        assert_eq!(net.stage_names(), rows);
    }
}
