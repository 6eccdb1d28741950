use mnas_engine::buf::Buf;
use mnas_engine::kernels::bn::Act;
use mnas_engine::kernels::pointwise::PackedPointwise;
use std::time::Instant;
fn main() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    pool.install(|| {
        // (pixels, k, n, ORT µs)
        for &(m, k, n, ort) in &[
            (12544usize, 32usize, 16usize, 121), (12544, 16, 96, 296), (3136, 96, 24, 131), (3136, 24, 144, 195), (3136, 144, 24, 190),
            (3136, 24, 72, 109), (784, 72, 40, 41), (784, 40, 120, 64), (784, 120, 40, 63), (784, 40, 240, 115), (196, 240, 80, 50),
            (196, 80, 480, 97), (196, 480, 80, 97), (196, 480, 112, 131), (196, 112, 672, 185), (196, 672, 112, 184),
            (49, 672, 160, 79), (49, 160, 960, 109), (49, 960, 160, 114), (49, 960, 320, 215), (49, 320, 1280, 293),
        ] {
            let x = Buf::from_slice(&(0..m * k).map(|i| (i % 97) as f32 / 97.0).collect::<Vec<f32>>());
            let w: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 / 13.0).collect();
            let pk = PackedPointwise::pack(&w, &vec![0.1; n], k, n).unwrap();
            let mut y = Buf::zeros(m * n);
            for _ in 0..50 { pk.forward(&x, Act::Relu, &mut y); }
            let reps = 300;
            let mut ts = Vec::new();
            for _ in 0..reps { let t = Instant::now(); pk.forward(&x, Act::Relu, &mut y); ts.push(t.elapsed().as_secs_f64()); }
            ts.sort_by(f64::total_cmp);
            let dt = ts[reps / 2];
            println!("m {m:5} k {k:4} n {n:4}: {:6.1} us (ORT {ort:4} us, {:.2}x) {:.1} GMAC/s", dt * 1e6, dt * 1e6 / ort as f64, (m * k * n) as f64 / dt / 1e9);
        }
    });
}
