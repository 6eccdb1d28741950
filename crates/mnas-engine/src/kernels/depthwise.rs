//! Depthwise convolution (one kxk filter per channel, symmetric zero padding k/2) on NHWC data.
//! Weights are laid out `[ky][kx][c]`. Forward and input gradient run one output (or input) row
//! per task; the weight gradient reduces over images with one accumulator per task.

use rayon::prelude::*;

use super::bn::{act_mut, Act};
use crate::buf::Buf;
use crate::simd::{madd, simd_fn};

/// Geometry of one depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dw {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub c: usize,
    pub k: usize,
    pub stride: usize,
}

impl Dw {
    pub fn pad(&self) -> usize {
        self.k / 2
    }
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad() - self.k) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad() - self.k) / self.stride + 1
    }
    fn in_image(&self) -> usize {
        self.h * self.w * self.c
    }
    fn out_image(&self) -> usize {
        self.oh() * self.ow() * self.c
    }
    /// Output columns whose input column `ox*s + kx - pad` lies inside the image: `lo..hi`.
    fn ox_range(&self, kx: usize) -> (usize, usize) {
        let (s, p) = (self.stride, self.pad());
        let lo = if kx >= p { 0 } else { (p - kx).div_ceil(s) };
        let hi = if self.w + p > kx { ((self.w - 1 + p - kx) / s + 1).min(self.ow()) } else { 0 };
        (lo, hi.max(lo))
    }
    pub(crate) fn iy(&self, oy: usize, ky: usize) -> Option<usize> {
        let iy = (oy * self.stride + ky) as isize - self.pad() as isize;
        (iy >= 0 && (iy as usize) < self.h).then_some(iy as usize)
    }
}

simd_fn! {
    /// One output row `oy` of one image: `out` (ow x c) = sum over taps of x * w, plus `bias`.
    fn forward_row(x: &[f32], wt: &[f32], bias: Option<&[f32]>, g: &Dw, oy: usize, out: &mut [f32]) {
        let (c, k, s, p) = (g.c, g.k, g.stride, g.pad());
        match bias {
            Some(b) => out.chunks_exact_mut(c).for_each(|o| o.copy_from_slice(b)),
            None => out.fill(0.0),
        }
        for ky in 0..k {
            let Some(iy) = g.iy(oy, ky) else { continue };
            let row = &x[iy * g.w * c..(iy + 1) * g.w * c];
            for kx in 0..k {
                let wk = &wt[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                let (lo, hi) = g.ox_range(kx);
                for ox in lo..hi {
                    let ix = ox * s + kx - p;
                    let xi = &row[ix * c..(ix + 1) * c];
                    let o = &mut out[ox * c..(ox + 1) * c];
                    for ((o, &xv), &wv) in o.iter_mut().zip(xi).zip(wk) {
                        *o = madd::<FMA>(xv, wv, *o);
                    }
                }
            }
        }
    }
}

/// y = depthwise(x, w) (+ bias per channel).
pub fn forward(x: &[f32], wt: &[f32], bias: Option<&[f32]>, g: &Dw) -> Buf {
    let mut y = Buf::uninit(g.n * g.out_image());
    forward_into(x, wt, bias, g, &mut y);
    y
}

/// [`forward`] into a caller's buffer of `n * oh * ow * c`.
pub fn forward_into(x: &[f32], wt: &[f32], bias: Option<&[f32]>, g: &Dw, y: &mut [f32]) {
    forward_act_into(x, wt, bias, Act::None, g, y)
}

/// [`forward_into`] with an activation applied to each row while it is in cache (inference).
pub fn forward_act_into(x: &[f32], wt: &[f32], bias: Option<&[f32]>, act: Act, g: &Dw, y: &mut [f32]) {
    let (oh, row) = (g.oh(), g.ow() * g.c);
    assert_eq!(y.len(), g.n * oh * row, "depthwise output size");
    assert_eq!(x.len(), g.n * g.in_image(), "depthwise input size");
    let rows_per_task = (4096 / row.max(1)).max(1);
    let fast = super::avx512::available();
    y.par_chunks_mut(row * rows_per_task).enumerate().for_each(|(t, block)| {
        for (i, out) in block.chunks_exact_mut(row).enumerate() {
            let r = t * rows_per_task + i;
            let (b, oy) = (r / oh, r % oh);
            let img = &x[b * g.in_image()..(b + 1) * g.in_image()];
            #[cfg(target_arch = "x86_64")]
            if fast {
                // SAFETY: `available()` checked AVX-512F; `img` is one whole input image and
                // `out` one whole output row (asserted above).
                unsafe { forward_row_avx512(img, wt, bias, act, g, oy, out) };
                continue;
            }
            let _ = fast;
            forward_row(img, wt, bias, g, oy, out);
            act_mut(out, act);
        }
    });
}

/// [`forward_row`] with the activation, for AVX-512: a 16-channel slice of 8 neighbouring
/// output pixels stays in 8 registers over all k x k taps and is stored once. Eight independent
/// sums hide the FMA latency that a single running sum per pixel waits on at every tap; the
/// portable row loop instead reads and writes the output row once per tap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn forward_row_avx512(
    x: &[f32],
    wt: &[f32],
    bias: Option<&[f32]>,
    act: Act,
    g: &Dw,
    oy: usize,
    out: &mut [f32],
) {
    assert!(x.len() == g.in_image() && out.len() == g.ow() * g.c && wt.len() == g.k * g.k * g.c);
    let rows: Vec<InputRow> =
        (0..g.k).filter_map(|ky| g.iy(oy, ky).map(|iy| (ky, x.as_ptr().add(iy * g.w * g.c)))).collect();
    row_from_avx512(&rows, wt, bias, act, g, out);
}

