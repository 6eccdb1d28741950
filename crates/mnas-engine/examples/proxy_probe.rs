//! One proxy run on real data: `proxy_probe DATA IMAGES EPOCHS WIDTH STEM_STRIDE LR [ARCH_SEED]`.
use std::time::Instant;

use mnas_data::{open, DataSpec, Source};
use mnas_engine::train::{train, Decay, Optimizer, SgdRecipe};
use mnas_engine::{Net, NetOptions};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| a.get(i).cloned().unwrap_or_else(|| d.to_string());
    let t0 = Instant::now();
    let spec = DataSpec { source: Source::Path(arg(1, "").into()), resolution: None, val_fraction: 0.1, split_seed: 0 };
    let mut data = open(&spec).expect("data");
    let images: usize = arg(2, "5000").parse().unwrap();
    let idx: Vec<usize> = (0..data.train.len()).step_by((data.train.len() / images).max(1)).take(images).collect();
    data.train = data.train.subset(&idx);
    let vidx: Vec<usize> = (0..data.val.len()).step_by((data.val.len() / 2000).max(1)).take(2000).collect();
    data.val = data.val.subset(&vidx);
    eprintln!("data {:.1}s: {} train {} val", t0.elapsed().as_secs_f64(), data.train.len(), data.val.len());
    let space = mnas_space::SearchSpace::default();
    let which = arg(7, "1");
    let mut arch = match which.parse::<u64>() {
        Ok(seed) => space.sample(seed, 1).pop().unwrap().1,
        Err(_) => mnas_space::lookup(&which).unwrap(),
    };
    arch.num_classes = 10;
    arch.dropout = 0.0;
    arch.width = arg(4, "0.5").parse().unwrap();
    let options =
        NetOptions { stem_stride: arg(5, "1").parse().unwrap(), classifier_init: Some(0.0), ..NetOptions::default() };
    let mut net = Net::new(&arch, options, 0).unwrap();
    let recipe = SgdRecipe {
        optimizer: if arg(9, "sgd") == "adamw" { Optimizer::AdamW } else { Optimizer::Sgd },
        epochs: arg(3, "1").parse().unwrap(),
        batch_size: arg(8, "64").parse().unwrap(),
        lr: arg(6, "0.1").parse().unwrap(),
        warmup: 0.05,
        decay: Decay::Linear,
        momentum: 0.9,
        weight_decay: 5e-5,
        label_smoothing: 0.1,
        augment: true,
        seed: 0,
    };
    let r = train(&mut net, &data.train, &data.val, data.norm, &recipe, &mut |_| true).unwrap();
    println!("{} params {} | {:?}", arch.canonical(), net.params.trainable(), r);
}
