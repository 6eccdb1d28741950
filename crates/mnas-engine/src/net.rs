//! A network built from an [`Arch`], run forward and backward by hand on NHWC batches: stem, the
//! searched layers, head, global pool, dropout, classifier. Train mode uses batch statistics and
//! records a [`Tape`] of what the backward pass needs; eval mode uses running statistics.

use mnas_space::naming::{self, layer_names, layer_prefix};
use mnas_space::{Arch, ConvOp, Layer, Residual};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::buf::Buf;
use crate::error::EngineError;
use crate::kernels::bn::{self, Act, BatchStats};
use crate::kernels::conv::{self, Conv};
use crate::kernels::depthwise::{self, Dw};
use crate::kernels::pool;
use crate::kernels::se::{self, SeCache, SeGrads, SeWeights};
use crate::mat::{par_gemm, par_gemm_reduce, View};
use crate::params::{Params, ParamsBuilder, Slot};

/// Proxy-only changes to how an arch is built; the deployed model is unaffected.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetOptions {
    /// Stride of the stem convolution (the arch's is 2; 1 keeps 2x the resolution in every block).
    pub stem_stride: usize,
    /// Classifier weights drawn from uniform(+-range); `None` = timm's 1/sqrt(classes).
    pub classifier_init: Option<f32>,
    pub bn_momentum: f64,
    pub bn_eps: f64,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions { stem_stride: 2, classifier_init: None, bn_momentum: 0.1, bn_eps: 1e-5 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConvKind {
    /// kxk (or 1x1) dense convolution.
    Dense,
    Depthwise,
}

/// A convolution followed by BN and an activation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unit {
    pub(crate) weight: Slot,
    pub(crate) kind: ConvKind,
    pub(crate) k: usize,
    pub(crate) stride: usize,
    pub(crate) cin: usize,
    pub(crate) cout: usize,
    /// BN weight then bias (trainable), running mean then var (state).
    pub(crate) affine: Slot,
    pub(crate) running: Slot,
    pub(crate) act: Act,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct SeUnit {
    /// w1 (`c x r`), b1, w2 (`r x c`), b2, contiguous.
    pub(crate) slot: Slot,
    pub(crate) c: usize,
    pub(crate) r: usize,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Shortcut {
    None,
    Identity,
    Pool { stride: usize, project: Option<Unit> },
}

#[derive(Debug, Clone)]
pub(crate) struct LayerUnits {
    pub(crate) expand: Option<Unit>,
    pub(crate) main: Unit,
    pub(crate) se: Option<SeUnit>,
    pub(crate) project: Option<Unit>,
    pub(crate) shortcut: Shortcut,
}

/// What a train-mode pass of one [`Unit`] keeps.
#[derive(Debug, Clone)]
struct UnitTape {
    z: Buf,
    stats: BatchStats,
}

#[derive(Debug)]
struct ShortTape {
    /// Pooled input (the projection's input), empty when the pool is an identity.
    pooled: Buf,
    project: Option<UnitTape>,
    ph: usize,
    pw: usize,
}

#[derive(Debug)]
struct LayerTape {
    input: Buf,
    h: usize,
    w: usize,
    expand: Option<(UnitTape, Buf)>,
    main: UnitTape,
    /// The main unit's activated output (its activation mask, the SE or projection input).
    main_y: Buf,
    oh: usize,
    ow: usize,
    se: Option<(SeCache, Buf)>,
    project: Option<UnitTape>,
    short: Option<ShortTape>,
}

/// Everything a backward pass needs from its forward pass.
#[derive(Debug)]
pub struct Tape {
    n: usize,
    input: Buf,
    in_size: usize,
    stem: (UnitTape, usize),
    layers: Vec<LayerTape>,
    head: UnitTape,
    head_in: Buf,
    head_y: Buf,
    head_hw: (usize, usize),
    features: Vec<f32>,
    dropout: Option<Vec<f32>>,
}

/// A network and its parameters.
#[derive(Debug, Clone)]
pub struct Net {
    pub arch: Arch,
    pub options: NetOptions,
    pub params: Params,
    stem: Unit,
    layers: Vec<LayerUnits>,
    head: Unit,
    classifier: Slot,
    head_channels: usize,
    classes: usize,
}

/// What one conv + BN unit is, before its tensors are allocated.
struct UnitSpec<'a> {
    conv: &'a str,
    bn: &'a str,
    kind: ConvKind,
    k: usize,
    stride: usize,
    cin: usize,
    cout: usize,
    act: Act,
}

fn make_unit(b: &mut ParamsBuilder, prefix: &str, s: UnitSpec<'_>) -> Unit {
    let weight = b.conv(&format!("{prefix}.{}", s.conv), s.k, s.cin, s.cout, s.kind == ConvKind::Depthwise);
    let (affine, running) = b.bn(&format!("{prefix}.{}", s.bn), s.cout);
    Unit { weight, kind: s.kind, k: s.k, stride: s.stride, cin: s.cin, cout: s.cout, affine, running, act: s.act }
}

pub(crate) fn units_of(b: &mut ParamsBuilder, l: &Layer, act: Act) -> LayerUnits {
    let p = layer_prefix(l);
    let names = layer_names(l.op);
    let (cin, mid, cout, k, s) = (
        l.in_channels as usize,
        l.mid_channels as usize,
        l.out_channels as usize,
        l.kernel as usize,
        l.stride as usize,
    );
    let dense = ConvKind::Dense;
    let expand = l.has_expansion().then(|| {
        let spec = UnitSpec {
            conv: names.expand_conv,
            bn: names.expand_bn,
            kind: dense,
            k: 1,
            stride: 1,
            cin,
            cout: mid,
            act,
        };
        make_unit(b, &p, spec)
    });
    let main = match l.op {
        ConvOp::Conv => UnitSpec { conv: names.kxk_conv, bn: names.kxk_bn, kind: dense, k, stride: s, cin, cout, act },
        _ => UnitSpec {
            conv: names.kxk_conv,
            bn: names.kxk_bn,
            kind: ConvKind::Depthwise,
            k,
            stride: s,
            cin: mid,
            cout: mid,
            act,
        },
    };
    let main = make_unit(b, &p, main);
    let se_c = main.cout;
    let se = (l.se_channels > 0).then(|| {
        let r = l.se_channels as usize;
        let w1 = b.dense(&format!("{p}.{}.conv_reduce", names.se), se_c, r, true, None);
        let w2 = b.dense(&format!("{p}.{}.conv_expand", names.se), r, se_c, true, None);
        SeUnit { slot: Slot { offset: w1.offset, len: w1.len + w2.len }, c: se_c, r }
    });
    let project = (l.op != ConvOp::Conv).then(|| {
        let spec = UnitSpec {
            conv: names.project_conv,
            bn: names.project_bn,
            kind: dense,
            k: 1,
            stride: 1,
            cin: mid,
            cout,
            act: Act::None,
        };
        make_unit(b, &p, spec)
    });
    let shortcut = match l.residual {
        Residual::None => Shortcut::None,
        Residual::Identity => Shortcut::Identity,
        Residual::Pool { stride, project } => Shortcut::Pool {
            stride: stride as usize,
            project: project.then(|| {
                let spec = UnitSpec {
                    conv: names.skip_conv,
                    bn: names.skip_bn,
                    kind: dense,
                    k: 1,
                    stride: 1,
                    cin,
                    cout,
                    act: Act::None,
                };
                make_unit(b, &p, spec)
            }),
        },
    };
    LayerUnits { expand, main, se, project, shortcut }
}

/// Train-mode or eval-mode BN.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Train,
    Eval,
}

