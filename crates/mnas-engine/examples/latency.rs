//! Batch-1 latency of a zoo model on the engine's inference form: `latency [MODEL] [RES] [RUNS]`.
//! Run it pinned (`taskset -c 1`) with `RAYON_NUM_THREADS=1` beside ORT for a comparison.
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let model = a.get(1).map(String::as_str).unwrap_or("mnasnet-a1");
    let res: u32 = a.get(2).and_then(|s| s.parse().ok()).unwrap_or(224);
    let runs: usize = a.get(3).and_then(|s| s.parse().ok()).unwrap_or(30);
    let mut arch = mnas_space::lookup(model).expect("zoo model");
    arch.resolution = res;
    let net = mnas_engine::Folded::random(&arch, 0).expect("valid");
    let r = res as usize;
    let x: Vec<f32> = (0..r * r * 3).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
    for _ in 0..10 {
        net.forward(&x, 1, r).expect("valid");
    }
    let mut times = Vec::new();
    let mut stages: Vec<Vec<f64>> = vec![Vec::new(); net.stage_names().len()];
    for _ in 0..runs {
        let t = Instant::now();
        std::hint::black_box(net.forward(&x, 1, r).expect("valid"));
        times.push(t.elapsed().as_secs_f64() * 1e3);
        let (_, st) = net.forward_timed(&x, 1, r).expect("valid");
        for (s, d) in stages.iter_mut().zip(st) {
            s.push(d.as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "{model} @{res}: median {:.2} ms, min {:.2} ms ({} runs, {})",
        times[runs / 2],
        times[0],
        runs,
        mnas_engine::simd::level()
    );
    if a.iter().any(|s| s == "--stages") {
        for (name, mut s) in net.stage_names().into_iter().zip(stages) {
            s.sort_by(f64::total_cmp);
            println!("  {name:<12} {:7.3} ms", s[s.len() / 2]);
        }
    }
}
