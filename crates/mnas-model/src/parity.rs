//! Comparison of an mnas model against a timm fixture (DESIGN §4): the check behind the
//! `timm_parity` test, kept in the library so the CLI can run it on a user's own fixtures too.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{activation, DType, Int, Tensor, TensorData};
use mnas_space::Arch;
use safetensors::SafeTensors;
use serde::Deserialize;

use crate::backend::{Cpu, CpuTrain};
use crate::error::ModelError;
use crate::kinks::{self, KinkSite};
use crate::net::MnasNet;
use crate::weights::{self, read_tensor, view_to_f32, Slot};

/// The sidecar JSON next to each fixture.
#[derive(Debug, Deserialize)]
pub struct FixtureInfo {
    pub timm_model: String,
    pub num_classes: u32,
    pub input_size: u32,
}

/// Errors measured for one fixture: max |ours - theirs| / max |theirs|.
#[derive(Debug, Clone)]
pub struct ParityReport {
    pub fixture: PathBuf,
    pub model: String,
    pub logits_eval: f64,
    pub logits_train: Option<f64>,
    pub loss_train: Option<f64>,
    /// The worst parameter gradient and its name.
    pub worst_grad: Option<(String, f64)>,
    pub grads_checked: usize,
    /// BN-bias gradients that are zero in exact arithmetic, judged against their BN's flow.
    pub grads_at_noise_floor: usize,
    /// Train-mode pre-activations found within rounding of a ReLU kink.
    pub kinks_near: usize,
    /// How many of those were resolved to the reference's side to explain its gradients.
    pub kinks_flipped: usize,
    /// Worst gradient error against float64 reference gradients, for fixtures that carry them.
    pub worst_grad_f64: Option<(String, f64)>,
    /// Precision of the train pass reported ("f64" or "f32").
    pub train_dtype: Option<&'static str>,
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0f64, |m, x| m.max(x.abs() as f64))
}

/// Max absolute difference over the reference's max magnitude (at least `floor`).
pub fn rel_error_floored(ours: &[f32], theirs: &[f32], floor: f64) -> f64 {
    if ours.len() != theirs.len() {
        return f64::INFINITY;
    }
    let diff = ours.iter().zip(theirs).fold(0f64, |m, (a, b)| m.max((*a as f64 - *b as f64).abs()));
    diff / max_abs(theirs).max(floor).max(1e-30)
}

/// Max absolute difference over the reference's max magnitude.
pub fn rel_error(ours: &[f32], theirs: &[f32]) -> f64 {
    rel_error_floored(ours, theirs, 0.0)
}

/// A BN bias whose output only reaches train-mode BNs through linear ops has a gradient that is
/// zero in exact arithmetic: both sides then hold fp32 rounding noise of the gradient flowing
/// through that BN. Such a bias is judged against the scale of that flow, which its sibling
/// weight gradient (same dL/dy) measures, when it is larger than the bias's own.
fn grad_scale(name: &str, want: &[f32], by_name: &HashMap<&str, f64>) -> (f64, bool) {
    let own = max_abs(want);
    let sibling = name
        .strip_suffix(".bias")
        .filter(|p| p.rsplit('.').next().is_some_and(|m| m.starts_with("bn")))
        .and_then(|p| by_name.get(format!("{p}.weight").as_str()).copied())
        .unwrap_or(0.0);
    (own.max(sibling), own < 1e-3 * sibling)
}

fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().expect("float tensor")
}

fn input<B: Backend>(
    st: &SafeTensors<'_>,
    path: &Path,
    info: &FixtureInfo,
    device: &B::Device,
) -> Result<Tensor<B, 4>, ModelError> {
    let view = st.tensor("input").map_err(|_| ModelError::MissingTensor { path: path.into(), name: "input".into() })?;
    let shape = view.shape().to_vec();
    if shape.len() != 4 || shape[1] != 3 || shape[2] != info.input_size as usize {
        return Err(ModelError::ShapeMismatch {
            path: path.into(),
            name: "input".into(),
            expected: vec![shape.first().copied().unwrap_or(1), 3, info.input_size as usize, info.input_size as usize],
            got: shape,
        });
    }
    let values = view_to_f32(&view, path, "input")?;
    Ok(Tensor::from_data(TensorData::new(values, shape), device))
}

fn build<B: Backend>(
    info: &FixtureInfo,
    path: &Path,
    device: &B::Device,
    dtype: Option<DType>,
) -> Result<MnasNet<B>, ModelError> {
    let mut arch: Arch = mnas_space::lookup(&info.timm_model)?;
    arch.num_classes = info.num_classes;
    arch.resolution = info.input_size;
    // timm's create_model default: no dropout.
    arch.dropout = 0.0;
    let mut model = MnasNet::new(&arch, device)?;
    weights::load_as(&mut model, path, device, dtype)?;
    Ok(model)
}