impl Net {
    /// A randomly initialised network (timm's init, from `seed`).
    pub fn new(arch: &Arch, options: NetOptions, seed: u64) -> Result<Net, EngineError> {
        arch.validate()?;
        if !(options.stem_stride == 1 || options.stem_stride == 2) {
            return Err(EngineError::Config(format!("stem stride must be 1 or 2, got {}", options.stem_stride)));
        }
        let act = Act::from(arch.activation);
        let mut b = ParamsBuilder::new(seed);
        let stem_c = arch.stem_out() as usize;
        let stem_w = b.conv(naming::STEM_CONV, 3, 3, stem_c, false);
        let (affine, running) = b.bn(naming::STEM_BN, stem_c);
        let stem = Unit {
            weight: stem_w,
            kind: ConvKind::Dense,
            k: 3,
            stride: options.stem_stride,
            cin: 3,
            cout: stem_c,
            affine,
            running,
            act,
        };
        let layers = arch.layers().iter().map(|l| units_of(&mut b, l, act)).collect();
        let (head_in, head_c) = (arch.head_in() as usize, arch.head_channels as usize);
        let head_w = b.conv(naming::HEAD_CONV, 1, head_in, head_c, false);
        let (affine, running) = b.bn(naming::HEAD_BN, head_c);
        let head = Unit {
            weight: head_w,
            kind: ConvKind::Dense,
            k: 1,
            stride: 1,
            cin: head_in,
            cout: head_c,
            affine,
            running,
            act,
        };
        let classes = arch.num_classes as usize;
        let classifier = b.dense(naming::CLASSIFIER, head_c, classes, false, options.classifier_init);
        Ok(Net {
            arch: arch.clone(),
            options,
            params: b.params,
            stem,
            layers,
            head,
            classifier,
            head_channels: head_c,
            classes,
        })
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Stem, layers, head and classifier slot, for the inference form.
    pub(crate) fn parts(&self) -> (&Unit, &[LayerUnits], &Unit, Slot) {
        (&self.stem, &self.layers, &self.head, self.classifier)
    }

    fn conv_forward(&self, u: &Unit, x: &[f32], n: usize, h: usize, w: usize) -> (Buf, usize, usize) {
        let wt = &self.params.values[u.weight.range()];
        match u.kind {
            ConvKind::Dense => {
                let g = Conv { n, h, w, cin: u.cin, cout: u.cout, k: u.k, stride: u.stride };
                (conv::forward(x, wt, None, &g), g.oh(), g.ow())
            }
            ConvKind::Depthwise => {
                let g = Dw { n, h, w, c: u.cin, k: u.k, stride: u.stride };
                (depthwise::forward(x, wt, None, &g), g.oh(), g.ow())
            }
        }
    }

    /// conv -> BN -> act. Train mode updates the running statistics and returns the tape.
    fn unit_forward(
        &mut self,
        u: &Unit,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        mode: Mode,
    ) -> (Buf, Option<UnitTape>, usize, usize) {
        let (mut z, oh, ow) = self.conv_forward(u, x, n, h, w);
        let c = u.cout;
        let affine = &self.params.values[u.affine.range()];
        let (gamma, beta) = affine.split_at(c);
        match mode {
            Mode::Train => {
                let (y, stats) = bn::forward_train(&z, gamma, beta, self.options.bn_eps, u.act);
                let count = (n * oh * ow) as f64;
                let unbiased = if count > 1.0 { count / (count - 1.0) } else { 1.0 };
                let m = self.options.bn_momentum;
                let running = &mut self.params.state[u.running.range()];
                let (rm, rv) = running.split_at_mut(c);
                for i in 0..c {
                    rm[i] = ((1.0 - m) * rm[i] as f64 + m * stats.mean[i]) as f32;
                    rv[i] = ((1.0 - m) * rv[i] as f64 + m * stats.var[i] * unbiased) as f32;
                }
                (y, Some(UnitTape { z, stats }), oh, ow)
            }
            Mode::Eval => {
                let running = &self.params.state[u.running.range()];
                let (rm, rv) = running.split_at(c);
                let (scale, shift) = bn::eval_affine(gamma, beta, rm, rv, self.options.bn_eps);
                bn::par_affine_act_mut(&mut z, &scale, &shift, u.act);
                (z, None, oh, ow)
            }
        }
    }

    /// Backward through act(BN(conv(x))): adds the parameter gradients, returns dx if asked.
    #[allow(clippy::too_many_arguments)]
    fn unit_backward(
        &self,
        u: &Unit,
        x: &[f32],
        h: usize,
        w: usize,
        n: usize,
        tape: &UnitTape,
        y: &[f32],
        dy: &[f32],
        grads: &mut [f32],
        need_dx: bool,
    ) -> Option<Buf> {
        let c = u.cout;
        let gamma = &self.params.values[u.affine.offset..u.affine.offset + c];
        let dz = bn::backward_train(&tape.z, y, dy, gamma, &tape.stats, u.act, &mut grads[u.affine.range()]);
        let wt = &self.params.values[u.weight.range()];
        let dw = &mut grads[u.weight.range()];
        match u.kind {
            ConvKind::Dense => {
                let g = Conv { n, h, w, cin: u.cin, cout: u.cout, k: u.k, stride: u.stride };
                conv::backward(x, wt, &dz, &g, dw, need_dx)
            }
            ConvKind::Depthwise => {
                let g = Dw { n, h, w, c: u.cin, k: u.k, stride: u.stride };
                depthwise::backward_w(x, &dz, &g, dw);
                need_dx.then(|| depthwise::backward_x(&dz, wt, &g))
            }
        }
    }

    fn se_weights(&self, s: &SeUnit, act: Act) -> SeWeights<'_> {
        let v = &self.params.values[s.slot.range()];
        let (w1, rest) = v.split_at(s.c * s.r);
        let (b1, rest) = rest.split_at(s.r);
        let (w2, b2) = rest.split_at(s.r * s.c);
        SeWeights { w1, b1, w2, b2, c: s.c, r: s.r, act }
    }

