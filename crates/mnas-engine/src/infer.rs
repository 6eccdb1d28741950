//! The inference form of a network on the engine: every conv + BN pair folded into one biased
//! convolution with its activation fused, no tape, no dropout. This is what latency is measured
//! on (batch 1 at the deployment resolution), so it is what a deployment runs.

use std::time::{Duration, Instant};

use rayon::prelude::*;

use mnas_space::naming::layer_prefix;
use mnas_space::{Activation, Arch, Layer};

use crate::awake::with_pool_awake;
use crate::buf::Buf;
use crate::error::EngineError;
use crate::kernels::bn::Act;
use crate::kernels::conv::{self, Conv};
use crate::kernels::depthwise::{self, Dw};
use crate::kernels::fused;
use crate::kernels::pointwise::PackedPointwise;
use crate::kernels::pool;
use crate::kernels::se::{self, SeWeights};
use crate::mat::{par_gemm, View};
use crate::net::{units_of, ConvKind, LayerUnits, Net, NetOptions, SeUnit, Shortcut, Unit};
use crate::params::{Params, ParamsBuilder};
use crate::simd::add_to;

/// The kinds of work an inference pass does, for an op breakdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// The stem convolution (3x3, 3 input channels).
    Stem,
    /// 1x1 convolutions: MBConv expansion and projection, the head, the pooling skip's projection.
    Pointwise,
    /// kxk depthwise convolutions.
    Depthwise,
    /// An MBConv expansion and its depthwise convolution run row by row together (AVX-512), and
    /// in layers without an SE the projection with them.
    ExpandDepthwise,
    /// kxk regular convolutions of `cn` layers.
    Conv,
    SqueezeExcite,
    /// Residual sums and the pooling skip's average pool.
    Shortcut,
    /// Global pool and classifier.
    Classifier,
}

impl OpKind {
    pub const ALL: [OpKind; 8] = [
        OpKind::Stem,
        OpKind::Pointwise,
        OpKind::Depthwise,
        OpKind::ExpandDepthwise,
        OpKind::Conv,
        OpKind::SqueezeExcite,
        OpKind::Shortcut,
        OpKind::Classifier,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Stem => "stem",
            OpKind::Pointwise => "pointwise",
            OpKind::Depthwise => "depthwise",
            OpKind::ExpandDepthwise => "fused MBConv",
            OpKind::Conv => "conv kxk",
            OpKind::SqueezeExcite => "SE",
            OpKind::Shortcut => "shortcut",
            OpKind::Classifier => "pool+classifier",
        }
    }
}

