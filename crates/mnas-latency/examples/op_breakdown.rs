//! Where inference time goes, op by op: the same burn calls the inference form runs (biased conv
//! after BN folding, ReLU, SE as mean + two dense layers + sigmoid + multiply, residual add,
//! pool + classifier), each timed alone with a sync after it, on one pinned core. Categories
//! match `bench/reference/ort_a1.py`'s split of an ONNX Runtime profile, so the two engines can be
//! compared op type by op type.
//!
//! cargo run --release -p mnas-latency --example op_breakdown -- mnasnet-a1 224 30

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use mnas_latency::pin::{allowed_cores, pin_current_thread};
use mnas_latency::stats::Stats;
use mnas_model::backend::Cpu;
use mnas_model::burn::tensor::activation::{relu, sigmoid};
use mnas_model::burn::tensor::backend::Backend;
use mnas_model::burn::tensor::module::{avg_pool2d, conv2d};
use mnas_model::burn::tensor::ops::ConvOptions;
use mnas_model::burn::tensor::{Distribution, Tensor};
use mnas_space::{ConvOp, Residual};

type T4 = Tensor<Cpu, 4>;
/// A conv weight and its (folded) bias.
type Weights = (T4, Tensor<Cpu, 1>);
/// A dense weight [in, out] and its bias [1, out].
type Dense = (Tensor<Cpu, 2>, Tensor<Cpu, 2>);