    fn layer_forward(
        &mut self,
        i: usize,
        x: Buf,
        n: usize,
        h: usize,
        w: usize,
        mode: Mode,
    ) -> (Buf, Option<LayerTape>, usize, usize) {
        let l = self.layers[i].clone();
        let train = mode == Mode::Train;
        let expand = match &l.expand {
            Some(u) => {
                let (y, t, _, _) = self.unit_forward(u, &x, n, h, w, mode);
                Some((t, y))
            }
            None => None,
        };
        let main_in: &[f32] = expand.as_ref().map(|(_, y)| &y[..]).unwrap_or(&x);
        let (main_y, main_t, oh, ow) = self.unit_forward(&l.main, main_in, n, h, w, mode);
        let hw = oh * ow;
        let se = l.se.map(|s| {
            let weights = self.se_weights(&s, l.main.act);
            se::forward(&main_y, n, hw, &weights)
        });
        let after_se: &[f32] = se.as_ref().map(|(y, _)| &y[..]).unwrap_or(&main_y);
        let (mut out, project_t) = match &l.project {
            Some(u) => {
                let (y, t, _, _) = self.unit_forward(u, after_se, n, oh, ow, mode);
                (y, t)
            }
            None => (Buf::from_slice(after_se), None),
        };
        let short = match l.shortcut {
            Shortcut::None => None,
            Shortcut::Identity => {
                crate::simd::add_to(&mut out, &x);
                None
            }
            Shortcut::Pool { stride, project } => {
                let (ph, pw) = (pool::pooled(h, stride), pool::pooled(w, stride));
                let pooled = if stride == 1 {
                    Buf::default()
                } else {
                    pool::avg_pool(&x, n, h, w, l.main_in_channels(), stride)
                };
                let src: &[f32] = if stride == 1 { &x } else { &pooled };
                let project_t = match &project {
                    Some(u) => {
                        let (y, t, _, _) = self.unit_forward(u, src, n, ph, pw, mode);
                        crate::simd::add_to(&mut out, &y);
                        t
                    }
                    None => {
                        crate::simd::add_to(&mut out, src);
                        None
                    }
                };
                Some(ShortTape { pooled, project: project_t, ph, pw })
            }
        };
        if !train {
            return (out, None, oh, ow);
        }
        // The projection reads the SE output; the SE backward and the activation mask read main_y.
        let se_t = se.map(|(y, cache)| (cache, if l.project.is_some() { y } else { Buf::default() }));
        let tape = LayerTape {
            input: x,
            h,
            w,
            expand: expand.map(|(t, y)| (t.expect("train mode records a tape"), y)),
            main: main_t.expect("train mode records a tape"),
            main_y,
            oh,
            ow,
            se: se_t,
            project: project_t,
            short,
        };
        (out, Some(tape), oh, ow)
    }