thread_local! {
    /// Time per op kind while [`Folded::forward_ops`] runs on this thread.
    static OP_TIMES: std::cell::RefCell<Option<[Duration; 8]>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f`, adding its time to `kind` when an op breakdown is being taken.
fn timed<T>(kind: OpKind, f: impl FnOnce() -> T) -> T {
    let on = OP_TIMES.with(|t| t.borrow().is_some());
    if !on {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let spent = start.elapsed();
    OP_TIMES.with(|t| {
        if let Some(times) = t.borrow_mut().as_mut() {
            times[OpKind::ALL.iter().position(|k| *k == kind).expect("listed")] += spent;
        }
    });
    out
}

/// A convolution with its BN folded in (always biased) and the activation after it.
#[derive(Debug, Clone)]
struct FoldedConv {
    kind: ConvKind,
    k: usize,
    stride: usize,
    cin: usize,
    cout: usize,
    /// On a 64-byte boundary, as the activations are: the depthwise kernel loads 16 lanes per tap.
    weight: Buf,
    bias: Vec<f32>,
    act: Act,
    /// A dense convolution's weights packed for the AVX-512 kernels, on CPUs that have them.
    packed: Option<PackedPointwise>,
}

impl FoldedConv {
    fn of(p: &Params, eps: f64, u: &Unit) -> FoldedConv {
        let c = u.cout;
        let affine = &p.values[u.affine.range()];
        let running = &p.state[u.running.range()];
        let (gamma, beta) = affine.split_at(c);
        let (mean, var) = running.split_at(c);
        let scale: Vec<f64> = (0..c).map(|i| gamma[i] as f64 / (var[i] as f64 + eps).sqrt()).collect();
        let bias: Vec<f32> = (0..c).map(|i| (beta[i] as f64 - mean[i] as f64 * scale[i]) as f32).collect();
        // Both layouts keep the output channel innermost: [..][cout] and [ky][kx][c].
        let weight = p.values[u.weight.range()]
            .chunks_exact(c)
            .flat_map(|row| row.iter().zip(&scale).map(|(w, s)| (*w as f64 * s) as f32))
            .collect::<Vec<f32>>();
        let weight = Buf::from_slice(&weight);
        // Kernels up to 7x7 (the space has 3 and 5) fit the packed kernel's runs.
        let packed = (u.kind == ConvKind::Dense && u.k <= 7)
            .then(|| PackedPointwise::pack(&weight, &bias, u.k * u.k * u.cin, c))
            .flatten();
        FoldedConv { kind: u.kind, k: u.k, stride: u.stride, cin: u.cin, cout: c, weight, bias, act: u.act, packed }
    }

    fn forward(&self, x: &[f32], n: usize, h: usize, w: usize) -> (Buf, usize, usize) {
        let kind = match self.kind {
            ConvKind::Depthwise => OpKind::Depthwise,
            ConvKind::Dense if self.k == 1 => OpKind::Pointwise,
            ConvKind::Dense if self.cin == 3 => OpKind::Stem,
            ConvKind::Dense => OpKind::Conv,
        };
        timed(kind, || self.forward_untimed(x, n, h, w))
    }

    fn forward_untimed(&self, x: &[f32], n: usize, h: usize, w: usize) -> (Buf, usize, usize) {
        match self.kind {
            ConvKind::Dense => {
                let g = Conv { n, h, w, cin: self.cin, cout: self.cout, k: self.k, stride: self.stride };
                let mut y = Buf::uninit(n * g.oh() * g.ow() * self.cout);
                match &self.packed {
                    Some(pk) if self.k == 1 && self.stride == 1 => pk.forward(x, self.act, &mut y),
                    Some(pk) => pk.forward_conv(x, &g, self.act, &mut y),
                    None => conv::forward_act_into(x, &self.weight, Some(&self.bias), self.act, &g, &mut y),
                }
                (y, g.oh(), g.ow())
            }
            ConvKind::Depthwise => {
                let g = Dw { n, h, w, c: self.cin, k: self.k, stride: self.stride };
                let mut y = Buf::uninit(n * g.oh() * g.ow() * self.cin);
                depthwise::forward_act_into(x, &self.weight, Some(&self.bias), self.act, &g, &mut y);
                (y, g.oh(), g.ow())
            }
        }
    }
}

#[derive(Debug, Clone)]
struct FoldedSe {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    c: usize,
    r: usize,
}

#[derive(Debug, Clone)]
enum FoldedShortcut {
    None,
    Identity,
    Pool { stride: usize, conv: Option<Box<FoldedConv>> },
}

/// One searched layer in inference form.
#[derive(Debug, Clone)]
pub struct FoldedLayer {
    name: String,
    expand: Option<FoldedConv>,
    main: FoldedConv,
    se: Option<FoldedSe>,
    project: Option<FoldedConv>,
    shortcut: FoldedShortcut,
    act: Act,
    cin: usize,
}

/// A whole network in inference form.
#[derive(Debug, Clone)]
pub struct Folded {
    arch: Arch,
    stem: FoldedConv,
    layers: Vec<FoldedLayer>,
    head: FoldedConv,
    classifier_w: Vec<f32>,
    classifier_b: Vec<f32>,
    head_c: usize,
    classes: usize,
}

fn se_of(p: &Params, s: &SeUnit) -> FoldedSe {
    let v = &p.values[s.slot.range()];
    let (w1, rest) = v.split_at(s.c * s.r);
    let (b1, rest) = rest.split_at(s.r);
    let (w2, b2) = rest.split_at(s.r * s.c);
    FoldedSe { w1: w1.to_vec(), b1: b1.to_vec(), w2: w2.to_vec(), b2: b2.to_vec(), c: s.c, r: s.r }
}

fn layer_of(p: &Params, eps: f64, l: &LayerUnits, name: String) -> FoldedLayer {
    let fold = |u: &Unit| FoldedConv::of(p, eps, u);
    FoldedLayer {
        name,
        expand: l.expand.as_ref().map(fold),
        main: fold(&l.main),
        se: l.se.as_ref().map(|s| se_of(p, s)),
        project: l.project.as_ref().map(fold),
        shortcut: match &l.shortcut {
            Shortcut::None => FoldedShortcut::None,
            Shortcut::Identity => FoldedShortcut::Identity,
            Shortcut::Pool { stride, project } => {
                FoldedShortcut::Pool { stride: *stride, conv: project.as_ref().map(|u| Box::new(fold(u))) }
            }
        },
        act: l.main.act,
        cin: l.main_in_channels(),
    }
}

/// `acc += a`, split over the threads for large maps (the residual add of a batch-1 model).
fn par_add_to(acc: &mut [f32], a: &[f32]) {
    if rayon::current_num_threads() == 1 || acc.len() < SPLIT_MIN_VALUES {
        return add_to(acc, a);
    }
    let chunk = acc.len().div_ceil(crate::kernels::tasks());
    acc.par_chunks_mut(chunk).zip(a.par_chunks(chunk)).for_each(|(acc, a)| add_to(acc, a));
}

/// Below this many values an SE (pooling, scaling) or a residual add runs on one thread: splitting a small map
/// costs more in fork/join than it saves.
const SPLIT_MIN_VALUES: usize = 48 * 1024;

/// `x * gate(x)` in place for one image of `hw` pixels. With several threads and a large map,
/// the pooling and the scaling are split by pixels (a batch-1 model has no other parallelism
/// here); the partial sums are added in a fixed order, so results do not depend on scheduling.
fn squeeze_excite(se: &FoldedSe, img: &mut [f32], hw: usize, act: Act) {
    let c = se.c;
    let parts =
        if rayon::current_num_threads() > 1 && img.len() >= SPLIT_MIN_VALUES { crate::kernels::tasks() } else { 1 };
    let chunk = hw.div_ceil(parts) * c;
    let sums: Vec<Vec<f32>> = img
        .par_chunks(chunk)
        .map(|part| {
            let mut sum = vec![0f32; c];
            for px in part.chunks_exact(c) {
                add_to(&mut sum, px);
            }
            sum
        })
        .collect();
    let mut pooled = vec![0f32; c];
    for sum in &sums {
        add_to(&mut pooled, sum);
    }
    pooled.iter_mut().for_each(|v| *v /= hw as f32);
    let weights = SeWeights { w1: &se.w1, b1: &se.b1, w2: &se.w2, b2: &se.b2, c, r: se.r, act };
    let (_, gate) = se::excite(&pooled, &weights);
    img.par_chunks_mut(chunk).for_each(|part| {
        for px in part.chunks_exact_mut(c) {
            crate::simd::mul_in_place(px, &gate);
        }
    });
}

impl FoldedLayer {
    /// `spec` alone with random weights (seeded) in inference form: a lookup table times the
    /// layers of the space one by one.
    pub fn random(spec: &Layer, act: Activation, seed: u64) -> FoldedLayer {
        let mut b = ParamsBuilder::new(seed);
        let units = units_of(&mut b, spec, Act::from(act));
        layer_of(&b.params, NetOptions::default().bn_eps, &units, layer_prefix(spec))
    }

    /// The layer's output for `n` NHWC inputs of `h x w` with its input channels.
    pub fn run(&self, x: &[f32], n: usize, h: usize, w: usize) -> Result<Vec<f32>, EngineError> {
        if x.len() != n * h * w * self.cin || n == 0 {
            return Err(EngineError::Input { got: x.len(), n, size: h });
        }
        Ok(self.forward(Buf::from_slice(x), n, h, w).0.into_vec())
    }

    /// [`FoldedLayer::run`] on a buffer it consumes, without copying input or output (a lookup
    /// table times layers with it as a network runs them).
    pub fn run_buf(&self, x: Buf, n: usize, h: usize, w: usize) -> Result<Buf, EngineError> {
        if x.len() != n * h * w * self.cin || n == 0 {
            return Err(EngineError::Input { got: x.len(), n, size: h });
        }
        Ok(self.forward(x, n, h, w).0)
    }

    fn forward(&self, x: Buf, n: usize, h: usize, w: usize) -> (Buf, usize, usize) {
        let (mut y, oh, ow, projected) = match self.fused(&x, n, h, w) {
            Some(done) => done,
            None => {
                let expanded = self.expand.as_ref().map(|c| c.forward(&x, n, h, w).0);
                let main_in: &[f32] = expanded.as_deref().unwrap_or(&x);
                let (y, oh, ow) = self.main.forward(main_in, n, h, w);
                (y, oh, ow, false)
            }
        };
        if let Some(se) = &self.se {
            let img = oh * ow * se.c;
            timed(OpKind::SqueezeExcite, || {
                for b in 0..n {
                    squeeze_excite(se, &mut y[b * img..(b + 1) * img], oh * ow, self.act);
                }
            });
        }
        let mut out = match &self.project {
            Some(c) if !projected => c.forward(&y, n, oh, ow).0,
            _ => y,
        };
        match &self.shortcut {
            FoldedShortcut::None => {}
            FoldedShortcut::Identity => timed(OpKind::Shortcut, || par_add_to(&mut out, &x)),
            FoldedShortcut::Pool { stride, conv } => {
                let pooled;
                let src: &[f32] = if *stride == 1 {
                    &x
                } else {
                    pooled = timed(OpKind::Shortcut, || pool::avg_pool(&x, n, h, w, self.cin, *stride));
                    &pooled
                };
                let (ph, pw) = (pool::pooled(h, *stride), pool::pooled(w, *stride));
                match conv {
                    Some(c) => {
                        let projected = c.forward(src, n, ph, pw).0;
                        timed(OpKind::Shortcut, || add_to(&mut out, &projected));
                    }
                    None => timed(OpKind::Shortcut, || add_to(&mut out, src)),
                }
            }
        }
        (out, oh, ow)
    }
}

/// Smallest map fused: below it the expanded tensor fits in cache anyway, and expanding a few
/// pixels per row at a time costs more than it saves.
const FUSE_MIN_PIXELS: usize = 28 * 28;

impl FoldedLayer {
    /// The expansion (if any), depthwise convolution and, without an SE between them, the
    /// projection run together row by row (see `kernels::fused`), where this CPU has the kernels
    /// and the layer two of them to fuse; the last field says whether the projection ran.
    fn fused(&self, x: &[f32], n: usize, h: usize, w: usize) -> Option<(Buf, usize, usize, bool)> {
        if self.main.kind != ConvKind::Depthwise || h * w < FUSE_MIN_PIXELS {
            return None;
        }
        fn packed_1x1(c: &FoldedConv) -> Option<&PackedPointwise> {
            (c.k == 1 && c.stride == 1).then_some(c.packed.as_ref()).flatten()
        }
        let expand = match &self.expand {
            Some(e) => Some((packed_1x1(e)?, e.act)),
            None => None,
        };
        let project = match (&self.se, &self.project) {
            (None, Some(p)) => packed_1x1(p).map(|pk| (pk, p.act)),
            _ => None,
        };
        if expand.is_none() && project.is_none() {
            return None;
        }
        let g = Dw { n, h, w, c: self.main.cin, k: self.main.k, stride: self.main.stride };
        let width = project.map_or(g.c, |(pk, _)| pk.outputs());
        let mut y = Buf::uninit(n * g.oh() * g.ow() * width);
        let m = &self.main;
        let done = timed(OpKind::ExpandDepthwise, || {
            fused::mbconv_into(x, self.cin, expand, &m.weight, &m.bias, m.act, &g, project, &mut y)
        });
        done.then_some((y, g.oh(), g.ow(), project.is_some()))
    }
}

impl Folded {
    /// The inference form of `net` (its BN running statistics folded into the convolutions).
    pub fn of(net: &Net) -> Folded {
        let (stem, layers, head, classifier) = net.parts();
        let (p, eps) = (&net.params, net.options.bn_eps);
        let names = net.arch.layers();
        let (cw, cb) = net.params.values[classifier.range()].split_at(head.cout * net.classes());
        Folded {
            arch: net.arch.clone(),
            stem: FoldedConv::of(p, eps, stem),
            layers: layers.iter().zip(&names).map(|(l, spec)| layer_of(p, eps, l, layer_prefix(spec))).collect(),
            head: FoldedConv::of(p, eps, head),
            classifier_w: cw.to_vec(),
            classifier_b: cb.to_vec(),
            head_c: head.cout,
            classes: net.classes(),
        }
    }

    /// A randomly initialised network of `arch` (seeded) in inference form: weights do not
    /// change latency.
    pub fn random(arch: &Arch, seed: u64) -> Result<Folded, EngineError> {
        Ok(Folded::of(&Net::new(arch, Default::default(), seed)?))
    }

    pub fn arch(&self) -> &Arch {
        &self.arch
    }

    /// Stage names in execution order, matching the rows of [`mnas_space::count`]: `stem`,
    /// `blocks.i.j`, `head`, `classifier`.
    pub fn stage_names(&self) -> Vec<String> {
        let mut names = vec!["stem".to_string()];
        names.extend(self.layers.iter().map(|l| l.name.clone()));
        names.extend(["head".to_string(), "classifier".to_string()]);
        names
    }

    /// Logits (`n x classes`) of `n` NHWC images `size x size x 3`.
    pub fn forward(&self, images: &[f32], n: usize, size: usize) -> Result<Vec<f32>, EngineError> {
        self.forward_observed(images, n, size, |_| {})
    }

    /// The forward pass with the wall time of each stage (see [`Folded::stage_names`]).
    pub fn forward_timed(
        &self,
        images: &[f32],
        n: usize,
        size: usize,
    ) -> Result<(Vec<f32>, Vec<Duration>), EngineError> {
        let mut times = Vec::with_capacity(self.layers.len() + 3);
        let mut start = Instant::now();
        let logits = self.forward_observed(images, n, size, |_| {
            times.push(start.elapsed());
            start = Instant::now();
        })?;
        Ok((logits, times))
    }

    /// The forward pass with the time of each op kind (see [`OpKind`]), on this thread.
    pub fn forward_ops(&self, images: &[f32], n: usize, size: usize) -> Result<Vec<(OpKind, Duration)>, EngineError> {
        OP_TIMES.with(|t| *t.borrow_mut() = Some([Duration::ZERO; 8]));
        let r = self.forward(images, n, size);
        let times = OP_TIMES.with(|t| t.borrow_mut().take()).unwrap_or_default();
        r.map(|_| OpKind::ALL.iter().copied().zip(times).collect())
    }

    fn forward_observed(
        &self,
        images: &[f32],
        n: usize,
        size: usize,
        after: impl FnMut(usize) + Send,
    ) -> Result<Vec<f32>, EngineError> {
        if images.len() != n * size * size * 3 || n == 0 || size == 0 {
            return Err(EngineError::Input { got: images.len(), n, size });
        }
        Ok(with_pool_awake(|| self.pass(images, n, size, after)))
    }

    fn pass(&self, images: &[f32], n: usize, size: usize, mut after: impl FnMut(usize)) -> Vec<f32> {
        let (mut x, mut h, mut w) = self.stem.forward(images, n, size, size);
        after(0);
        for (i, layer) in self.layers.iter().enumerate() {
            (x, h, w) = layer.forward(x, n, h, w);
            after(i + 1);
        }
        let (y, hh, hw) = self.head.forward(&x, n, h, w);
        after(self.layers.len() + 1);
        let logits = timed(OpKind::Classifier, || {
            let features = pool::global_mean(&y, n, hh * hw, self.head_c);
            let mut logits: Vec<f32> = (0..n).flat_map(|_| self.classifier_b.iter().copied()).collect();
            let wt = View::rows(&self.classifier_w, self.head_c, self.classes);
            let features = View::rows(&features, n, self.head_c);
            par_gemm(&mut logits, features, wt, true);
            logits
        });
        after(self.layers.len() + 2);
        logits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::values;

    #[test]
    fn folded_logits_match_eval_mode_for_every_layer_kind() {
        let mut arch = mnas_space::parse_block_list(
            "stem16 cn_r2_k3_s1_c16_se0.25 ds_r1_k3_s1_c16_se0.25 ir_r2_k5_s2_e3_c24 ir_r2_k3_s2_e6_c40_se0.25_pool \
             ir_r1_k5_s2_e1_c40_pool ir_r1_k3_s1_e6_c48_pool cn_r1_k5_s2_c56_pool head64",
        )
        .expect("valid");
        arch.num_classes = 10;
        for act in [mnas_space::Activation::Relu, mnas_space::Activation::Relu6] {
            arch.activation = act;
            let mut net = Net::new(&arch, NetOptions::default(), 3).expect("valid");
            // Non-trivial BN statistics and affine parameters, as a trained network has.
            for t in net.params.tensors.clone() {
                let v = values(t.slot.len, t.slot.offset as u64);
                if t.name.ends_with("running_var") {
                    net.params.state[t.slot.range()].iter_mut().zip(&v).for_each(|(s, r)| *s = 1.0 + 0.5 * r);
                } else if t.name.ends_with("running_mean") {
                    net.params.state[t.slot.range()].iter_mut().zip(&v).for_each(|(s, r)| *s = 0.3 * r);
                } else if t.role == crate::params::Role::Affine {
                    net.params.values[t.slot.range()].iter_mut().zip(&v).for_each(|(s, r)| *s += 0.3 * r);
                }
            }
            let (n, size) = (3, 37);
            let x = values(n * size * size * 3, 9);
            let want = net.forward_eval(&x, n, size).expect("valid");
            let folded = Folded::of(&net);
            let got = folded.forward(&x, n, size).expect("valid");
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
            assert!(err < 1e-5, "{act:?}: relative error {err:e}");
            let (timed, times) = folded.forward_timed(&x, n, size).expect("valid");
            assert_eq!(timed, got);
            assert_eq!(times.len(), folded.stage_names().len());
            let rows: Vec<String> = mnas_space::count(&arch).layers.into_iter().map(|l| l.name).collect();
            assert_eq!(folded.stage_names(), rows);
        }
    }

    /// Layers on maps of 32x32 and more, where (on AVX-512) the expansion, depthwise convolution
    /// and, without an SE, the projection run fused row by row (a separable convolution: the
    /// depthwise convolution and the projection): the logits of eval mode still.
    #[test]
    fn fused_layers_match_eval_mode() {
        let arch = mnas_space::parse_block_list(
            "stem16 ds_r1_k3_s1_c16 ir_r2_k3_s1_e6_c24 ir_r1_k5_s2_e3_c32_se0.25 ir_r1_k3_s2_e6_c40 head32",
        );
        let mut arch = arch.expect("valid");
        arch.num_classes = 10;
        let mut net = Net::new(&arch, NetOptions::default(), 5).expect("valid");
        let (n, size) = (2, 64);
        assert!((size / 2) * (size / 2) >= FUSE_MIN_PIXELS, "the first block's maps are fused");
        let x = values(n * size * size * 3, 9);
        let want = net.forward_eval(&x, n, size).expect("valid");
        let got = Folded::of(&net).forward(&x, n, size).expect("valid");
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(err < 1e-5, "relative error {err:e}");
    }

    /// Maps large enough that a batch-1 layer splits its SE, residual add and fused expansion
    /// over the threads: the same values as on one thread, whatever the scheduling.
    #[test]
    fn split_layers_match_one_thread() {
        let mut arch = mnas_space::parse_block_list("stem16 ir_r2_k5_s1_e6_c24_se0.25 head32").expect("valid");
        arch.resolution = 56;
        // The second layer has an identity shortcut; both see 28x28 maps of 144 expanded channels.
        let spec = &arch.layers()[1];
        assert!(spec.in_size as usize * spec.in_size as usize * 144 >= SPLIT_MIN_VALUES);
        let layer = FoldedLayer::random(spec, arch.activation, 4);
        let (c, s) = (spec.in_channels as usize, spec.in_size as usize);
        let x = values(s * s * c, 1);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| layer.run(&x, 1, s, s).expect("valid"))
        };
        let one = run(1);
        let want: Vec<f64> = one.iter().map(|v| *v as f64).collect();
        for _ in 0..3 {
            let two = run(2);
            assert!(crate::kernels::testutil::max_rel(&two, &want) < 1e-5);
            assert_eq!(two, run(2), "a split layer gives the same bits on every run");
        }
    }

    /// A whole pass on two threads (the other one spinning for its work, see `awake`) gives the
    /// logits of one thread, pass after pass.
    #[test]
    fn a_pass_on_two_threads_matches_one() {
        let mut arch =
            mnas_space::parse_block_list("stem16 ir_r2_k5_s1_e6_c24_se0.25 ds_r1_k3_s2_c32 head64").expect("valid");
        arch.resolution = 56;
        let net = Folded::random(&arch, 5).expect("valid");
        let images = values(56 * 56 * 3, 2);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| (0..20).map(|_| net.forward(&images, 1, 56).expect("valid")).collect::<Vec<_>>())
        };
        let want: Vec<f64> = run(1)[0].iter().map(|v| *v as f64).collect();
        for logits in run(2) {
            assert!(crate::kernels::testutil::max_rel(&logits, &want) < 1e-5, "{logits:?}");
        }
    }

    #[test]
    fn a_layer_alone_runs_like_inside_a_network() {
        let mut arch = mnas_space::parse_block_list("stem16 ir_r1_k5_s2_e6_c24_se0.25_pool head32").expect("valid");
        arch.resolution = 20;
        let spec = &arch.layers()[0];
        let layer = FoldedLayer::random(spec, arch.activation, 4);
        let (c, s) = (spec.in_channels as usize, spec.in_size as usize);
        let y = layer.run(&values(2 * s * s * c, 1), 2, s, s).expect("valid");
        let o = spec.out_size as usize;
        assert_eq!(y.len(), 2 * o * o * spec.out_channels as usize);
        assert!(y.iter().all(|v| v.is_finite()) && y.iter().any(|v| *v != 0.0));
        assert!(layer.run(&[0.0; 5], 1, s, s).is_err());
    }
}
