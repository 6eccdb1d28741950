//! Inference convolutions with AVX-512: y (m x n) = act(bias + x (m x k) * W (k x n)) for 1x1
//! convolutions, and the same product read straight from the input image for k x k ones (each
//! patch row is k runs of k*cin contiguous floats in NHWC, so no patch matrix is written).
//!
//! A folded network's weights never change, so they are packed once into panels of 32 output
//! channels (k x 32, zero-padded), and a tile of 12 output pixels x 32 channels stays in 24
//! registers over the whole reduction: bias and activation are applied before the single store.
//! The general GEMM repacks its operands on every call, which on these short reductions (k of
//! 16..1152) cost as much as the arithmetic. Without AVX-512, [`PackedPointwise::pack`] declines
//! and callers keep the general GEMM.

use rayon::prelude::*;

use super::avx512::available;
use super::bn::Act;
use super::conv::Conv;
use crate::buf::Buf;

/// Output channels per panel: two 16-lane registers.
const NR: usize = 32;
/// Output pixels per register tile: 12 x 2 accumulators + 2 weight registers + 1 broadcast.
const MR: usize = 12;
/// Output pixels per task: the block's inputs stay in L2 while every panel passes over them.
const ROWS_PER_BLOCK: usize = 8 * MR;
/// How many reduction steps ahead of the tile its weights are prefetched (16 and 32 measured
/// best, 4 and 64 worse, on a 49 x 320 -> 1280 product with weights from L3).
const PREFETCH_STEPS: usize = 16;

/// A 1x1 convolution's weights (`k x n`, output channel innermost) and bias, packed for the
/// AVX-512 kernel.
#[derive(Debug, Clone)]
pub struct PackedPointwise {
    k: usize,
    n: usize,
    panels: Buf,
    bias: Buf,
}

impl PackedPointwise {
    /// Packs `w` (`k x n`) and `bias` (`n`); `None` when this CPU lacks AVX-512.
    pub fn pack(w: &[f32], bias: &[f32], k: usize, n: usize) -> Option<PackedPointwise> {
        assert!(w.len() == k * n && bias.len() == n, "pointwise weights of {k} x {n}");
        if !available() || k == 0 || n == 0 {
            return None;
        }
        let panels_n = n.div_ceil(NR);
        let mut panels = Buf::zeros(panels_n * k * NR);
        for p in 0..panels_n {
            let cols = (n - p * NR).min(NR);
            for kk in 0..k {
                let dst = (p * k + kk) * NR;
                panels[dst..dst + cols].copy_from_slice(&w[kk * n + p * NR..][..cols]);
            }
        }
        let mut padded = Buf::zeros(panels_n * NR);
        padded[..n].copy_from_slice(bias);
        Some(PackedPointwise { k, n, panels, bias: padded })
    }

    /// `y` (`m x n`) = act(bias + `x` (`m x k`) * W), split across the rayon pool by blocks of
    /// rows and by panels of columns (the 7x7 maps at the end of a network have one block only).
    pub fn forward(&self, x: &[f32], act: Act, y: &mut [f32]) {
        self.forward_on(x, act, y, rayon::current_num_threads() > 1)
    }

    /// [`forward`](Self::forward) on the calling thread (a task that already has its share).
    pub fn forward_here(&self, x: &[f32], act: Act, y: &mut [f32]) {
        self.forward_on(x, act, y, false)
    }

    /// Output channels.
    pub fn outputs(&self) -> usize {
        self.n
    }

    /// Input channels (the reduction length).
    pub fn inputs(&self) -> usize {
        self.k
    }