    fn layer_backward(&self, i: usize, t: &LayerTape, n: usize, dout: &[f32], grads: &mut [f32]) -> Buf {
        let l = &self.layers[i];
        let (oh, ow) = (t.oh, t.ow);
        // Gradient at the SE output (or at main_y when there is no SE).
        let d_after_se = match (&l.project, &t.project) {
            (Some(u), Some(pt)) => {
                let input: &[f32] = match &t.se {
                    Some((_, se_y)) => se_y,
                    None => &t.main_y,
                };
                self.unit_backward(u, input, oh, ow, n, pt, &pt.z, dout, grads, true).expect("dx asked for")
            }
            _ => Buf::from_slice(dout),
        };
        let d_main = match (&l.se, &t.se) {
            (Some(s), Some((cache, _))) => {
                let weights = self.se_weights(s, l.main.act);
                let mut g = vec![0f32; s.slot.len];
                let (gw1, rest) = g.split_at_mut(s.c * s.r);
                let (gb1, rest) = rest.split_at_mut(s.r);
                let (gw2, gb2) = rest.split_at_mut(s.r * s.c);
                let dx = se::backward(
                    &t.main_y,
                    &d_after_se,
                    oh * ow,
                    &weights,
                    cache,
                    SeGrads { w1: gw1, b1: gb1, w2: gw2, b2: gb2 },
                );
                crate::simd::add_to(&mut grads[s.slot.range()], &g);
                dx
            }
            _ => d_after_se,
        };
        let main_in: &[f32] = t.expand.as_ref().map(|(_, y)| &y[..]).unwrap_or(&t.input);
        let d_main_in =
            self.unit_backward(&l.main, main_in, t.h, t.w, n, &t.main, &t.main_y, &d_main, grads, true).expect("dx");
        let mut dx = match (&l.expand, &t.expand) {
            (Some(u), Some((et, ey))) => {
                self.unit_backward(u, &t.input, t.h, t.w, n, et, ey, &d_main_in, grads, true).expect("dx asked for")
            }
            _ => d_main_in,
        };
        match (&l.shortcut, &t.short) {
            (Shortcut::Identity, _) => crate::simd::add_to(&mut dx, dout),
            (Shortcut::Pool { stride, project }, Some(st)) => {
                let src: &[f32] = if *stride == 1 { &t.input } else { &st.pooled };
                let d_pooled = match (project, &st.project) {
                    (Some(u), Some(pt)) => {
                        self.unit_backward(u, src, st.ph, st.pw, n, pt, &pt.z, dout, grads, true).expect("dx")
                    }
                    _ => Buf::from_slice(dout),
                };
                if *stride == 1 {
                    crate::simd::add_to(&mut dx, &d_pooled);
                } else {
                    let c = l.main_in_channels();
                    let back = pool::avg_pool_backward(&d_pooled, n, t.h, t.w, c, *stride);
                    crate::simd::add_to(&mut dx, &back);
                }
            }
            _ => {}
        }
        dx
    }