/// A kernel row `ky` and the start of the input row (`w x c`) it reads.
pub(crate) type InputRow = (usize, *const f32);

/// One output row from the input rows its kernel rows read (those inside the image): the rows
/// may live anywhere, such as a ring of freshly expanded rows (see `kernels::fused`).
///
/// # Safety
/// The CPU has AVX-512F; each row pointer addresses `w * c` floats; `out` holds `ow * c`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn row_from_avx512(
    rows: &[InputRow],
    wt: &[f32],
    bias: Option<&[f32]>,
    act: Act,
    g: &Dw,
    out: &mut [f32],
) {
    let (c, k, s, p, w, ow) = (g.c, g.k, g.stride, g.pad(), g.w, g.ow());
    assert!(out.len() == ow * c && wt.len() == k * k * c);
    // Output pixels whose taps all fall inside the row: p <= ox*s and ox*s + k - 1 - p < w.
    let inner_lo = p.div_ceil(s).min(ow);
    let inner_hi = if w + p >= k { ((w + p - k) / s + 1).min(ow) } else { 0 }.max(inner_lo);
    // Channel groups outermost, then pixels, then the group's 16-channel blocks: the taps of a
    // few pixels stay in L1 while every block of the group reads them. A whole-channel tile of a
    // 5x5 kernel (5 rows x 12 pixels x 192 channels: 46 KB, plus 19 KB of weights) would not fit
    // in L1; a group of 64 channels (15 KB + 6 KB) does.
    for group in (0..c).step_by(CHANNEL_GROUP) {
        let channels = group..(group + CHANNEL_GROUP).min(c);
        let edge = |lo: usize, hi: usize, out: &mut [f32]| {
            for ox in (lo..hi).step_by(8) {
                pixels(wt, rows, bias, act, g, channels.clone(), ox, (hi - ox).min(8), false, out);
            }
        };
        edge(0, inner_lo, out);
        if inner_hi - inner_lo >= 8 {
            // Eight at a time; the last eight end where the interior ends and may overlap the
            // eight before (recomputed, the same values): edge pixels take the slow path, which
            // loads every tap on its own and tests its bounds, and with whole tiles of eight from
            // the row's start a quarter of a 56-wide row took it.
            let mut ox = inner_lo;
            loop {
                pixels(wt, rows, bias, act, g, channels.clone(), ox, 8, true, out);
                if ox + 8 >= inner_hi {
                    break;
                }
                ox = (ox + 8).min(inner_hi - 8);
            }
        } else {
            edge(inner_lo, inner_hi, out);
        }
        edge(inner_hi, ow, out);
    }
}

