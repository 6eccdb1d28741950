//! `--resume` exactness: 2 epochs straight and 1 epoch + resume 1 epoch give the same weights
//! bit for bit (raw and EMA), with SGD (momentum buffers) and RMSProp (square and momentum
//! buffers), dropout on.

use mnas_data::{open, DataSpec, Splits};
use mnas_model::backend::CpuTrain;
use mnas_model::train::TrainConfig;
use mnas_space::parse_block_list;

fn small_data() -> Splits {
    let mut s = open(&DataSpec::embedded()).expect("embedded data");
    // Every 16th image: all classes (the sets are stored class by class), 8 steps of 32.
    let idx: Vec<usize> = (0..s.train.len()).step_by(16).collect();
    s.train = s.train.subset(&idx);
    s.val = s.val.subset(&(0..s.val.len()).step_by(2).collect::<Vec<_>>());
    s
}

/// Keeps the last checkpoint a run hands out.
#[derive(Default)]
struct Keep {
    raw: Option<mnas_model::MnasNet<mnas_model::backend::Cpu>>,
    ema: Option<mnas_model::MnasNet<mnas_model::backend::Cpu>>,
    optimizer: Vec<u8>,
    epochs_done: usize,
}

impl mnas_model::train::TrainObserver<mnas_model::backend::Cpu> for Keep {
    fn on_checkpoint(&mut self, c: &mnas_model::train::Checkpoint<'_, mnas_model::backend::Cpu>) {
        self.raw = Some(c.model.clone());
        self.ema = c.ema.cloned();
        self.optimizer = c.optimizer.to_vec();
        self.epochs_done = c.epochs_done;
    }
}

fn tensors(m: &mnas_model::MnasNet<mnas_model::backend::Cpu>) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    mnas_model::weights::visit(m, |name, slot| out.push((name.to_string(), slot.to_vec())));
    out
}

/// Copies a model's tensors into a freshly built autodiff model (what `--resume` does from disk).
fn to_train(
    arch: &mnas_space::Arch,
    m: &mnas_model::MnasNet<mnas_model::backend::Cpu>,
) -> mnas_model::MnasNet<CpuTrain> {
    let dir = std::env::temp_dir().join(format!("mnas-resume-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.safetensors", arch.stem_channels));
    mnas_model::weights::save(m, &path).unwrap();
    let mut fresh = mnas_model::MnasNet::<CpuTrain>::new(arch, &Default::default()).unwrap();
    mnas_model::weights::load(&mut fresh, &path, &Default::default()).unwrap();
    fresh
}

fn resume_matches_straight_run(cfg: TrainConfig) {
    use mnas_model::train::{train_from, Resume};
    let data = small_data();
    let mut arch =
        parse_block_list("stem8 ds_r1_k3_s1_c8 ir_r1_k3_s2_e3_c16_se0.25 ir_r1_k5_s2_e3_c24 head32").unwrap();
    arch.dropout = 0.2;
    let dev = Default::default();
    let mut straight = Keep::default();
    train_from::<CpuTrain>(&arch, &data, &cfg, &dev, None, &mut straight).unwrap();
    assert_eq!(straight.epochs_done, 2);

    let mut first = Keep::default();
    // The 2-epoch config (same schedule), keeping only the checkpoint after epoch 1.
    let mut stop_after_one = StopAfter { inner: &mut first, epochs: 1 };
    let r = train_from::<CpuTrain>(&arch, &data, &cfg, &dev, None, &mut stop_after_one);
    assert!(r.is_ok());
    let mut arch_built = arch.clone();
    arch_built.num_classes = 10;
    arch_built.resolution = 32;
    let resume = Resume {
        model: to_train(&arch_built, first.raw.as_ref().unwrap()),
        ema: first.ema.clone(),
        optimizer: Some(first.optimizer.clone()),
        first_epoch: 1,
    };
    let mut second = Keep::default();
    train_from::<CpuTrain>(&arch, &data, &cfg, &dev, Some(resume), &mut second).unwrap();
    assert_eq!(second.epochs_done, 2);

    let (a, b) = (tensors(straight.raw.as_ref().unwrap()), tensors(second.raw.as_ref().unwrap()));
    let mut differing = 0;
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        if x != y {
            differing += 1;
            let d = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
            println!("{name}: max |diff| {d:e}");
        }
    }
    assert_eq!(differing, 0, "{differing} of {} tensors differ after resume", a.len());
    if cfg.ema_decay.is_some() {
        assert_eq!(tensors(straight.ema.as_ref().unwrap()), tensors(second.ema.as_ref().unwrap()));
        assert_ne!(tensors(second.ema.as_ref().unwrap()), b, "the EMA should differ from the raw weights");
    }
}

/// Passes events through until `epochs` epochs are checkpointed, then stops recording (the run
/// goes on, but only the first checkpoint is kept: it equals a run killed after that epoch).
struct StopAfter<'a> {
    inner: &'a mut Keep,
    epochs: usize,
}

impl mnas_model::train::TrainObserver<mnas_model::backend::Cpu> for StopAfter<'_> {
    fn on_checkpoint(&mut self, c: &mnas_model::train::Checkpoint<'_, mnas_model::backend::Cpu>) {
        if c.epochs_done <= self.epochs {
            self.inner.on_checkpoint(c);
        }
    }
}

/// One test for both optimizers, run one after the other: flex's random stream (dropout) is
/// process-wide, so a concurrent test would draw from it between the runs compared here.
#[test]
fn resume_continues_bit_for_bit() {
    resume_matches_straight_run(TrainConfig {
        epochs: 2,
        batch_size: 32,
        lr: 0.05,
        warmup_epochs: 0.3,
        ..TrainConfig::proxy()
    });
    let cfg = TrainConfig { seed: 3, ..TrainConfig::full(2, 32) };
    assert_eq!(cfg.ema_decay, Some(0.9999));
    resume_matches_straight_run(cfg);
}