    fn forward_on(&self, x: &[f32], act: Act, y: &mut [f32], parallel: bool) {
        let (k, n) = (self.k, self.n);
        let m = x.len() / k;
        assert!(x.len() == m * k && y.len() == m * n, "pointwise operands of {m} x {k} -> {n}");
        let parallel = parallel && m * k * n >= PARALLEL_MACS;
        let panels = n.div_ceil(NR);
        // In parallel, blocks of equal size (a multiple of the tile), enough for four tasks per
        // thread: 196 rows were 96 + 96 + 4, and 7x7 maps one block for a few panels.
        let per_block = if parallel {
            let wanted = (4 * rayon::current_num_threads()).div_ceil(panels).max(m.div_ceil(ROWS_PER_BLOCK));
            m.div_ceil(wanted).div_ceil(MR).max(1) * MR
        } else {
            ROWS_PER_BLOCK
        };
        let blocks = m.div_ceil(per_block);
        let out = SharedOut(y.as_mut_ptr());
        let task = |t: usize| {
            let (b, p) = (t / panels, t % panels);
            let lo = b * per_block;
            let rows = per_block.min(m - lo);
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `pack` only builds a PackedPointwise on a CPU with AVX-512F; task (b, p)
            // reads rows lo..lo + rows of `x` and writes only their columns of panel p, so
            // tasks never write the same element, and every row lies inside `y` (asserted).
            unsafe {
                block_avx512(self, &x[lo * k..(lo + rows) * k], act, out.at(lo * n), rows, p)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (rows, p, act, &out);
        };
        if parallel && blocks * panels > 1 {
            (0..blocks * panels).into_par_iter().for_each(task);
        } else {
            (0..blocks * panels).for_each(task);
        }
    }
}

/// Below this many multiply-adds a product runs on one thread.
const PARALLEL_MACS: usize = 1 << 17;

/// The output of [`PackedPointwise::forward`], shared by tasks that write disjoint elements.
struct SharedOut(*mut f32);
// SAFETY: only used by `forward`, whose tasks write disjoint (row block, panel) parts.
unsafe impl Sync for SharedOut {}
impl SharedOut {
    fn at(&self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

/// One run of the reduction: inputs `kk0..kk0 + len` of tile row 0 start at `x`; row `i`'s at
/// `x + i * row_stride`.
#[derive(Clone, Copy)]
struct Run {
    kk0: usize,
    x: *const f32,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn block_avx512(pk: &PackedPointwise, x: &[f32], act: Act, out: *mut f32, rows: usize, p: usize) {
    let (k, n) = (pk.k, pk.n);
    let xp = x.as_ptr();
    let mut r = 0;
    while r < rows {
        let run = [Run { kk0: 0, x: xp.add(r * k) }];
        r += tiles(pk, p, &run, k, k, act, out.add(r * n), rows - r);
    }
}

/// Up to `MR` (`MR + 1` when that is all that is left; `2 * MR` on a narrow panel) output rows (of
/// `avail`) x panel `p` from `runs`; returns the rows done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tiles(
    pk: &PackedPointwise,
    p: usize,
    runs: &[Run],
    len: usize,
    row_stride: usize,
    act: Act,
    out: *mut f32,
    avail: usize,
) -> usize {
    let t = Tile {
        n: pk.n,
        panel: pk.panels.as_ptr().add(p * pk.k * NR),
        bias: pk.bias.as_ptr().add(p * NR),
        cols: (pk.n - p * NR).min(NR),
        act,
    };
    let out = out.add(p * NR);
    // A panel of at most 16 valid channels (the last one of 16 or 24 outputs, say) uses one
    // register per row, so twice the rows fit.
    macro_rules! dispatch {
        ($two:literal, $rows:expr, $($r:literal)*) => {
            match $rows {
                $($r => tile::<$r, $two>(&t, runs, len, row_stride, out),)*
                _ => {}
            }
        };
    }
    if t.cols <= 16 {
        let rows = avail.min(2 * MR);
        dispatch!(false, rows, 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24);
        rows
    } else {
        // A last row of its own would be a tile whose two chains of FMAs wait on their latency for a
        // third of a full tile's time; 13 rows still fit the registers (26 accumulators, 2 weight
        // registers, 1 broadcast), so a 7x7 map's 49 rows are 12 + 12 + 12 + 13: 5-6 % faster on
        // its products (49 x 320 -> 1280, 49 x 960 -> 320, weights from L3, on a Xeon).
        let rows = if avail == MR + 1 { avail } else { avail.min(MR) };
        dispatch!(true, rows, 1 2 3 4 5 6 7 8 9 10 11 12 13);
        rows
    }
}

/// What a register tile writes: one panel's weights and bias, its valid columns, the activation.
struct Tile {
    n: usize,
    panel: *const f32,
    bias: *const f32,
    cols: usize,
    act: Act,
}

/// Lanes `lo..lo + 16` of a panel of `cols` valid channels, as a store mask.
#[cfg(target_arch = "x86_64")]
fn lane_mask(cols: usize, lo: usize) -> u16 {
    match cols.saturating_sub(lo) {
        0 => 0,
        c if c >= 16 => u16::MAX,
        c => ((1u32 << c) - 1) as u16,
    }
}

/// `R` output rows x one panel over the reduction `runs` (each `len` long); `out` points at row
/// 0's first output of the panel (row stride `n`). Without `TWO` only the panel's first 16
/// channels are computed (the caller has no more).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn tile<const R: usize, const TWO: bool>(t: &Tile, runs: &[Run], len: usize, row_stride: usize, out: *mut f32) {
    use super::avx512::activate;
    use std::arch::x86_64::*;
    let mut lo = [_mm512_loadu_ps(t.bias); R];
    let mut hi = [_mm512_loadu_ps(t.bias.add(16)); R];
    for run in runs {
        let panel = t.panel.add(run.kk0 * NR);
        for kk in 0..len {
            let w0 = _mm512_loadu_ps(panel.add(kk * NR));
            let w1 = if TWO { _mm512_loadu_ps(panel.add(kk * NR + 16)) } else { w0 };
            // A layer's weights come from L3 (each is used once per inference), and the tile
            // consumes them faster than the hardware prefetcher fetches them: asking for them
            // PREFETCH_STEPS steps ahead made a 49-pixel tile 20-30 % faster on a Xeon
            // (the first tile of a panel, which reads it from L3, stalls less). A prefetch past
            // the panel's end touches the next panel, or nothing: prefetches never fault.
            let ahead = panel.wrapping_add((kk + PREFETCH_STEPS) * NR);
            _mm_prefetch::<_MM_HINT_T0>(ahead as *const i8);
            if TWO {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16) as *const i8);
            }
            for i in 0..R {
                let a = _mm512_set1_ps(*run.x.add(i * row_stride + kk));
                lo[i] = _mm512_fmadd_ps(a, w0, lo[i]);
                if TWO {
                    hi[i] = _mm512_fmadd_ps(a, w1, hi[i]);
                }
            }
        }
    }
    let (m0, m1) = (lane_mask(t.cols, 0), lane_mask(t.cols, 16));
    for i in 0..R {
        _mm512_mask_storeu_ps(out.add(i * t.n), m0, activate(lo[i], t.act));
        if TWO {
            _mm512_mask_storeu_ps(out.add(i * t.n + 16), m1, activate(hi[i], t.act));
        }
    }
}

