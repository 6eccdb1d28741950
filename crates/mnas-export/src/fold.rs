//! Batch-norm folding: conv followed by eval-mode BN becomes one conv with a bias.
//!
//! BN(y) = gamma * (y - mean) / sqrt(var + eps) + beta, per output channel c, so
//! w'[c] = w[c] * s_c and b'_c = beta_c + (b_c - mean_c) * s_c with s_c = gamma_c / sqrt(var_c + eps).
//! Arithmetic is done in f64 and rounded once to f32.

use mnas_model::burn::tensor::backend::Backend;
use mnas_model::burn::tensor::Tensor;
use mnas_model::layers::{BatchNorm, Conv2d};

use crate::error::ExportError;

/// A convolution ready to be written: PyTorch/ONNX weight layout [out, in/groups, k, k].
#[derive(Debug, Clone)]
pub struct ConvParams {
    pub weight: Vec<f32>,
    pub shape: [usize; 4],
    pub bias: Option<Vec<f32>>,
    pub stride: usize,
    pub groups: usize,
}

impl ConvParams {
    pub fn out_channels(&self) -> usize {
        self.shape[0]
    }

    pub fn kernel(&self) -> usize {
        self.shape[2]
    }
}

/// The values of any float tensor, as f32.
pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>, name: &str) -> Result<Vec<f32>, ExportError> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| ExportError::Tensor { tensor: name.into(), reason: format!("unreadable: {e:?}") })
}

fn check_finite(values: &[f32], name: &str, note: &str) -> Result<(), ExportError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => {
            Err(ExportError::Tensor { tensor: name.into(), reason: format!("element {i} is {}{note}", values[i]) })
        }
        None => Ok(()),
    }
}

/// A convolution as it is (its own bias, if any); used for the SE convs.
pub fn plain<B: Backend>(conv: &Conv2d<B>, name: &str) -> Result<ConvParams, ExportError> {
    let shape = conv.weight.dims();
    let weight = values(conv.weight.val(), &format!("{name}.weight"))?;
    check_finite(&weight, &format!("{name}.weight"), "")?;
    let bias = match &conv.bias {
        Some(b) => {
            let bias = values(b.val(), &format!("{name}.bias"))?;
            check_finite(&bias, &format!("{name}.bias"), "")?;
            if bias.len() != shape[0] {
                return Err(ExportError::Tensor {
                    tensor: format!("{name}.bias"),
                    reason: format!("{} values for {} output channels", bias.len(), shape[0]),
                });
            }
            Some(bias)
        }
        None => None,
    };
    Ok(ConvParams { weight, shape, bias, stride: conv.stride, groups: conv.groups })
}

/// `conv` followed by `bn` (running statistics, eps from the module) as one biased conv.
pub fn conv_bn<B: Backend>(conv: &Conv2d<B>, bn: &BatchNorm<B>, name: &str) -> Result<ConvParams, ExportError> {
    let p = plain(conv, name)?;
    let read = |t: Tensor<B, 1>, what: &str| values(t, &format!("{name}.bn.{what}"));
    let gamma = read(bn.weight.val(), "weight")?;
    let beta = read(bn.bias.val(), "bias")?;
    let mean = read(bn.running_mean.value(), "running_mean")?;
    let var = read(bn.running_var.value(), "running_var")?;
    let c = p.out_channels();
    if [&gamma, &beta, &mean, &var].iter().any(|v| v.len() != c) {
        return Err(ExportError::Structure(format!(
            "{name}: batch norm over {} channels follows a conv with {c} outputs",
            gamma.len()
        )));
    }
    let per_channel = p.weight.len() / c.max(1);
    let mut weight = Vec::with_capacity(p.weight.len());
    let mut bias = Vec::with_capacity(c);
    for ch in 0..c {
        let scale = f64::from(gamma[ch]) / (f64::from(var[ch]) + bn.eps).sqrt();
        let b0 = p.bias.as_ref().map_or(0.0, |b| f64::from(b[ch]));
        bias.push((f64::from(beta[ch]) + (b0 - f64::from(mean[ch])) * scale) as f32);
        weight
            .extend(p.weight[ch * per_channel..(ch + 1) * per_channel].iter().map(|&w| (f64::from(w) * scale) as f32));
    }
    let note = " after folding in the batch norm (its running_var + eps must be > 0)";
    check_finite(&weight, &format!("{name}.weight"), note)?;
    check_finite(&bias, &format!("{name}.bias"), note)?;
    Ok(ConvParams { weight, bias: Some(bias), ..p })
}

#[cfg(test)]
mod tests {
    use mnas_model::backend::Cpu;
    use mnas_model::burn::module::{Param, RunningState};
    use mnas_model::burn::tensor::{Tensor, TensorData};

    use super::*;

    fn t1(v: &[f32]) -> Tensor<Cpu, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    #[test]
    fn folding_matches_the_formula() {
        let device = Default::default();
        let mut conv = Conv2d::<Cpu>::new(1, 2, 1, 1, 1, false, &device);
        conv.weight = Param::from_tensor(Tensor::from_data(TensorData::new(vec![2.0f32, -1.0], [2, 1, 1, 1]), &device));
        let mut bn = BatchNorm::<Cpu>::new(2, &device);
        bn.eps = 1e-3;
        bn.weight = Param::from_tensor(t1(&[0.5, 2.0]));
        bn.bias = Param::from_tensor(t1(&[0.1, -0.2]));
        bn.running_mean = RunningState::new(t1(&[1.0, -1.0]));
        bn.running_var = RunningState::new(t1(&[3.999, 0.249]));
        let p = conv_bn(&conv, &bn, "x").unwrap();
        // s = [0.5 / 2, 2 / 0.5] = [0.25, 4]
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        assert!(close(p.weight[0], 0.5) && close(p.weight[1], -4.0), "{:?}", p.weight);
        let b = p.bias.unwrap();
        assert!(close(b[0], 0.1 - 0.25) && close(b[1], -0.2 + 4.0), "{b:?}");
    }

    #[test]
    fn negative_variance_is_an_error() {
        let device = Default::default();
        let conv = Conv2d::<Cpu>::new(1, 1, 1, 1, 1, false, &device);
        let mut bn = BatchNorm::<Cpu>::new(1, &device);
        bn.running_var = RunningState::new(t1(&[-1.0]));
        let err = conv_bn(&conv, &bn, "blocks.0.0.conv_dw").unwrap_err().to_string();
        assert!(err.contains("blocks.0.0.conv_dw") && err.contains("running_var"), "{err}");
    }
}
