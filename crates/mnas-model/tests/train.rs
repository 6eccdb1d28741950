//! Proxy training on real images learns, and a diverging run is a failed result, not a panic.

use mnas_data::{open, DataSpec, Splits};
use mnas_model::backend::CpuTrain;
use mnas_model::train::{train, Quiet, TrainConfig, TrainStatus};
use mnas_space::parse_block_list;

fn small_data() -> Splits {
    let mut s = open(&DataSpec::embedded()).expect("embedded data");
    // Every 4th image: the sets are stored class by class, so a prefix would hold few classes.
    let idx: Vec<usize> = (0..s.train.len()).step_by(4).collect();
    s.train = s.train.subset(&idx);
    s.val = s.val.subset(&(0..s.val.len()).step_by(2).collect::<Vec<_>>());
    s
}

#[test]
fn proxy_training_learns_on_real_images() {
    let data = small_data();
    let arch = parse_block_list("stem16 ds_r1_k3_s1_c16 ir_r1_k3_s2_e3_c24 ir_r1_k3_s2_e3_c32_se0.25 head128").unwrap();
    let cfg = TrainConfig { epochs: 4, batch_size: 32, lr: 0.05, warmup_epochs: 0.2, ..TrainConfig::proxy() };
    let out = train::<CpuTrain>(&arch, &data, &cfg, &Default::default(), None, 0, &mut Quiet).unwrap();
    assert_eq!(out.status, TrainStatus::Completed);
    let losses: Vec<f64> = out.history.iter().map(|m| m.train_loss).collect();
    println!("losses {losses:?} held-out top-1 {}", out.val_top1);
    assert!(losses[3] < losses[0] * 0.95, "loss did not fall: {losses:?}");
    assert!(out.val_top1 > 0.16, "held-out top-1 {} is near chance (0.10)", out.val_top1);
    assert!(out.val_top5 >= out.val_top1);
}

#[test]
fn diverging_run_is_reported_as_failed() {
    let data = small_data();
    let arch = parse_block_list("stem16 ds_r1_k3_s1_c16 ir_r1_k3_s2_e3_c24 head64").unwrap();
    let cfg = TrainConfig { epochs: 1, batch_size: 32, lr: 1e12, warmup_epochs: 0.0, ..TrainConfig::proxy() };
    let out = train::<CpuTrain>(&arch, &data, &cfg, &Default::default(), None, 0, &mut Quiet).unwrap();
    match out.status {
        TrainStatus::Failed { reason } => assert!(reason.contains("loss became"), "{reason}"),
        other => panic!("expected a failed run, got {other:?}"),
    }
    assert_eq!(out.val_top1, 0.0);
}

#[test]
fn bad_training_config_is_an_error() {
    let data = small_data();
    let arch = parse_block_list("ds_r1_k3_s1_c16").unwrap();
    for cfg in [
        TrainConfig { epochs: 0, ..TrainConfig::proxy() },
        TrainConfig { batch_size: 0, ..TrainConfig::proxy() },
        TrainConfig { lr: -1.0, ..TrainConfig::proxy() },
    ] {
        assert!(train::<CpuTrain>(&arch, &data, &cfg, &Default::default(), None, 0, &mut Quiet).is_err());
    }
}