/// Runs every check the fixture has data for.
pub fn check_fixture(path: &Path) -> Result<ParityReport, ModelError> {
    let sidecar = path.with_extension("json");
    let text =
        std::fs::read_to_string(&sidecar).map_err(|source| ModelError::Read { path: sidecar.clone(), source })?;
    let info: FixtureInfo = serde_json::from_str(&text)
        .map_err(|e| ModelError::Arch(mnas_space::SpaceError::Json(format!("{}: {e}", sidecar.display()))))?;
    let bytes = std::fs::read(path).map_err(|source| ModelError::Read { path: path.into(), source })?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| ModelError::Safetensors { path: path.into(), reason: e.to_string() })?;

    let device = Default::default();
    let model = build::<Cpu>(&info, path, &device, None)?;
    let x = input::<Cpu>(&st, path, &info, &device)?;
    let logits = to_vec(model.forward(x.clone()));
    let want = read_tensor(&st, path, "logits_eval", &[x.dims()[0], info.num_classes as usize])?;
    let mut report = ParityReport {
        fixture: path.into(),
        model: info.timm_model.clone(),
        logits_eval: rel_error(&logits, &want),
        logits_train: None,
        loss_train: None,
        worst_grad: None,
        grads_checked: 0,
        grads_at_noise_floor: 0,
        kinks_near: 0,
        kinks_flipped: 0,
        worst_grad_f64: None,
        train_dtype: None,
    };

    if st.names().iter().any(|n| n.as_str() == "loss_train") {
        // The train check runs our network in float64 first: its gradients then equal the exact
        // ones (timm's float64 gradients to ~1e-8 where a fixture carries them), so only the
        // reference's own float32 rounding remains. Where that rounding put a ReLU input on the
        // other side of zero, the float32 run may land on the reference's side instead; the
        // better of the two is reported, with its precision.
        let mut best: Option<(TrainPass, usize, DType)> = None;
        let mut best64: Option<(String, f64)> = None;
        for dtype in [DType::F64, DType::F32] {
            let (pass, flipped) = train_check(&info, path, &st, dtype)?;
            if let Some(w) = &pass.worst64 {
                if best64.as_ref().is_none_or(|b| w.1 < b.1) {
                    best64 = Some(w.clone());
                }
            }
            let better = best.as_ref().is_none_or(|(b, _, _)| pass.worst.1 < b.worst.1);
            let good = pass.worst.1 <= GRAD_TOLERANCE;
            if better {
                best = Some((pass, flipped, dtype));
            }
            if good {
                break;
            }
        }
        let (pass, flipped, dtype) = best.expect("at least one pass ran");
        report.train_dtype = Some(if dtype == DType::F64 { "f64" } else { "f32" });
        report.kinks_near = pass.near_kinks.len();
        report.kinks_flipped = flipped;
        report.logits_train = Some(pass.logits_err);
        report.loss_train = Some(pass.loss_err);
        report.grads_checked = pass.grads_checked;
        report.grads_at_noise_floor = pass.grads_at_noise_floor;
        report.worst_grad = Some(pass.worst);
        report.worst_grad_f64 = best64;
    }
    Ok(report)
}

/// Mean cross-entropy of logits [N, C] against integer labels.
pub fn cross_entropy<B: Backend>(logits: Tensor<B, 2>, labels: &[i64], device: &B::Device) -> Tensor<B, 1> {
    let [n, _] = logits.dims();
    let idx: Tensor<B, 2, Int> = Tensor::from_data(TensorData::new(labels.to_vec(), [n, 1]), device);
    let logp = activation::log_softmax(logits, 1);
    logp.gather(1, idx).mean().neg()
}

/// The gradient tolerance of the parity check (DESIGN §4).
pub const GRAD_TOLERANCE: f64 = 1e-3;
/// A pre-activation within this fraction of its tensor's largest magnitude counts as on the kink.
pub const KINK_RELATIVE_TOL: f64 = 1e-5;
/// Only the sites closest to their kink are tried (each try is a forward + backward pass).
pub const MAX_KINK_CANDIDATES: usize = 24;

struct TrainPass {
    logits_err: f64,
    loss_err: f64,
    worst: (String, f64),
    /// Worst error against the fixture's float64 gradients (`grad64.*`), when it has them.
    worst64: Option<(String, f64)>,
    /// Sum of the per-tensor errors: what a kink flip must lower to be kept.
    total: f64,
    grads_checked: usize,
    grads_at_noise_floor: usize,
    /// Near-kink sites with the magnitude of the gradient flowing into them.
    near_kinks: Vec<(KinkSite, f64)>,
}

/// A train pass in `dtype`, then, only if the gradients disagree, near-kink activations resolved
/// greedily (closest ties first), keeping a flip only if it brings the gradients closer to the
/// reference. Returns the final pass and how many flips it holds; the float64 comparison
/// (`worst64`) always comes from the unflipped pass.
fn train_check(
    info: &FixtureInfo,
    path: &Path,
    st: &SafeTensors<'_>,
    dtype: DType,
) -> Result<(TrainPass, usize), ModelError> {
    let mut pass = train_pass(info, path, st, BTreeSet::new(), dtype)?;
    let unflipped_worst64 = pass.worst64.clone();
    let mut near = pass.near_kinks.clone();
    near.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut flips = BTreeSet::new();
    if pass.worst.1 > GRAD_TOLERANCE {
        for (site, _) in near.into_iter().take(MAX_KINK_CANDIDATES) {
            let mut trial = flips.clone();
            trial.insert(site);
            let candidate = train_pass(info, path, st, trial.clone(), dtype)?;
            if candidate.total < pass.total {
                flips = trial;
                pass = candidate;
            }
        }
    }
    pass.worst64 = unflipped_worst64;
    Ok((pass, flips.len()))
}