/// Output pixels `ox..ox + count` (at most 8) of the channels `channels`, 16 at a time; `inner`:
/// all eight pixels' taps fall inside the row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn pixels(
    wt: &[f32],
    rows: &[InputRow],
    bias: Option<&[f32]>,
    act: Act,
    g: &Dw,
    channels: std::ops::Range<usize>,
    ox: usize,
    count: usize,
    inner: bool,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let c = g.c;
    for cb in channels.step_by(16) {
        let mask: u16 = if c - cb >= 16 { u16::MAX } else { ((1u32 << (c - cb)) - 1) as u16 };
        let start = match bias {
            Some(b) => _mm512_maskz_loadu_ps(mask, b.as_ptr().add(cb)),
            None => _mm512_setzero_ps(),
        };
        if inner {
            match (g.k, g.stride) {
                (3, 1) => dw_eight::<3, 1>(wt, rows, g, cb, mask, start, act, ox, out),
                (3, 2) => dw_eight::<3, 2>(wt, rows, g, cb, mask, start, act, ox, out),
                (5, 1) => dw_eight::<5, 1>(wt, rows, g, cb, mask, start, act, ox, out),
                (5, 2) => dw_eight::<5, 2>(wt, rows, g, cb, mask, start, act, ox, out),
                (7, 1) => dw_eight::<7, 1>(wt, rows, g, cb, mask, start, act, ox, out),
                _ => dw_pixels(wt, rows, g, cb, mask, start, act, ox, 8, out),
            }
        } else {
            dw_pixels(wt, rows, g, cb, mask, start, act, ox, count, out);
        }
    }
}

/// Channels of one pass over an output row (a multiple of the 16 lanes).
const CHANNEL_GROUP: usize = 64;

/// Eight interior output pixels of one 16-channel slice for a kernel size and stride known at
/// compile time: each kernel row's inputs (7 * S + K pixels) are loaded into registers once and
/// shared by the taps that read them, instead of once per tap (8 * K loads).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn dw_eight<const K: usize, const S: usize>(
    wt: &[f32],
    rows: &[InputRow],
    g: &Dw,
    cb: usize,
    mask: u16,
    start: std::arch::x86_64::__m512,
    act: Act,
    ox: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (c, p) = (g.c, g.pad());
    let mut acc = [start; 8];
    let mut xs = [_mm512_setzero_ps(); 21];
    for &(ky, row) in rows {
        let base = row.add((ox * S - p) * c + cb);
        for (t, v) in xs.iter_mut().enumerate().take(7 * S + K) {
            *v = _mm512_maskz_loadu_ps(mask, base.add(t * c));
        }
        let wrow = wt.as_ptr().add(ky * K * c + cb);
        for kx in 0..K {
            let wv = _mm512_maskz_loadu_ps(mask, wrow.add(kx * c));
            for (j, a) in acc.iter_mut().enumerate() {
                *a = _mm512_fmadd_ps(xs[j * S + kx], wv, *a);
            }
        }
    }
    for (j, a) in acc.into_iter().enumerate() {
        _mm512_mask_storeu_ps(out.as_mut_ptr().add((ox + j) * c + cb), mask, super::avx512::activate(a, act));
    }
}

/// Output pixels `ox..ox + count` (at most 8) of one 16-channel slice, any kernel and stride,
/// skipping the taps that fall outside the row: the edges of every row and whole rows of maps
/// narrower than 8 + the kernel. The pixels' sums are independent, so their FMAs overlap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn dw_pixels(
    wt: &[f32],
    rows: &[InputRow],
    g: &Dw,
    cb: usize,
    mask: u16,
    start: std::arch::x86_64::__m512,
    act: Act,
    ox: usize,
    count: usize,
    out: &mut [f32],
) {
    use std::arch::x86_64::*;
    let (c, k, s, p, w) = (g.c, g.k, g.stride, g.pad(), g.w);
    let count = count.min(8);
    let mut acc = [start; 8];
    for &(ky, row) in rows {
        let xrow = row.add(cb);
        let wrow = wt.as_ptr().add(ky * k * c + cb);
        for kx in 0..k {
            let wv = _mm512_maskz_loadu_ps(mask, wrow.add(kx * c));
            for (j, a) in acc.iter_mut().enumerate().take(count) {
                let ix = ((ox + j) * s + kx).wrapping_sub(p);
                if ix < w {
                    *a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, xrow.add(ix * c)), wv, *a);
                }
            }
        }
    }
    for (j, a) in acc.into_iter().enumerate().take(count) {
        _mm512_mask_storeu_ps(out.as_mut_ptr().add((ox + j) * c + cb), mask, super::avx512::activate(a, act));
    }
}

