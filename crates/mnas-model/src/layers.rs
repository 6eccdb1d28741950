//! The few building blocks the MnasNet family needs, written against burn's tensor ops so that
//! parameter layout, BN statistics and naming follow PyTorch/timm exactly.

use burn::module::{Module, Param, RunningState};
use burn::tensor::backend::Backend;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{activation, DType, Distribution, Tensor, TensorData};
use mnas_space::Activation;

/// Convolution with PyTorch's weight layout [out, in/groups, k, k] and symmetric padding k/2.
#[derive(Module, Debug)]
pub struct Conv2d<B: Backend> {
    pub weight: Param<Tensor<B, 4>>,
    pub bias: Option<Param<Tensor<B, 1>>>,
    #[module(skip)]
    pub stride: usize,
    #[module(skip)]
    pub groups: usize,
}

impl<B: Backend> Conv2d<B> {
    /// timm's "goog" init: normal(0, sqrt(2 / fan_out)), fan_out = k*k*out/groups; zero bias.
    pub fn new(cin: u32, cout: u32, kernel: u32, stride: u32, groups: u32, bias: bool, device: &B::Device) -> Self {
        let (cin, cout, k, g) = (cin as usize, cout as usize, kernel as usize, groups as usize);
        let fan_out = (k * k * cout / g).max(1) as f64;
        let weight = Tensor::random([cout, cin / g, k, k], Distribution::Normal(0.0, (2.0 / fan_out).sqrt()), device);
        Conv2d {
            weight: Param::from_tensor(weight),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([cout], device))),
            stride: stride as usize,
            groups: g,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        if self.bias.is_none() {
            let fast = match (self.groups, self.stride) {
                (1, 1) => crate::cpu_ops::pointwise_conv2d(&x, &self.weight.val()),
                (1, _) => None,
                _ => crate::cpu_ops::depthwise_conv2d(&x, &self.weight.val(), self.stride),
            };
            if let Some(y) = fast {
                return y;
            }
        }
        let k = self.weight.dims()[2];
        let p = k / 2;
        conv2d(
            x,
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
            ConvOptions::new([self.stride; 2], [p, p], [1, 1], self.groups),
        )
    }
}

/// BatchNorm2d with PyTorch semantics: batch statistics and running-stat updates (unbiased
/// variance) when the backend records gradients, running statistics otherwise.
#[derive(Module, Debug)]
pub struct BatchNorm<B: Backend> {
    pub weight: Param<Tensor<B, 1>>,
    pub bias: Param<Tensor<B, 1>>,
    pub running_mean: RunningState<Tensor<B, 1>>,
    pub running_var: RunningState<Tensor<B, 1>>,
    #[module(skip)]
    pub eps: f64,
    /// PyTorch convention: new = (1 - momentum) * old + momentum * batch.
    #[module(skip)]
    pub momentum: f64,
}

