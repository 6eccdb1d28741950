//! A burn network built from any [`Arch`]: stem, searched layers, head, classifier.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::avg_pool2d;
use burn::tensor::{Distribution, Tensor};
use mnas_space::{Activation, Arch, ConvOp, Layer, Residual};

use crate::error::ModelError;
use crate::layers::{activate, BatchNorm, Conv2d, SqueezeExcite};

/// One searched layer. Which fields exist depends on the conv op:
/// - conv:    `conv_k`/`bn_k` (kxk, activated), optional SE
/// - sepconv: `conv_k`/`bn_k` (depthwise, activated), optional SE, `conv_proj`/`bn_proj`
/// - mbconv:  optional `conv_exp`/`bn_exp` (1x1, activated), `conv_k`/`bn_k` (depthwise,
///   activated), optional SE, `conv_proj`/`bn_proj`
///
/// plus `skip_conv`/`skip_bn` for a pooling skip that changes the channel count.
#[derive(Module, Debug)]
pub struct SearchLayer<B: Backend> {
    pub conv_exp: Option<Conv2d<B>>,
    pub bn_exp: Option<BatchNorm<B>>,
    pub conv_k: Conv2d<B>,
    pub bn_k: BatchNorm<B>,
    pub se: Option<SqueezeExcite<B>>,
    pub conv_proj: Option<Conv2d<B>>,
    pub bn_proj: Option<BatchNorm<B>>,
    pub skip_conv: Option<Conv2d<B>>,
    pub skip_bn: Option<BatchNorm<B>>,
    #[module(skip)]
    pub spec: Layer,
    #[module(skip)]
    pub act: Activation,
}

