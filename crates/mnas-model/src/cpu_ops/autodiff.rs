//! The hand-written kernels as single nodes of burn's autodiff graph on flex, so that backward
//! calls them directly instead of differentiating through dozens of generic tensor ops.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::tensor::backend::BackendTypes;

use super::batchnorm::{self, BnShape};
use super::depthwise::{self, DwShape};
use super::pointwise::{self, PwShape};
use super::{dense, f32_tensor, slice};
use crate::backend::{Cpu, CpuTrain};

/// The autodiff tensor primitive of [`CpuTrain`]: a flex tensor plus its graph node.
pub type AdTensor = <CpuTrain as BackendTypes>::FloatTensorPrimitive;

#[derive(Debug)]
struct DepthwiseBackward;

impl Backward<Cpu, 2> for DepthwiseBackward {
    /// Contiguous input and weight (shared, not copied), and the geometry.
    type State = (FlexTensor, FlexTensor, DwShape);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = dense(grads.consume::<Cpu>(&ops.node));
        let (x, w, g) = ops.state;
        let (x, w, dy) = (slice(&x), slice(&w), slice(&dy));
        if let Some(node) = node_w {
            let dw = depthwise::backward_w(x, dy, &g);
            grads.register::<Cpu>(node.id, f32_tensor(dw, vec![g.c, 1, g.k, g.k]));
        }
        if let Some(node) = node_x {
            let dx = depthwise::backward_x(dy, w, &g);
            grads.register::<Cpu>(node.id, f32_tensor(dx, vec![g.n, g.c, g.h, g.w]));
        }
    }
}

pub fn depthwise(x: AdTensor, w: AdTensor, g: DwShape) -> AdTensor {
    let (xv, wv) = (dense(x.primitive.clone()), dense(w.primitive.clone()));
    let y = f32_tensor(depthwise::forward(slice(&xv), slice(&wv), &g), vec![g.n, g.c, g.out_h(), g.out_w()]);
    match DepthwiseBackward.prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((xv, wv, g), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}

#[derive(Debug)]
struct BatchNormBackward;

/// What backward needs: the input, the batch statistics and gamma.
#[derive(Debug, Clone)]
struct BnState {
    x: FlexTensor,
    dims: Vec<usize>,
    shape: BnShape,
    mean: Vec<f64>,
    invstd: Vec<f64>,
    gamma: Vec<f32>,
}

impl Backward<Cpu, 3> for BatchNormBackward {
    type State = BnState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let dy = dense(grads.consume::<Cpu>(&ops.node));
        let s = ops.state;
        let (dx, dgamma, dbeta) = batchnorm::backward(slice(&s.x), slice(&dy), &s.shape, &s.mean, &s.invstd, &s.gamma);
        let c = s.shape.c;
        if let Some(node) = node_x {
            grads.register::<Cpu>(node.id, f32_tensor(dx, s.dims.clone()));
        }
        if let Some(node) = node_gamma {
            grads.register::<Cpu>(node.id, f32_tensor(dgamma, vec![c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Cpu>(node.id, f32_tensor(dbeta, vec![c]));
        }
    }
}

/// Train-mode BN of an NCHW `x`; returns y and the batch mean and biased variance (for the
/// running statistics).
pub fn batch_norm(
    x: AdTensor,
    gamma: AdTensor,
    beta: AdTensor,
    shape: BnShape,
    eps: f64,
) -> (AdTensor, Vec<f64>, Vec<f64>) {
    let xv = dense(x.primitive.clone());
    let gv = slice(&dense(gamma.primitive.clone())).to_vec();
    let bv = dense(beta.primitive.clone());
    let (mean, var) = batchnorm::stats(slice(&xv), &shape);
    let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let y = batchnorm::forward(slice(&xv), &shape, &mean, &invstd, &gv, slice(&bv));
    let dims = x.primitive.layout().shape().to_vec();
    let y = f32_tensor(y, dims.clone());
    let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    let out = match BatchNormBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(BnState { x: xv, dims, shape, mean: mean.clone(), invstd, gamma: gv }, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    (out, mean, var)
}

#[derive(Debug)]
struct PointwiseBackward;

impl Backward<Cpu, 2> for PointwiseBackward {
    /// Contiguous input and weight (shared, not copied), and the geometry.
    type State = (FlexTensor, FlexTensor, PwShape);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = dense(grads.consume::<Cpu>(&ops.node));
        let (x, w, g) = ops.state;
        let h = x.layout().shape()[2];
        let (x, w, dy) = (slice(&x), slice(&w), slice(&dy));
        if let Some(node) = node_w {
            let dw = pointwise::backward_w(x, dy, &g);
            grads.register::<Cpu>(node.id, f32_tensor(dw, vec![g.cout, g.cin, 1, 1]));
        }
        if let Some(node) = node_x {
            let dx = pointwise::backward_x(dy, w, &g);
            grads.register::<Cpu>(node.id, f32_tensor(dx, vec![g.n, g.cin, h, g.hw / h.max(1)]));
        }
    }
}

/// y[n] = W x[n] for an NCHW x and a [cout, cin, 1, 1] weight.
pub fn pointwise(x: AdTensor, w: AdTensor, g: PwShape, out_dims: Vec<usize>) -> AdTensor {
    let (xv, wv) = (dense(x.primitive.clone()), dense(w.primitive.clone()));
    let y = f32_tensor(pointwise::forward(slice(&xv), slice(&wv), &g), out_dims);
    match PointwiseBackward.prepare::<NoCheckpointing>([x.node.clone(), w.node.clone()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish((xv, wv, g), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    }
}