simd_fn! {
    /// One input-gradient row `iy` of one image, gathered from the output rows that read it.
    fn backward_x_row(dy: &[f32], wt: &[f32], g: &Dw, iy: usize, out: &mut [f32]) {
        let (c, k, s, p, ow) = (g.c, g.k, g.stride, g.pad(), g.ow());
        out.fill(0.0);
        for ky in 0..k {
            let t = iy as isize + p as isize - ky as isize;
            if t < 0 || !(t as usize).is_multiple_of(s) || t as usize / s >= g.oh() {
                continue;
            }
            let oy = t as usize / s;
            let drow = &dy[oy * ow * c..(oy + 1) * ow * c];
            for kx in 0..k {
                let wk = &wt[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                let (lo, hi) = g.ox_range(kx);
                for ox in lo..hi {
                    let ix = ox * s + kx - p;
                    let d = &drow[ox * c..(ox + 1) * c];
                    let o = &mut out[ix * c..(ix + 1) * c];
                    for ((o, &dv), &wv) in o.iter_mut().zip(d).zip(wk) {
                        *o = madd::<FMA>(dv, wv, *o);
                    }
                }
            }
        }
    }
}

/// dx from dy.
pub fn backward_x(dy: &[f32], wt: &[f32], g: &Dw) -> Buf {
    let row = g.w * g.c;
    let mut dx = Buf::uninit(g.n * g.in_image());
    let rows_per_task = (4096 / row.max(1)).max(1);
    dx.par_chunks_mut(row * rows_per_task).enumerate().for_each(|(t, block)| {
        for (i, out) in block.chunks_exact_mut(row).enumerate() {
            let r = t * rows_per_task + i;
            let (b, iy) = (r / g.h, r % g.h);
            backward_x_row(&dy[b * g.out_image()..(b + 1) * g.out_image()], wt, g, iy, out);
        }
    });
    dx
}

simd_fn! {
    /// Adds one image's contribution to the weight gradient `acc` ([ky][kx][c]).
    fn backward_w_image(x: &[f32], dy: &[f32], g: &Dw, acc: &mut [f32]) {
        let (c, k, s, p, ow) = (g.c, g.k, g.stride, g.pad(), g.ow());
        for oy in 0..g.oh() {
            let drow = &dy[oy * ow * c..(oy + 1) * ow * c];
            for ky in 0..k {
                let Some(iy) = g.iy(oy, ky) else { continue };
                let row = &x[iy * g.w * c..(iy + 1) * g.w * c];
                for kx in 0..k {
                    let a = &mut acc[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                    let (lo, hi) = g.ox_range(kx);
                    for ox in lo..hi {
                        let ix = ox * s + kx - p;
                        let xi = &row[ix * c..(ix + 1) * c];
                        let d = &drow[ox * c..(ox + 1) * c];
                        for ((a, &xv), &dv) in a.iter_mut().zip(xi).zip(d) {
                            *a = madd::<FMA>(xv, dv, *a);
                        }
                    }
                }
            }
        }
    }
}

/// dw (`[ky][kx][c]`) summed over the batch, added to `dw`.
pub fn backward_w(x: &[f32], dy: &[f32], g: &Dw, dw: &mut [f32]) {
    let parts: Vec<Vec<f32>> = super::ranges(g.n, super::tasks())
        .into_par_iter()
        .map(|(lo, hi)| {
            let mut acc = vec![0f32; g.k * g.k * g.c];
            for b in lo..hi {
                backward_w_image(
                    &x[b * g.in_image()..(b + 1) * g.in_image()],
                    &dy[b * g.out_image()..(b + 1) * g.out_image()],
                    g,
                    &mut acc,
                );
            }
            acc
        })
        .collect();
    for p in &parts {
        crate::simd::add_to(dw, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{max_rel, values};

    /// Direct f64 forward, input gradient and weight gradient.
    fn direct(x: &[f32], wt: &[f32], dy: &[f32], g: &Dw) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (oh, ow, c, k, s, p) = (g.oh(), g.ow(), g.c, g.k, g.stride as isize, g.pad() as isize);
        let mut y = vec![0f64; g.n * oh * ow * c];
        let mut dx = vec![0f64; x.len()];
        let mut dw = vec![0f64; wt.len()];
        for b in 0..g.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let yi = ((b * oh + oy) * ow + ox) * c + ch;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = oy as isize * s + ky as isize - p;
                                let ix = ox as isize * s + kx as isize - p;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let xi = ((b * g.h + iy as usize) * g.w + ix as usize) * c + ch;
                                let wi = (ky * k + kx) * c + ch;
                                y[yi] += x[xi] as f64 * wt[wi] as f64;
                                dx[xi] += dy[yi] as f64 * wt[wi] as f64;
                                dw[wi] += dy[yi] as f64 * x[xi] as f64;
                            }
                        }
                    }
                }
            }
        }
        (y, dx, dw)
    }

    /// The AVX-512 rows (taken on CPUs that have it) against the portable ones, with bias and
    /// every activation, on channel counts around the 16-lane blocks.
    #[test]
    fn avx512_rows_match_the_portable_rows() {
        // Rows wide enough for 8-pixel tiles of every (kernel, stride) with a kernel of its own,
        // maps smaller than the kernel, and channels in several groups.
        for &(n, h, w, c, k, stride) in &[
            (1, 9, 17, 17, 7, 1),
            (1, 9, 35, 16, 7, 2),
            (2, 14, 30, 40, 5, 2),
            (1, 6, 20, 24, 5, 1),
            (1, 5, 19, 8, 3, 1),
            (1, 7, 40, 48, 3, 2),
            (1, 2, 2, 33, 5, 2),
            // An interior of 7 pixels (no tile of eight fits), and a 56-wide row whose last
            // eight interior pixels overlap the eight before them.
            (1, 4, 9, 20, 3, 1),
            (1, 3, 56, 32, 3, 1),
            // More channels than one group: two whole groups and a partial one (masked lanes).
            (1, 6, 21, 152, 5, 1),
            (1, 5, 18, 200, 3, 2),
        ] {
            let g = Dw { n, h, w, c, k, stride };
            let x: Vec<f32> = values(n * h * w * c, 4).iter().map(|v| v * 4.0).collect();
            let wt = values(k * k * c, 5);
            let bias = values(c, 6);
            for act in [Act::None, Act::Relu, Act::Relu6] {
                let mut got = vec![f32::NAN; n * g.oh() * g.ow() * c];
                forward_act_into(&x, &wt, Some(&bias), act, &g, &mut got);
                let mut want = Vec::new();
                for b in 0..n {
                    for oy in 0..g.oh() {
                        let mut row = vec![0f32; g.ow() * c];
                        forward_row(&x[b * g.in_image()..(b + 1) * g.in_image()], &wt, Some(&bias), &g, oy, &mut row);
                        act_mut(&mut row, act);
                        want.extend(row.iter().map(|v| *v as f64));
                    }
                }
                assert!(max_rel(&got, &want) < 1e-6, "{g:?} {act:?}");
            }
        }
    }

    #[test]
    fn matches_direct_f64_for_every_kernel_stride_and_odd_size() {
        for &(n, h, w, c, k, stride) in
            &[(2, 7, 5, 3, 3, 1), (3, 8, 8, 16, 3, 2), (2, 9, 9, 24, 5, 2), (1, 2, 2, 40, 5, 1), (4, 1, 1, 8, 3, 2)]
        {
            let g = Dw { n, h, w, c, k, stride };
            let x = values(n * h * w * c, 1);
            let wt = values(k * k * c, 2);
            let dy = values(n * g.oh() * g.ow() * c, 3);
            let (y64, dx64, dw64) = direct(&x, &wt, &dy, &g);
            assert!(max_rel(&forward(&x, &wt, None, &g), &y64) < 1e-6, "forward {g:?}");
            assert!(max_rel(&backward_x(&dy, &wt, &g), &dx64) < 1e-6, "dx {g:?}");
            let mut dw = vec![0f32; wt.len()];
            backward_w(&x, &dy, &g, &mut dw);
            assert!(max_rel(&dw, &dw64) < 1e-6, "dw {g:?}");
        }
    }
}
