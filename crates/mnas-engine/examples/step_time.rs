//! Times a train step of net T (`mnas bench train`'s network) on the engine.
use std::time::Instant;

use mnas_engine::loss::cross_entropy;
use mnas_engine::{Net, NetOptions};

fn main() {
    let threads: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    mnas_engine::set_threads(threads);
    let mut arch =
        mnas_space::parse_block_list("stem16 ir_r1_k3_s2_e6_c24 ir_r1_k5_s2_e6_c40_se0.25 ir_r1_k3_s2_e6_c80 head320")
            .expect("valid");
    arch.num_classes = 10;
    arch.dropout = 0.0;
    let mut net = Net::new(&arch, NetOptions { stem_stride: 1, ..NetOptions::default() }, 0).expect("valid");
    println!("params {}", net.params.trainable());
    let n = 64;
    let x: Vec<f32> = (0..n * 32 * 32 * 3).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i * 7 % 10).collect();
    let mut times = Vec::new();
    for i in 0..23 {
        let t = Instant::now();
        let (logits, tape) = net.forward_train(&x, n, 32, 0).expect("valid");
        let out = cross_entropy(&logits, &labels, 10, 0.0);
        let grads = net.backward(tape, &out.dlogits);
        for (w, g) in net.params.values.iter_mut().zip(&grads) {
            *w -= 0.01 * g;
        }
        if i >= 3 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    println!("threads {threads}: median {:.1} ms, min {:.1} ms", times[times.len() / 2], times[0]);
}
