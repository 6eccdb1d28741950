//! A whole training step with the hand-written CPU kernels against the same step through burn's
//! generic ops: logits, loss, every parameter gradient and the BN running statistics.
//! One test in its own binary: it flips the process-wide `cpu_ops::set_enabled` switch.

use mnas_data::{batches, open, Augment, DataSpec};
use mnas_model::backend::CpuTrain;
use mnas_model::burn::tensor::{Tensor, TensorData};
use mnas_model::train::smoothed_cross_entropy;
use mnas_model::weights::{visit, Slot};
use mnas_model::{cpu_ops, MnasNet};
use mnas_space::parse_block_list;

type B = CpuTrain;

struct Step {
    logits: Vec<f32>,
    loss: f32,
    grads: Vec<(String, Vec<f32>)>,
    running: Vec<(String, Vec<f32>)>,
}

fn step(model: &MnasNet<B>, x: Tensor<B, 4>, labels: &[i64]) -> Step {
    let logits = model.forward(x);
    let loss = smoothed_cross_entropy(logits.clone(), labels, 0.1, &Default::default());
    let g = loss.clone().backward();
    let (mut grads, mut running) = (Vec::new(), Vec::new());
    visit(model, |name, slot| {
        let grad = match &slot {
            Slot::P4(p) => p.val().grad(&g).map(|t| t.into_data()),
            Slot::P2(p) => p.val().grad(&g).map(|t| t.into_data()),
            Slot::P1(p) => p.val().grad(&g).map(|t| t.into_data()),
            Slot::Running(_) => {
                running.push((name.to_string(), slot.to_vec()));
                return;
            }
        };
        let grad = grad.unwrap_or_else(|| panic!("{name} has no gradient"));
        grads.push((name.to_string(), grad.convert::<f32>().to_vec::<f32>().unwrap()));
    });
    Step { logits: logits.into_data().convert::<f32>().to_vec().unwrap(), loss: loss.into_scalar(), grads, running }
}

fn rel(a: &[f32], b: &[f32]) -> f64 {
    let m = b.iter().fold(0f64, |m, x| m.max(x.abs() as f64)).max(1e-12);
    a.iter().zip(b).fold(0f64, |e, (x, y)| e.max((x - y).abs() as f64)) / m
}

#[test]
fn training_step_with_cpu_kernels_matches_generic_ops() {
    let data = open(&DataSpec::embedded()).expect("embedded data");
    // 30 test images: fixed whatever the train/held-out split (see burn_parity.rs in mnas-engine
    // on batches where own kernels and generic ops drift apart in the backward pass).
    let idx: Vec<usize> = (0..30).map(|i| i * 33).collect();
    let set = data.test.subset(&idx);
    let batch = batches(&set, idx.len(), data.norm, Augment::None, None, false).next().expect("one batch");
    let n = batch.len();
    // Every layer kind: plain conv, sepconv with SE, mbconv k3/k5 stride 1/2, identity and pooling
    // skips with a projection, maps down to 2x2.
    let arch = parse_block_list(
        "stem16 cn_r1_k3_s1_c16 ds_r1_k3_s1_c16_se0.25 ir_r2_k5_s2_e3_c24 ir_r2_k3_s2_e6_c40_se0.25_pool \
         ir_r1_k5_s2_e6_c48 head64",
    )
    .unwrap();
    let mut arch = arch;
    arch.num_classes = 10;
    arch.resolution = 32;
    arch.dropout = 0.0;
    let dev = Default::default();
    // Two identical models: the running statistics are shared state that a step updates.
    let fresh = || MnasNet::<B>::seeded(&arch, &dev, 7).unwrap();
    let x = || Tensor::<B, 4>::from_data(TensorData::new(batch.images.clone(), [n, 3, 32, 32]), &dev);

    cpu_ops::set_enabled(true);
    let fast = step(&fresh(), x(), &batch.labels);
    cpu_ops::set_enabled(false);
    let generic = step(&fresh(), x(), &batch.labels);
    cpu_ops::set_enabled(true);

    let el = rel(&fast.logits, &generic.logits);
    println!("n={n} logits {el:.1e} loss {} vs {}", fast.loss, generic.loss);
    assert!(el < 1e-4, "logits differ by {el:e}");
    assert!((fast.loss - generic.loss).abs() < 1e-5 * generic.loss.abs().max(1.0));
    // L2 error relative to the tensor's norm, floored at 1e-3 of the largest norm: a BN bias in
    // front of a linear conv and another BN (and, at init, the gamma of a BN followed by a linear
    // op and another BN) has an exactly-zero true gradient, where both paths return rounding noise.
    // L2 rather than max: a single ReLU whose input sits within rounding of 0 may flip.
    let norm = |v: &[f32]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let floor = 1e-3 * generic.grads.iter().map(|(_, g)| norm(g)).fold(0f64, f64::max);
    let mut worst = (0f64, String::new());
    for ((name, a), (_, b)) in fast.grads.iter().zip(&generic.grads) {
        let diff: Vec<f32> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        let e = norm(&diff) / norm(b).max(floor);
        if e > worst.0 {
            worst = (e, name.clone());
        }
    }
    println!("{} gradients, worst {:.1e} ({})", fast.grads.len(), worst.0, worst.1);
    assert!(worst.0 < 1e-3, "gradient {} differs by {:e}", worst.1, worst.0);
    assert_eq!(fast.running.len(), generic.running.len());
    for ((name, a), (_, b)) in fast.running.iter().zip(&generic.running) {
        assert!(rel(a, b) < 1e-5, "running stat {name} differs by {:e}", rel(a, b));
    }
}
