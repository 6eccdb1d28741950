//! Weights on disk: timm-named safetensors in, and our own safetensors (same names, plus the
//! arch as metadata) out. One naming function serves import, export and counting.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use burn::module::{Param, RunningState};
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use mnas_space::{naming, Arch};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::error::ModelError;
use crate::layers::{BatchNorm, Conv2d, SqueezeExcite};
use crate::net::{MnasNet, SearchLayer};

/// A named tensor of the model, mutable so that import can replace it.
pub enum Slot<'a, B: Backend> {
    P4(&'a mut Param<Tensor<B, 4>>),
    P2(&'a mut Param<Tensor<B, 2>>),
    P1(&'a mut Param<Tensor<B, 1>>),
    Running(&'a mut RunningState<Tensor<B, 1>>),
}

impl<B: Backend> Slot<'_, B> {
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Slot::P4(p) => p.dims().to_vec(),
            Slot::P2(p) => p.dims().to_vec(),
            Slot::P1(p) => p.dims().to_vec(),
            Slot::Running(r) => r.value().dims().to_vec(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape().iter().product()
    }

    /// BN running statistics are state, not parameters.
    pub fn trainable(&self) -> bool {
        !matches!(self, Slot::Running(_))
    }

    pub fn to_vec(&self) -> Vec<f32> {
        let data = match self {
            Slot::P4(p) => p.val().into_data(),
            Slot::P2(p) => p.val().into_data(),
            Slot::P1(p) => p.val().into_data(),
            Slot::Running(r) => r.value().into_data(),
        };
        data.convert::<f32>().to_vec::<f32>().expect("float tensor")
    }

    fn set(&mut self, values: Vec<f32>, device: &B::Device, dtype: Option<DType>) {
        let shape = self.shape();
        let data = TensorData::new(values, shape);
        fn make<B: Backend, const D: usize>(
            data: TensorData,
            device: &B::Device,
            dtype: Option<DType>,
        ) -> Tensor<B, D> {
            let t: Tensor<B, D> = Tensor::from_data(data, device);
            match dtype {
                Some(d) => t.cast(d),
                None => t,
            }
        }
        match self {
            Slot::P4(p) => **p = Param::initialized(p.id, make(data, device, dtype).require_grad()),
            Slot::P2(p) => **p = Param::initialized(p.id, make(data, device, dtype).require_grad()),
            Slot::P1(p) => **p = Param::initialized(p.id, make(data, device, dtype).require_grad()),
            Slot::Running(r) => **r = RunningState::new(make(data, device, dtype)),
        }
    }
}

type Visitor<'f, B> = dyn FnMut(&str, Slot<'_, B>) + 'f;

fn conv<B: Backend>(prefix: &str, c: &mut Conv2d<B>, f: &mut Visitor<'_, B>) {
    f(&format!("{prefix}.weight"), Slot::P4(&mut c.weight));
    if let Some(b) = c.bias.as_mut() {
        f(&format!("{prefix}.bias"), Slot::P1(b));
    }
}

fn bn<B: Backend>(prefix: &str, b: &mut BatchNorm<B>, f: &mut Visitor<'_, B>) {
    f(&format!("{prefix}.weight"), Slot::P1(&mut b.weight));
    f(&format!("{prefix}.bias"), Slot::P1(&mut b.bias));
    f(&format!("{prefix}.running_mean"), Slot::Running(&mut b.running_mean));
    f(&format!("{prefix}.running_var"), Slot::Running(&mut b.running_var));
}

fn se<B: Backend>(prefix: &str, s: &mut SqueezeExcite<B>, f: &mut Visitor<'_, B>) {
    conv(&format!("{prefix}.conv_reduce"), &mut s.conv_reduce, f);
    conv(&format!("{prefix}.conv_expand"), &mut s.conv_expand, f);
}

fn layer<B: Backend>(p: &str, l: &mut SearchLayer<B>, f: &mut Visitor<'_, B>) {
    let names = naming::layer_names(l.spec.op);
    if let (Some(c), Some(b)) = (l.conv_exp.as_mut(), l.bn_exp.as_mut()) {
        conv(&format!("{p}.{}", names.expand_conv), c, f);
        bn(&format!("{p}.{}", names.expand_bn), b, f);
    }
    conv(&format!("{p}.{}", names.kxk_conv), &mut l.conv_k, f);
    bn(&format!("{p}.{}", names.kxk_bn), &mut l.bn_k, f);
    if let Some(s) = l.se.as_mut() {
        se(&format!("{p}.{}", names.se), s, f);
    }
    if let (Some(c), Some(b)) = (l.conv_proj.as_mut(), l.bn_proj.as_mut()) {
        conv(&format!("{p}.{}", names.project_conv), c, f);
        bn(&format!("{p}.{}", names.project_bn), b, f);
    }
    if let (Some(c), Some(b)) = (l.skip_conv.as_mut(), l.skip_bn.as_mut()) {
        conv(&format!("{p}.{}", names.skip_conv), c, f);
        bn(&format!("{p}.{}", names.skip_bn), b, f);
    }
}

/// Visits every tensor of the model with its timm state-dict name, mutably.
pub fn visit_mut<B: Backend>(m: &mut MnasNet<B>, f: &mut Visitor<'_, B>) {
    conv(naming::STEM_CONV, &mut m.conv_stem, f);
    bn(naming::STEM_BN, &mut m.bn1, f);
    for l in m.blocks.iter_mut() {
        let prefix = naming::layer_prefix(&l.spec);
        layer(&prefix, l, f);
    }
    conv(naming::HEAD_CONV, &mut m.conv_head, f);
    bn(naming::HEAD_BN, &mut m.bn2, f);
    f(&format!("{}.weight", naming::CLASSIFIER), Slot::P2(&mut m.classifier_weight));
    f(&format!("{}.bias", naming::CLASSIFIER), Slot::P1(&mut m.classifier_bias));
}

/// Visits every tensor read-only (on a shallow clone: tensors are shared, not copied).
pub fn visit<B: Backend>(m: &MnasNet<B>, mut f: impl FnMut(&str, Slot<'_, B>)) {
    let mut shallow = m.clone();
    visit_mut(&mut shallow, &mut f);
}

impl<B: Backend> MnasNet<B> {
    /// Trainable parameters (BN running statistics excluded), the figure timm reports.
    pub fn trainable_params(&self) -> usize {
        let mut total = 0;
        visit(self, |_, slot| {
            if slot.trainable() {
                total += slot.numel();
            }
        });
        total
    }
}

fn st_err(path: &Path, e: impl std::fmt::Display) -> ModelError {
    ModelError::Safetensors { path: path.to_path_buf(), reason: e.to_string() }
}

/// Key under which our own files keep the arch JSON.
pub const ARCH_METADATA_KEY: &str = "mnas.arch";

/// Reads the arch stored in a safetensors file written by [`save`], if any.
pub fn stored_arch(path: &Path) -> Result<Option<Arch>, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read { path: path.into(), source })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| st_err(path, e))?;
    match meta.metadata().as_ref().and_then(|m| m.get(ARCH_METADATA_KEY)) {
        Some(json) => Ok(Some(Arch::from_json(json)?)),
        None => Ok(None),
    }
}