impl PackedPointwise {
    /// A k x k convolution `g` whose weights (`[ky][kx][cin][cout]`) were packed with
    /// `k = g.k * g.k * g.cin`: `y` = act(bias + conv(`x`)), one task per output row.
    pub fn forward_conv(&self, x: &[f32], g: &Conv, act: Act, y: &mut [f32]) {
        let (oh, ow) = (g.oh(), g.ow());
        assert!(self.k == g.k * g.k * g.cin && self.n == g.cout, "packed weights of another convolution");
        assert!(x.len() == g.n * g.h * g.w * g.cin && y.len() == g.n * oh * ow * g.cout, "conv operands");
        if ow < 2 * MR {
            // Narrow maps: row by row, a register tile would hold only a few pixels and stream
            // the whole (large) panel for each; one patch matrix per image lets tiles span rows.
            let image_out = oh * ow * g.cout;
            for (b, out) in y.chunks_mut(image_out).enumerate() {
                let img = &x[b * g.h * g.w * g.cin..(b + 1) * g.h * g.w * g.cin];
                let patch = self.k;
                let mut patches = Buf::zeros(oh * ow * patch);
                patches.par_chunks_mut(ow * patch).enumerate().for_each(|(oy, rows)| {
                    for (ox, dst) in rows.chunks_exact_mut(patch).enumerate() {
                        fill_patch(img, g, oy, ox, dst);
                    }
                });
                self.forward(&patches, act, out);
            }
            return;
        }
        let row = ow * g.cout;
        let run = |(r, out): (usize, &mut [f32])| {
            let (b, oy) = (r / oh, r % oh);
            let img = &x[b * g.h * g.w * g.cin..(b + 1) * g.h * g.w * g.cin];
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as in `forward`; `img` is one whole input image, `out` one output row.
            unsafe {
                conv_row_avx512(self, img, g, oy, act, out)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (img, oy, out, act);
        };
        if rayon::current_num_threads() > 1 {
            y.par_chunks_mut(row).enumerate().for_each(run);
        } else {
            y.chunks_mut(row).enumerate().for_each(run);
        }
    }
}

/// The taps of output pixel (`oy`, `ox`) into `patch` (`k * k * cin`, zeros where the kernel
/// falls on the padding; `patch` holds zeros on entry).
fn fill_patch(img: &[f32], g: &Conv, oy: usize, ox: usize, patch: &mut [f32]) {
    let (k, s, p, cin) = (g.k, g.stride, g.pad(), g.cin);
    for ky in 0..k {
        let iy = (oy * s + ky).wrapping_sub(p);
        if iy >= g.h {
            continue;
        }
        for kx in 0..k {
            let ix = (ox * s + kx).wrapping_sub(p);
            if ix < g.w {
                let src = (iy * g.w + ix) * cin;
                patch[(ky * k + kx) * cin..][..cin].copy_from_slice(&img[src..src + cin]);
            }
        }
    }
}

/// One output row of a k x k convolution. Pixels whose taps all lie inside the row take register
/// tiles that read the image directly (a run of k*cin floats per kernel row inside the image);
/// the few pixels on the left and right edges get a zero-padded patch of their own.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn conv_row_avx512(pk: &PackedPointwise, img: &[f32], g: &Conv, oy: usize, act: Act, out: &mut [f32]) {
    let (k, s, p, cin, w, ow, n) = (g.k, g.stride, g.pad(), g.cin, g.w, g.ow(), g.cout);
    let seg = k * cin;
    let inner_lo = p.div_ceil(s).min(ow);
    let inner_hi = if w + p >= k { ((w + p - k) / s + 1).min(ow) } else { 0 }.max(inner_lo);
    // The edge pixels' patches, zero-padded, one row each: left edge first, then right edge.
    let edges: Vec<usize> = (0..inner_lo).chain(inner_hi..ow).collect();
    let mut patches = Buf::zeros(edges.len() * k * seg);
    for (e, &ox) in edges.iter().enumerate() {
        fill_patch(img, g, oy, ox, &mut patches[e * k * seg..(e + 1) * k * seg]);
    }
    let mut runs = [Run { kk0: 0, x: img.as_ptr() }; 8];
    let mut used = 0;
    for ky in 0..k {
        let iy = (oy * s + ky).wrapping_sub(p);
        if iy < g.h {
            runs[used] = Run { kk0: ky * seg, x: img.as_ptr().add(iy * w * cin) };
            used += 1;
        }
    }
    for pnl in 0..n.div_ceil(NR) {
        // Edge groups as register tiles over their patches (rows `k * seg` apart), so that the
        // sums of several pixels overlap instead of one pixel's running alone.
        for (first, count, at) in [(0, inner_lo, 0), (inner_hi, ow - inner_hi, inner_lo)] {
            let mut done = 0;
            while done < count {
                let run = [Run { kk0: 0, x: patches.as_ptr().add((at + done) * k * seg) }];
                let op = out.as_mut_ptr().add((first + done) * n);
                done += tiles(pk, pnl, &run, k * seg, k * seg, act, op, count - done);
            }
        }
        let mut ox = inner_lo;
        while ox < inner_hi {
            let mut shifted = runs;
            for r in &mut shifted[..used] {
                r.x = r.x.add((ox * s - p) * cin);
            }
            let op = out.as_mut_ptr().add(ox * n);
            ox += tiles(pk, pnl, &shifted[..used], seg, s * cin, act, op, inner_hi - ox);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv;
    use crate::kernels::testutil::{max_rel, values};

    fn direct(x: &[f32], w: &[f32], bias: &[f32], act: Act, m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for c in 0..n {
                let s: f64 = (0..k).map(|i| x[r * k + i] as f64 * w[i * n + c] as f64).sum::<f64>() + bias[c] as f64;
                y[r * n + c] = match act {
                    Act::None => s,
                    Act::Relu => s.max(0.0),
                    Act::Relu6 => s.clamp(0.0, 6.0),
                };
            }
        }
        y
    }

    #[test]
    fn packed_kernel_matches_direct_code_on_every_remainder() {
        if !available() {
            eprintln!("no AVX-512 on this CPU: the packed kernel is not used here");
            assert!(PackedPointwise::pack(&[1.0], &[0.0], 1, 1).is_none());
            return;
        }
        // Row counts around the 12-row tile and the 96-row block, channel counts around the
        // 16-lane halves and 32-wide panels.
        for &(m, k, n) in &[
            (1, 16, 8),
            (5, 24, 16),
            (12, 32, 24),
            (13, 40, 32),
            (49, 320, 64),
            (97, 144, 40),
            (200, 7, 100),
            (300, 1152, 320),
            (23, 3, 17),
        ] {
            for act in [Act::None, Act::Relu, Act::Relu6] {
                let x: Vec<f32> = values(m * k, m as u64).iter().map(|v| v * 3.0).collect();
                let w = values(k * n, k as u64 + 1);
                let bias = values(n, n as u64 + 2);
                let pk = PackedPointwise::pack(&w, &bias, k, n).expect("AVX-512 present");
                let mut y = vec![f32::NAN; m * n];
                pk.forward(&x, act, &mut y);
                let err = max_rel(&y, &direct(&x, &w, &bias, act, m, k, n));
                // f32 rounding grows with the reduction's length (about sqrt(k) ulps).
                let tol = 2e-6 * (k as f64).sqrt();
                assert!(err < tol, "m {m} k {k} n {n} {act:?}: relative error {err} (limit {tol})");
            }
        }
    }

    /// k x k convolutions read straight from the image against the im2col + GEMM path, on maps
    /// smaller than the kernel, odd sizes, strides 1 and 2, and the 3-channel stem.
    #[test]
    fn packed_convolution_matches_the_patch_matrix_path() {
        if !available() {
            return;
        }
        for &(n, h, w, cin, cout, k, stride) in &[
            (1, 17, 15, 3, 32, 3, 2),
            (2, 9, 9, 16, 40, 5, 1),
            (1, 2, 2, 24, 8, 5, 2),
            (1, 1, 1, 8, 33, 3, 1),
            (1, 30, 29, 12, 20, 3, 1),
            (1, 6, 60, 8, 40, 5, 2),
            (1, 5, 50, 3, 32, 3, 1),
            (1, 14, 14, 40, 64, 1, 2),
        ] {
            let g = Conv { n, h, w, cin, cout, k, stride };
            let x = values(n * h * w * cin, 7);
            let wt = values(k * k * cin * cout, 8);
            let bias = values(cout, 9);
            for act in [Act::None, Act::Relu6] {
                let pk = PackedPointwise::pack(&wt, &bias, k * k * cin, cout).expect("AVX-512 present");
                let mut got = vec![f32::NAN; n * g.oh() * g.ow() * cout];
                pk.forward_conv(&x, &g, act, &mut got);
                let mut want = vec![0f32; got.len()];
                conv::forward_act_into(&x, &wt, Some(&bias), act, &g, &mut want);
                let want: Vec<f64> = want.iter().map(|v| *v as f64).collect();
                let err = max_rel(&got, &want);
                assert!(err < 1e-5, "{g:?} {act:?}: relative error {err}");
            }
        }
    }
}