impl<B: Backend> BatchNorm<B> {
    pub fn new(channels: u32, device: &B::Device) -> Self {
        let c = channels as usize;
        BatchNorm {
            weight: Param::from_tensor(Tensor::ones([c], device)),
            bias: Param::from_tensor(Tensor::zeros([c], device)),
            running_mean: RunningState::new(Tensor::zeros([c], device)),
            running_var: RunningState::new(Tensor::ones([c], device)),
            eps: 1e-5,
            momentum: 0.1,
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        if B::ad_enabled(&x.device()) {
            if let Some((y, mean, var)) =
                crate::cpu_ops::batch_norm_train(&x, &self.weight.val(), &self.bias.val(), self.eps)
            {
                self.update_running(mean, var, n * h * w, &x.device());
                return y;
            }
        }
        let (mean, var) = if B::ad_enabled(&x.device()) {
            // Statistics in f64, as PyTorch accumulates them on CPU: f32 sums over thousands of
            // activations lose enough digits to flip ReLU masks downstream of small-variance BNs.
            let flat = x.clone().swap_dims(0, 1).reshape([c, n * h * w]).cast(DType::F64);
            let mean = flat.clone().mean_dim(1);
            let var = (flat - mean.clone()).square().mean_dim(1);
            let dtype = x.dtype();
            let (mean, var) = (mean.cast(dtype), var.cast(dtype));
            let count = (n * h * w) as f64;
            let unbiased = if count > 1.0 { count / (count - 1.0) } else { 1.0 };
            let m = self.momentum;
            let mean1: Tensor<B, 1> = mean.clone().detach().reshape([c]);
            let var1: Tensor<B, 1> = var.clone().detach().reshape([c]);
            self.running_mean.update(self.running_mean.value_sync().mul_scalar(1.0 - m) + mean1.mul_scalar(m));
            self.running_var.update(self.running_var.value_sync().mul_scalar(1.0 - m) + var1.mul_scalar(m * unbiased));
            (mean.reshape([c]), var.reshape([c]))
        } else {
            (self.running_mean.value(), self.running_var.value())
        };
        let scale = self.weight.val() / (var + self.eps).sqrt();
        (x - per_sample(mean, n)) * per_sample(scale, n) + per_sample(self.bias.val(), n)
    }

    /// Running statistics from a batch's mean and biased variance, as the generic path does.
    fn update_running(&self, mean: Vec<f64>, var: Vec<f64>, count: usize, device: &B::Device) {
        let c = mean.len();
        let vector = |v: Vec<f64>| {
            let v: Vec<f32> = v.into_iter().map(|x| x as f32).collect();
            Tensor::<B, 1>::from_data(TensorData::new(v, [c]), device)
        };
        let unbiased = if count > 1 { count as f64 / (count as f64 - 1.0) } else { 1.0 };
        let m = self.momentum;
        self.running_mean.update(self.running_mean.value_sync().mul_scalar(1.0 - m) + vector(mean).mul_scalar(m));
        self.running_var
            .update(self.running_var.value_sync().mul_scalar(1.0 - m) + vector(var).mul_scalar(m * unbiased));
    }
}

/// A per-channel vector as [n, c, 1, 1]. burn-flex 0.21 has a SIMD path for a [n, c, 1, 1]
/// operand against [n, c, h, w] but not for [1, c, 1, 1] (about 80x slower at n = 64), so the
/// small vector is repeated over the batch first.
pub fn per_sample<B: Backend>(v: Tensor<B, 1>, n: usize) -> Tensor<B, 4> {
    let c = v.dims()[0];
    v.reshape([1, c]).repeat_dim(0, n).reshape([n, c, 1, 1])
}

pub fn activate<B: Backend>(x: Tensor<B, 4>, act: Activation) -> Tensor<B, 4> {
    if crate::kinks::armed() {
        return activate_with_kinks(x, act);
    }
    match act {
        Activation::Relu => activation::relu(x),
        Activation::Relu6 => x.clamp(0.0, 6.0),
    }
}

/// The same activation written as x * mask (+ 6 * saturated), with masks from [`crate::kinks`].
fn activate_with_kinks<B: Backend>(x: Tensor<B, 4>, act: Activation) -> Tensor<B, 4> {
    let (shape, device, dtype) = (x.dims(), x.device(), x.dtype());
    let values = x.clone().into_data().convert::<f32>().to_vec::<f32>().expect("float tensor");
    let upper = (act == Activation::Relu6).then_some(6.0);
    let (pass, sat) = crate::kinks::masks(&values, upper);
    let pass = Tensor::<B, 4>::from_data(TensorData::new(pass, shape), &device).cast(dtype);
    let sat = Tensor::<B, 4>::from_data(TensorData::new(sat, shape), &device).cast(dtype);
    let probe = Tensor::<B, 4>::zeros(shape, &device).cast(dtype).require_grad();
    crate::kinks::push_probe(Box::new(probe.clone()));
    x * pass + sat * 6.0 + probe
}

/// Squeeze-and-excitation with timm's layout: two 1x1 convs with bias, ReLU between, sigmoid gate.
#[derive(Module, Debug)]
pub struct SqueezeExcite<B: Backend> {
    pub conv_reduce: Conv2d<B>,
    pub conv_expand: Conv2d<B>,
}

impl<B: Backend> SqueezeExcite<B> {
    pub fn new(channels: u32, reduced: u32, device: &B::Device) -> Self {
        SqueezeExcite {
            conv_reduce: Conv2d::new(channels, reduced, 1, 1, 1, true, device),
            conv_expand: Conv2d::new(reduced, channels, 1, 1, 1, true, device),
        }
    }

    pub fn forward(&self, x: Tensor<B, 4>, act: Activation) -> Tensor<B, 4> {
        let [n, c, h, w] = x.dims();
        // The 1x1 convs act on a 1x1 map: a matmul against the [out, in] view of the weight.
        let pooled: Tensor<B, 2> = x.clone().reshape([n, c, h * w]).mean_dim(2).reshape([n, c]);
        let dense = |conv: &Conv2d<B>, v: Tensor<B, 2>| {
            let [o, i, _, _] = conv.weight.dims();
            let w: Tensor<B, 2> = conv.weight.val().reshape([o, i]);
            let y = v.matmul(w.transpose());
            match &conv.bias {
                Some(b) => y + b.val().reshape([1, o]),
                None => y,
            }
        };
        let r = dense(&self.conv_reduce, pooled);
        let r = activate(r.reshape([n, self.conv_reduce.weight.dims()[0], 1, 1]), act);
        let r: Tensor<B, 2> = r.flatten(1, 3);
        let gate = activation::sigmoid(dense(&self.conv_expand, r)).reshape([n, c, 1, 1]);
        x * gate
    }
}