    fn check_input(&self, images: &[f32], n: usize, size: usize) -> Result<(), EngineError> {
        if images.len() != n * size * size * 3 || n == 0 || size == 0 {
            return Err(EngineError::Input { got: images.len(), n, size });
        }
        Ok(())
    }

    /// Everything up to the pooled features, in either mode.
    fn features(&mut self, images: &[f32], n: usize, size: usize, mode: Mode) -> (Vec<f32>, Option<Tape>) {
        let stem = self.stem;
        let (mut x, stem_t, mut h, mut w) = self.unit_forward(&stem, images, n, size, size, mode);
        let stem_size = h;
        let mut tapes = Vec::new();
        for i in 0..self.layers.len() {
            let (y, t, oh, ow) = self.layer_forward(i, x, n, h, w, mode);
            if let Some(t) = t {
                tapes.push(t);
            }
            x = y;
            (h, w) = (oh, ow);
        }
        let head = self.head;
        let (head_y, head_t, _, _) = self.unit_forward(&head, &x, n, h, w, mode);
        let features = pool::global_mean(&head_y, n, h * w, self.head_channels);
        let tape = head_t.map(|head| Tape {
            n,
            input: Buf::from_slice(images),
            in_size: size,
            stem: (stem_t.expect("train mode records a tape"), stem_size),
            layers: tapes,
            head,
            head_in: x,
            head_y,
            head_hw: (h, w),
            features: features.clone(),
            dropout: None,
        });
        (features, tape)
    }