struct Timer {
    device: mnas_model::burn::tensor::Device<Cpu>,
    /// (stage, op, category) -> samples in ms
    samples: BTreeMap<(usize, String, &'static str), Vec<f64>>,
    order: usize,
}

impl Timer {
    fn time<R>(&mut self, op: String, category: &'static str, f: impl FnOnce() -> R) -> R {
        let start = Instant::now();
        let out = f();
        Cpu::sync(&self.device).expect("sync");
        let ms = start.elapsed().as_secs_f64() * 1e3;
        self.samples.entry((self.order, op, category)).or_default().push(ms);
        self.order += 1;
        out
    }
}

fn rand4(shape: [usize; 4], device: &mnas_model::burn::tensor::Device<Cpu>) -> T4 {
    Tensor::random(shape, Distribution::Normal(0.0, 0.1), device)
}

/// A biased conv (BN folded) + optional ReLU, as one timed op.
fn conv(t: &mut Timer, name: String, cat: &'static str, x: T4, wb: &Weights, o: &ConvOptions<2>, act: bool) -> T4 {
    t.time(name, cat, || {
        let y = conv2d(x, wb.0.clone(), Some(wb.1.clone()), o.clone());
        if act {
            relu(y)
        } else {
            y
        }
    })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map_or("mnasnet-a1", |s| s.as_str());
    let resolution: u32 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(224);
    let runs: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(30);
    let mut arch = mnas_space::lookup(name).expect("a zoo model name");
    arch.resolution = resolution;
    let core = *allowed_cores().expect("affinity").last().expect("a core");
    // One engine thread on one pinned core, as `mnas latency --threads 1`.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool");
    pool.broadcast(|_| pin_current_thread(core).expect("pin"));
    let result = pool.install(|| run(&arch, runs));
    let total: f64 = result.iter().map(|r| r.3).sum();
    let mut by_cat: BTreeMap<&str, f64> = BTreeMap::new();
    for r in &result {
        *by_cat.entry(r.2).or_default() += r.3;
    }
    println!("# {name} at {resolution}, 1 thread on core {core}, {runs} runs, op medians");
    for (cat, ms) in &by_cat {
        println!("CAT {cat} {ms:.3} ms {:.1}%", 100.0 * ms / total);
    }
    println!("TOTAL {total:.3} ms (sum of op medians)");
    let mut sorted = result.clone();
    sorted.sort_by(|a, b| b.3.total_cmp(&a.3));
    for (_, op, cat, ms) in sorted.iter().take(15) {
        println!("TOP {op} {cat} {ms:.3} ms");
    }
}

type Row = (usize, String, &'static str, f64);

fn run(arch: &mnas_space::Arch, runs: usize) -> Vec<Row> {
    let device = Default::default();
    let r = arch.resolution as usize;
    let stem = arch.stem_out() as usize;
    let opts = |k: usize, s: usize, g: usize| ConvOptions::new([s, s], [k / 2, k / 2], [1, 1], g);
    // Weights per layer, built once.
    struct L {
        spec: mnas_space::Layer,
        exp: Option<Weights>,
        dw: Weights,
        se: Option<(Dense, Dense)>,
        proj: Option<Weights>,
        skip: Option<Weights>,
    }
    let bias = |n: usize| Tensor::<Cpu, 1>::zeros([n], &device);
    let layers: Vec<L> = arch
        .layers()
        .into_iter()
        .map(|l| {
            let (cin, mid, cout, k) =
                (l.in_channels as usize, l.mid_channels as usize, l.out_channels as usize, l.kernel as usize);
            let dw = match l.op {
                ConvOp::Conv => (rand4([cout, cin, k, k], &device), bias(cout)),
                _ => (rand4([mid, 1, k, k], &device), bias(mid)),
            };
            let se = (l.se_channels > 0).then(|| {
                let s = l.se_channels as usize;
                let d2 = |a: usize, b: usize| Tensor::<Cpu, 2>::random([a, b], Distribution::Normal(0.0, 0.1), &device);
                ((d2(mid, s), d2(1, s)), (d2(s, mid), d2(1, mid)))
            });
            L {
                exp: l.has_expansion().then(|| (rand4([mid, cin, 1, 1], &device), bias(mid))),
                dw,
                se,
                proj: (l.op != ConvOp::Conv).then(|| (rand4([cout, mid, 1, 1], &device), bias(cout))),
                skip: matches!(l.residual, Residual::Pool { project: true, .. })
                    .then(|| (rand4([cout, cin, 1, 1], &device), bias(cout))),
                spec: l,
            }
        })
        .collect();
    let stem_w = (rand4([stem, 3, 3, 3], &device), bias(stem));
    let head_in = arch.head_in() as usize;
    let head = arch.head_channels as usize;
    let head_w = (rand4([head, head_in, 1, 1], &device), bias(head));
    let classes = arch.num_classes as usize;
    let fc = (
        Tensor::<Cpu, 2>::random([head, classes], Distribution::Normal(0.0, 0.1), &device),
        Tensor::<Cpu, 2>::zeros([1, classes], &device),
    );
    let input = rand4([1, 3, r, r], &device);

    let mut t = Timer { device, samples: BTreeMap::new(), order: 0 };
    for run in 0..runs + 5 {
        if run == 5 {
            t.samples.clear(); // the first passes warm up
        }
        t.order = 0;
        let mut y = conv(&mut t, "stem".into(), "stem (full conv)", input.clone(), &stem_w, &opts(3, 2, 1), true);
        for l in &layers {
            let s = &l.spec;
            let p = format!("blocks.{}.{}", s.block, s.index);
            let x = y.clone();
            if let Some(wb) = &l.exp {
                y = conv(&mut t, format!("{p}.conv_pw"), "pointwise", y, wb, &opts(1, 1, 1), true);
            }
            let (k, st) = (s.kernel as usize, s.stride as usize);
            y = match s.op {
                ConvOp::Conv => conv(&mut t, format!("{p}.conv"), "full conv", y, &l.dw, &opts(k, st, 1), true),
                _ => {
                    let g = s.mid_channels as usize;
                    conv(&mut t, format!("{p}.conv_dw"), "depthwise", y, &l.dw, &opts(k, st, g), true)
                }
            };
            if let Some(((w1, b1), (w2, b2))) = &l.se {
                y = t.time(format!("{p}.se"), "SE", || {
                    let [n, c, h, w] = y.dims();
                    let pooled: Tensor<Cpu, 2> = y.clone().reshape([n, c, h * w]).mean_dim(2).reshape([n, c]);
                    let gate = sigmoid(relu(pooled.matmul(w1.clone()) + b1.clone()).matmul(w2.clone()) + b2.clone());
                    y * gate.reshape([n, c, 1, 1])
                });
            }
            if let Some(wb) = &l.proj {
                y = conv(&mut t, format!("{p}.conv_pwl"), "pointwise", y, wb, &opts(1, 1, 1), false);
            }
            match s.residual {
                Residual::None => {}
                Residual::Identity => y = t.time(format!("{p}.add"), "residual add", || y + x),
                Residual::Pool { stride, .. } => {
                    let st = stride as usize;
                    let skip = t.time(format!("{p}.skip.pool"), "residual add", || {
                        avg_pool2d(x, [st, st], [st, st], [0, 0], false, true)
                    });
                    let skip = match &l.skip {
                        Some(wb) => conv(&mut t, format!("{p}.skip"), "pointwise", skip, wb, &opts(1, 1, 1), false),
                        None => skip,
                    };
                    y = t.time(format!("{p}.add"), "residual add", || y + skip);
                }
            }
        }
        let h = conv(&mut t, "head".into(), "pointwise", y, &head_w, &opts(1, 1, 1), true);
        let logits = t.time("pool+classifier".into(), "pool + classifier", || {
            let [n, c, hh, ww] = h.dims();
            let f: Tensor<Cpu, 2> = h.reshape([n, c, hh * ww]).mean_dim(2).reshape([n, c]);
            f.matmul(fc.0.clone()) + fc.1.clone()
        });
        black_box(logits);
    }
    t.samples
        .into_iter()
        .map(|((order, op, cat), s)| (order, op, cat, Stats::of(&s).map_or(f64::NAN, |s| s.median_ms)))
        .collect()
}