impl<B: Backend> SearchLayer<B> {
    pub fn new(spec: &Layer, act: Activation, device: &B::Device) -> Self {
        let (cin, mid, cout, k, s) = (spec.in_channels, spec.mid_channels, spec.out_channels, spec.kernel, spec.stride);
        let expansion = spec.has_expansion();
        let (conv_k, bn_k) = match spec.op {
            ConvOp::Conv => (Conv2d::new(cin, cout, k, s, 1, false, device), BatchNorm::new(cout, device)),
            _ => (Conv2d::new(mid, mid, k, s, mid, false, device), BatchNorm::new(mid, device)),
        };
        let has_proj = spec.op != ConvOp::Conv;
        let skip_proj = matches!(spec.residual, Residual::Pool { project: true, .. });
        SearchLayer {
            conv_exp: expansion.then(|| Conv2d::new(cin, mid, 1, 1, 1, false, device)),
            bn_exp: expansion.then(|| BatchNorm::new(mid, device)),
            conv_k,
            bn_k,
            se: (spec.se_channels > 0).then(|| SqueezeExcite::new(mid, spec.se_channels, device)),
            conv_proj: has_proj.then(|| Conv2d::new(mid, cout, 1, 1, 1, false, device)),
            bn_proj: has_proj.then(|| BatchNorm::new(cout, device)),
            skip_conv: skip_proj.then(|| Conv2d::new(cin, cout, 1, 1, 1, false, device)),
            skip_bn: skip_proj.then(|| BatchNorm::new(cout, device)),
            spec: spec.clone(),
            act,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let shortcut = match self.spec.residual {
            Residual::None => None,
            Residual::Identity => Some(x.clone()),
            Residual::Pool { stride, .. } => {
                let s = stride as usize;
                // ceil mode keeps the pooled map the size of the strided conv output (odd inputs).
                let pooled = avg_pool2d(x.clone(), [s, s], [s, s], [0, 0], false, true);
                Some(match (&self.skip_conv, &self.skip_bn) {
                    (Some(conv), Some(bn)) => bn.forward(conv.forward(pooled)),
                    _ => pooled,
                })
            }
        };
        let mut y = x;
        if let (Some(conv), Some(bn)) = (&self.conv_exp, &self.bn_exp) {
            y = activate(bn.forward(conv.forward(y)), self.act);
        }
        y = activate(self.bn_k.forward(self.conv_k.forward(y)), self.act);
        if let Some(se) = &self.se {
            y = se.forward(y, self.act);
        }
        if let (Some(conv), Some(bn)) = (&self.conv_proj, &self.bn_proj) {
            y = bn.forward(conv.forward(y));
        }
        match shortcut {
            Some(s) => y + s,
            None => y,
        }
    }
}

/// The whole network. Field names follow timm's where timm has the same module.
#[derive(Module, Debug)]
pub struct MnasNet<B: Backend> {
    pub conv_stem: Conv2d<B>,
    pub bn1: BatchNorm<B>,
    pub blocks: Vec<SearchLayer<B>>,
    pub conv_head: Conv2d<B>,
    pub bn2: BatchNorm<B>,
    /// PyTorch layout [classes, features].
    pub classifier_weight: Param<Tensor<B, 2>>,
    pub classifier_bias: Param<Tensor<B, 1>>,
    #[module(skip)]
    pub arch: Arch,
}

/// Held while a thread draws a network's initial weights (and seeds burn's RNG before them): the
/// backend keeps one RNG per process, so two threads building at once would draw from each other's
/// stream and get weights that depend on timing (the burn parity test failed a CI run that way).
/// Draws made elsewhere (dropout in a training step) still interleave.
static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn init_lock() -> std::sync::MutexGuard<'static, ()> {
    INIT.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<B: Backend> MnasNet<B> {
    /// The network [`MnasNet::new`] builds after seeding the backend with `seed`: the same weights
    /// for the same seed, whatever other threads build at the same time.
    pub fn seeded(arch: &Arch, device: &B::Device, seed: u64) -> Result<Self, ModelError> {
        let _init = init_lock();
        B::seed(device, seed);
        Self::draw(arch, device)
    }

    /// Builds a randomly initialised network (timm's init) for a valid `arch`.
    pub fn new(arch: &Arch, device: &B::Device) -> Result<Self, ModelError> {
        let _init = init_lock();
        Self::draw(arch, device)
    }

    fn draw(arch: &Arch, device: &B::Device) -> Result<Self, ModelError> {
        arch.validate()?;
        let stem = arch.stem_out();
        let head_in = arch.head_in();
        let (head, classes) = (arch.head_channels as usize, arch.num_classes as usize);
        let range = 1.0 / (classes as f64).sqrt();
        Ok(MnasNet {
            conv_stem: Conv2d::new(3, stem, 3, 2, 1, false, device),
            bn1: BatchNorm::new(stem, device),
            blocks: arch.layers().iter().map(|l| SearchLayer::new(l, arch.activation, device)).collect(),
            conv_head: Conv2d::new(head_in, arch.head_channels, 1, 1, 1, false, device),
            bn2: BatchNorm::new(arch.head_channels, device),
            classifier_weight: Param::from_tensor(Tensor::random(
                [classes, head],
                Distribution::Uniform(-range, range),
                device,
            )),
            classifier_bias: Param::from_tensor(Tensor::zeros([classes], device)),
            arch: arch.clone(),
        })
    }

    /// Pooled features before the classifier, [N, head].
    pub fn features(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let act = self.arch.activation;
        let mut y = activate(self.bn1.forward(self.conv_stem.forward(x)), act);
        for layer in &self.blocks {
            y = layer.forward(y);
        }
        let y = activate(self.bn2.forward(self.conv_head.forward(y)), act);
        let [n, c, h, w] = y.dims();
        y.reshape([n, c, h * w]).mean_dim(2).reshape([n, c])
    }

    /// Logits, [N, classes]. Dropout applies only when the backend records gradients.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut f = self.features(x);
        let p = self.arch.dropout;
        if p > 0.0 && B::ad_enabled(&f.device()) {
            let keep = Tensor::random(f.shape(), Distribution::Bernoulli(1.0 - p), &f.device());
            f = f * keep / (1.0 - p);
        }
        let classes = self.classifier_bias.dims()[0];
        f.matmul(self.classifier_weight.val().transpose()) + self.classifier_bias.val().reshape([1, classes])
    }
}