    fn classify(&self, features: &[f32], n: usize) -> Vec<f32> {
        let v = &self.params.values[self.classifier.range()];
        let (wt, bias) = v.split_at(self.head_channels * self.classes);
        let mut logits: Vec<f32> = (0..n).flat_map(|_| bias.iter().copied()).collect();
        par_gemm(
            &mut logits,
            View::rows(features, n, self.head_channels),
            View::rows(wt, self.head_channels, self.classes),
            true,
        );
        logits
    }

    /// Train-mode forward pass of `n` NHWC images (`size x size x 3`, normalised): logits
    /// (`n x classes`) and the tape for [`Net::backward`]. Dropout (the arch's rate) draws from
    /// `dropout_seed`.
    pub fn forward_train(
        &mut self,
        images: &[f32],
        n: usize,
        size: usize,
        dropout_seed: u64,
    ) -> Result<(Vec<f32>, Tape), EngineError> {
        self.check_input(images, n, size)?;
        let (mut features, tape) = self.features(images, n, size, Mode::Train);
        let mut tape = tape.expect("train mode records a tape");
        let p = self.arch.dropout;
        if p > 0.0 {
            let mut rng = ChaCha8Rng::seed_from_u64(dropout_seed);
            let keep = 1.0 / (1.0 - p) as f32;
            let mask: Vec<f32> = features.iter().map(|_| if rng.gen_bool(1.0 - p) { keep } else { 0.0 }).collect();
            features.iter_mut().zip(&mask).for_each(|(f, m)| *f *= m);
            tape.dropout = Some(mask);
        }
        tape.features = features.clone();
        Ok((self.classify(&features, n), tape))
    }

    /// Eval-mode logits (running statistics, no dropout).
    pub fn forward_eval(&mut self, images: &[f32], n: usize, size: usize) -> Result<Vec<f32>, EngineError> {
        self.check_input(images, n, size)?;
        let (features, _) = self.features(images, n, size, Mode::Eval);
        Ok(self.classify(&features, n))
    }

    /// Gradients of every parameter (laid out as [`Params::values`]) from the gradient at the
    /// logits.
    pub fn backward(&self, tape: Tape, dlogits: &[f32]) -> Vec<f32> {
        let n = tape.n;
        let (hc, classes) = (self.head_channels, self.classes);
        let mut grads = vec![0f32; self.params.values.len()];
        {
            let g = &mut grads[self.classifier.range()];
            let (gw, gb) = g.split_at_mut(hc * classes);
            par_gemm_reduce(gw, View::rows(&tape.features, n, hc).t(), View::rows(dlogits, n, classes), false);
            for row in dlogits.chunks_exact(classes) {
                crate::simd::add_to(gb, row);
            }
        }
        let wt = &self.params.values[self.classifier.offset..self.classifier.offset + hc * classes];
        let mut dfeat = vec![0f32; n * hc];
        par_gemm(&mut dfeat, View::rows(dlogits, n, classes), View::rows(wt, hc, classes).t(), false);
        if let Some(mask) = &tape.dropout {
            dfeat.iter_mut().zip(mask).for_each(|(d, m)| *d *= m);
        }
        let (h, w) = tape.head_hw;
        let dhead = pool::global_mean_backward(&dfeat, n, h * w, hc);
        let mut dx = self
            .unit_backward(&self.head, &tape.head_in, h, w, n, &tape.head, &tape.head_y, &dhead, &mut grads, true)
            .expect("dx asked for");
        for (i, lt) in tape.layers.iter().enumerate().rev() {
            dx = self.layer_backward(i, lt, n, &dx, &mut grads);
        }
        let (stem_t, _) = &tape.stem;
        let stem_y = match tape.layers.first() {
            Some(first) => &first.input,
            None => &tape.head_in,
        };
        let size = tape.in_size;
        self.unit_backward(&self.stem, &tape.input, size, size, n, stem_t, stem_y, &dx, &mut grads, false);
        grads
    }
}

impl LayerUnits {
    /// The layer input's channel count.
    pub(crate) fn main_in_channels(&self) -> usize {
        match &self.expand {
            Some(u) => u.cin,
            None => self.main.cin,
        }
    }
}