/// Loads weights into `model`. Names are timm's; a `model.` prefix (the fixtures' layout) is
/// detected. Every tensor must be present with the right shape, and no unused model tensor may
/// remain (that would mean the file belongs to another architecture).
pub fn load<B: Backend>(model: &mut MnasNet<B>, path: &Path, device: &B::Device) -> Result<(), ModelError> {
    load_as(model, path, device, None)
}

/// [`load`], with every tensor cast to `dtype` (the parity check's float64 gradient pass).
pub fn load_as<B: Backend>(
    model: &mut MnasNet<B>,
    path: &Path,
    device: &B::Device,
    dtype: Option<DType>,
) -> Result<(), ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read { path: path.into(), source })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| st_err(path, e))?;
    let names: BTreeSet<String> = st.names().into_iter().cloned().collect();
    let prefix = if names.contains("model.conv_stem.weight") { "model." } else { "" };
    let mut used = BTreeSet::new();
    let mut result = Ok(());
    visit_mut(model, &mut |name, mut slot| {
        if result.is_err() {
            return;
        }
        let key = format!("{prefix}{name}");
        result = read_tensor(&st, path, &key, &slot.shape()).map(|values| {
            slot.set(values, device, dtype);
            used.insert(key);
        });
    });
    result?;
    let leftover: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(prefix) && !used.contains(*n) && !n.ends_with("num_batches_tracked"))
        .filter(|n| !prefix.is_empty() || !n.starts_with("grad."))
        .collect();
    if let Some(extra) = leftover.first() {
        return Err(st_err(
            path,
            format!(
                "{} tensor(s) not used by this architecture, e.g. `{extra}`: the weights belong to another model",
                leftover.len()
            ),
        ));
    }
    Ok(())
}

/// Reads one F32 tensor by name, checking its shape.
pub fn read_tensor(st: &SafeTensors<'_>, path: &Path, name: &str, expected: &[usize]) -> Result<Vec<f32>, ModelError> {
    let view = st.tensor(name).map_err(|_| ModelError::MissingTensor { path: path.into(), name: name.into() })?;
    let values = view_to_f32(&view, path, name)?;
    if view.shape() != expected {
        return Err(ModelError::ShapeMismatch {
            path: path.into(),
            name: name.into(),
            expected: expected.to_vec(),
            got: view.shape().to_vec(),
        });
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(ModelError::NonFinite { path: path.into(), name: name.into() });
    }
    Ok(values)
}

/// Decodes a little-endian F32 tensor view.
pub fn view_to_f32(view: &TensorView<'_>, path: &Path, name: &str) -> Result<Vec<f32>, ModelError> {
    if view.dtype() != Dtype::F32 {
        return Err(ModelError::Dtype { path: path.into(), name: name.into(), dtype: format!("{:?}", view.dtype()) });
    }
    Ok(view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// Writes the model's weights (timm names, no prefix) with the arch as metadata. The file is
/// written beside the target and renamed, so a crash never leaves a half-written file.
pub fn save<B: Backend>(model: &MnasNet<B>, path: &Path) -> Result<(), ModelError> {
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    visit(model, |name, slot| {
        let bytes = slot.to_vec().iter().flat_map(|v| v.to_le_bytes()).collect();
        tensors.push((name.to_string(), slot.shape(), bytes));
    });
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| Ok((n.clone(), TensorView::new(Dtype::F32, s.clone(), b).map_err(|e| st_err(path, e))?)))
        .collect::<Result<_, ModelError>>()?;
    let meta: HashMap<String, String> = [(ARCH_METADATA_KEY.to_string(), model.arch.to_json())].into();
    let bytes = safetensors::serialize(views, &Some(meta)).map_err(|e| st_err(path, e))?;
    let tmp = path.with_extension("safetensors.tmp");
    std::fs::write(&tmp, bytes).map_err(|source| ModelError::Write { path: path.into(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| ModelError::Write { path: path.into(), source })
}