/// One train-mode forward + backward against the fixture, with the given kink flips.
fn train_pass(
    info: &FixtureInfo,
    path: &Path,
    st: &SafeTensors<'_>,
    flips: BTreeSet<KinkSite>,
    dtype: DType,
) -> Result<TrainPass, ModelError> {
    let device = Default::default();
    let mut model = build::<CpuTrain>(info, path, &device, Some(dtype))?;
    let x = input::<CpuTrain>(st, path, info, &device)?.cast(dtype);
    let n = x.dims()[0];
    let labels_view =
        st.tensor("labels").map_err(|_| ModelError::MissingTensor { path: path.into(), name: "labels".into() })?;
    let labels: Vec<i64> =
        labels_view.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect();
    if labels.len() != n || labels.iter().any(|&l| l < 0 || l >= info.num_classes as i64) {
        return Err(ModelError::Safetensors {
            path: path.into(),
            reason: format!("`labels` must hold {n} class indices below {}", info.num_classes),
        });
    }
    kinks::arm(KINK_RELATIVE_TOL, flips);
    let logits = model.forward(x);
    let recording = kinks::disarm();
    let loss = cross_entropy(logits.clone(), &labels, &device);
    let want_logits = read_tensor(st, path, "logits_train", &[n, info.num_classes as usize])?;
    let want_loss = read_tensor(st, path, "loss_train", &[1])?;
    let logits_err = rel_error(&to_vec(logits), &want_logits);
    let loss_err = rel_error(&to_vec(loss.clone()), &want_loss);
    let grads = loss.backward();
    let flowing: Vec<Vec<f32>> = recording
        .probes
        .iter()
        .map(|p| p.downcast_ref::<Tensor<CpuTrain, 4>>().and_then(|t| t.grad(&grads)).map(to_vec).unwrap_or_default())
        .collect();
    // Distance to the kink in units of the gradient that would switch: the closest, most
    // consequential ties first.
    let near_kinks: Vec<(KinkSite, f64)> = recording
        .near
        .iter()
        .map(|&((call, i), distance)| {
            let g = flowing.get(call).and_then(|g| g.get(i)).map_or(0.0, |g| g.abs() as f64);
            ((call, i), distance / g.max(1e-30))
        })
        .filter(|&(_, d)| d.is_finite())
        .collect();
    let mut pairs: Vec<(String, Option<Vec<f32>>, Vec<f32>)> = Vec::new();
    let mut result = Ok(());
    weights::visit_mut(&mut model, &mut |name, slot| {
        let got = match &slot {
            Slot::P4(p) => p.grad(&grads).map(to_vec),
            Slot::P2(p) => p.grad(&grads).map(to_vec),
            Slot::P1(p) => p.grad(&grads).map(to_vec),
            Slot::Running(_) => return,
        };
        match read_tensor(st, path, &format!("grad.{name}"), &slot.shape()) {
            Ok(want) => pairs.push((name.to_string(), got, want)),
            Err(e) => result = Err(e),
        }
    });
    result?;
    let by_name: HashMap<&str, f64> = pairs.iter().map(|(n, _, w)| (n.as_str(), max_abs(w))).collect();
    let mut worst = (String::new(), 0.0);
    let mut total = 0.0;
    let mut worst64: Option<(String, f64)> = None;
    let mut grads_at_noise_floor = 0;
    for (name, got, want) in &pairs {
        let (scale, at_noise) = grad_scale(name, want, &by_name);
        let err = got.as_ref().map(|g| rel_error_floored(g, want, scale)).unwrap_or(f64::INFINITY);
        grads_at_noise_floor += usize::from(at_noise);
        total += err;
        let exact = read_tensor(st, path, &format!("grad64.{name}"), &shape_of(st, &format!("grad.{name}")));
        if let (Some(g), Ok(exact)) = (got.as_ref(), exact) {
            let err64 = rel_error_floored(g, &exact, scale);
            if worst64.as_ref().is_none_or(|w| err64 >= w.1) {
                worst64 = Some((name.clone(), err64));
            }
        }
        if err >= worst.1 {
            worst = (name.clone(), err);
        }
    }
    Ok(TrainPass {
        logits_err,
        loss_err,
        worst,
        worst64,
        total,
        grads_checked: pairs.len(),
        grads_at_noise_floor,
        near_kinks,
    })
}

fn shape_of(st: &SafeTensors<'_>, name: &str) -> Vec<usize> {
    st.tensor(name).map(|v| v.shape().to_vec()).unwrap_or_default()
}
