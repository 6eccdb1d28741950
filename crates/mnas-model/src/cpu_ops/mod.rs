//! Hand-written CPU kernels for the two ops that dominate MnasNet training on flex: depthwise
//! convolution and train-mode batch norm (profile of a proxy run: BN's generic composition and the
//! grouped-conv backward took over half the step, mostly single-threaded strided copies).
//!
//! The layers stay generic over `B: Backend`; [`depthwise_conv2d`] and [`batch_norm_train`] check
//! at run time whether `B` is [`Cpu`] or [`CpuTrain`] (a type-id downcast, no unsafe) and return
//! `None` for any other backend, where the caller keeps burn's generic ops. [`set_enabled`] turns
//! the kernels off, which is how the tests compare them with the generic path.

mod autodiff;
pub mod batchnorm;
pub mod depthwise;
pub mod pointwise;

use std::any::Any;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::backend::flex::FlexTensor;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};

use self::batchnorm::BnShape;
use self::depthwise::DwShape;
use self::pointwise::PwShape;
use crate::backend::{Cpu, CpuTrain};

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Switches the hand-written kernels on or off for the whole process (default on).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::SeqCst);
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

/// Sizes the rayon pool that flex and these kernels share. Only the first call in a process can
/// take effect (rayon's global pool is built once); returns whether this one did.
pub fn set_threads(threads: usize) -> bool {
    rayon::ThreadPoolBuilder::new().num_threads(threads.max(1)).build_global().is_ok()
}

/// Moves a value of type `T` into type `U` when they are the same type.
fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("slot is filled")),
        None => Err(slot.expect("slot is filled")),
    }
}

/// A contiguous f32 copy-free view when possible.
fn dense(t: FlexTensor) -> FlexTensor {
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("dense() made the tensor contiguous f32")
}

fn f32_tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn usable<B: Backend, const D: usize>(tensors: &[&Tensor<B, D>]) -> bool {
    enabled() && tensors.iter().all(|t| t.dtype() == DType::F32)
}

fn to_flex<const D: usize>(t: Tensor<Cpu, D>) -> FlexTensor {
    t.into_primitive().tensor()
}

fn from_flex<const D: usize>(t: FlexTensor) -> Tensor<Cpu, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

fn to_ad<const D: usize>(t: Tensor<CpuTrain, D>) -> autodiff::AdTensor {
    t.into_primitive().tensor()
}

fn from_ad<const D: usize>(t: autodiff::AdTensor) -> Tensor<CpuTrain, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// Depthwise convolution (weight [c, 1, k, k], groups = c, zero padding k/2) with the
/// hand-written kernels, or `None` when `B` is not a CPU backend or the kernels are off.
pub fn depthwise_conv2d<B: Backend>(x: &Tensor<B, 4>, weight: &Tensor<B, 4>, stride: usize) -> Option<Tensor<B, 4>> {
    if !usable(&[x, weight]) {
        return None;
    }
    let [n, c, h, w] = x.dims();
    let [co, ci, k, k2] = weight.dims();
    if co != c || ci != 1 || k != k2 || k % 2 == 0 || stride == 0 {
        return None;
    }
    let g = DwShape { n, c, h, w, k, stride, pad: k / 2 };
    let (x, weight) = (x.clone(), weight.clone());
    let (x, weight) = match (cast::<_, Tensor<CpuTrain, 4>>(x), cast::<_, Tensor<CpuTrain, 4>>(weight)) {
        (Ok(x), Ok(wt)) => return cast(from_ad::<4>(autodiff::depthwise(to_ad(x), to_ad(wt), g))).ok(),
        (Err(x), Err(wt)) => (x, wt),
        _ => return None,
    };
    match (cast::<_, Tensor<Cpu, 4>>(x), cast::<_, Tensor<Cpu, 4>>(weight)) {
        (Ok(x), Ok(wt)) => {
            let (x, wt) = (dense(to_flex(x)), dense(to_flex(wt)));
            let y = depthwise::forward(slice(&x), slice(&wt), &g);
            cast(from_flex::<4>(f32_tensor(y, vec![n, c, g.out_h(), g.out_w()]))).ok()
        }
        _ => None,
    }
}

/// 1x1 convolution (stride 1, no bias, groups 1) as per-image matrix products, on [`CpuTrain`]
/// only (inference's generic 1x1 convolution is already a single gemm); `None` otherwise.
pub fn pointwise_conv2d<B: Backend>(x: &Tensor<B, 4>, weight: &Tensor<B, 4>) -> Option<Tensor<B, 4>> {
    if !usable(&[x, weight]) {
        return None;
    }
    let [n, cin, h, w] = x.dims();
    let [cout, ci, k, k2] = weight.dims();
    if ci != cin || k != 1 || k2 != 1 {
        return None;
    }
    let g = PwShape { n, cin, cout, hw: h * w };
    let x = cast::<_, Tensor<CpuTrain, 4>>(x.clone()).ok()?;
    let wt = cast::<_, Tensor<CpuTrain, 4>>(weight.clone()).ok()?;
    cast(from_ad::<4>(autodiff::pointwise(to_ad(x), to_ad(wt), g, vec![n, cout, h, w]))).ok()
}

/// Train-mode batch norm of an NCHW `x` on [`CpuTrain`]: y, batch mean and biased variance.
/// `None` for other backends (inference uses running statistics and needs no kernel).
pub fn batch_norm_train<B: Backend>(
    x: &Tensor<B, 4>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    eps: f64,
) -> Option<(Tensor<B, 4>, Vec<f64>, Vec<f64>)> {
    if !usable(&[x]) || !usable(&[gamma, beta]) {
        return None;
    }
    let [n, c, h, w] = x.dims();
    let x = cast::<_, Tensor<CpuTrain, 4>>(x.clone()).ok()?;
    let gamma = cast::<_, Tensor<CpuTrain, 1>>(gamma.clone()).ok()?;
    let beta = cast::<_, Tensor<CpuTrain, 1>>(beta.clone()).ok()?;
    let shape = BnShape { n, c, hw: h * w };
    let (y, mean, var) = autodiff::batch_norm(to_ad(x), to_ad(gamma), to_ad(beta), shape, eps);
    Some((cast(from_ad::<4>(y)).ok()?, mean, var))
}
