//! Dense convolutions on NHWC data: 1x1 (a matrix product over all pixels of the batch) and kxk
//! (im2col per group of images, then a matrix product). Weights are laid out `[ky][kx][cin][cout]`,
//! i.e. a `(k*k*cin) x cout` matrix whose rows follow the im2col patch order.

use rayon::prelude::*;

use super::bn::{act_mut, Act};
use crate::buf::Buf;
use crate::mat::{gemm, par_gemm, par_gemm_reduce, par_gemm_then, View};
use crate::simd::add_to;

/// Geometry of one convolution with symmetric zero padding k/2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
}

impl Conv {
    pub fn pad(&self) -> usize {
        self.k / 2
    }
    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad() - self.k) / self.stride + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad() - self.k) / self.stride + 1
    }
    fn patch(&self) -> usize {
        self.k * self.k * self.cin
    }
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1
    }
    fn in_image(&self) -> usize {
        self.h * self.w * self.cin
    }
    fn out_pixels(&self) -> usize {
        self.oh() * self.ow()
    }
    /// Images per im2col task: a patch matrix of about 1 MB.
    fn images_per_task(&self) -> usize {
        let per_image = self.out_pixels() * self.patch();
        (262_144 / per_image.max(1)).clamp(1, self.n.max(1))
    }
}

/// The patch matrix of images `lo..hi`: one row per output pixel, `k*k*cin` columns.
fn im2col(x: &[f32], g: &Conv, lo: usize, hi: usize) -> Buf {
    let (oh, ow, k, cin, s, p) = (g.oh(), g.ow(), g.k, g.cin, g.stride, g.pad() as isize);
    let patch = g.patch();
    // Zeros where the patch falls on the padding.
    let mut col = Buf::zeros((hi - lo) * oh * ow * patch);
    for (i, b) in (lo..hi).enumerate() {
        let img = &x[b * g.in_image()..(b + 1) * g.in_image()];
        for oy in 0..oh {
            for ox in 0..ow {
                let row = &mut col[((i * oh + oy) * ow + ox) * patch..][..patch];
                for ky in 0..k {
                    let iy = (oy * s + ky) as isize - p;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox * s + kx) as isize - p;
                        if ix < 0 || ix >= g.w as isize {
                            continue;
                        }
                        let src = (iy as usize * g.w + ix as usize) * cin;
                        row[(ky * k + kx) * cin..][..cin].copy_from_slice(&img[src..src + cin]);
                    }
                }
            }
        }
    }
    col
}

/// Adds the patch-matrix gradient of images `lo..hi` into their input gradient `dx_part`.
fn col2im(dcol: &[f32], g: &Conv, count: usize, dx_part: &mut [f32]) {
    let (oh, ow, k, cin, s, p) = (g.oh(), g.ow(), g.k, g.cin, g.stride, g.pad() as isize);
    let patch = g.patch();
    for i in 0..count {
        let img = &mut dx_part[i * g.in_image()..(i + 1) * g.in_image()];
        for oy in 0..oh {
            for ox in 0..ow {
                let row = &dcol[((i * oh + oy) * ow + ox) * patch..][..patch];
                for ky in 0..k {
                    let iy = (oy * s + ky) as isize - p;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    for kx in 0..k {
                        let ix = (ox * s + kx) as isize - p;
                        if ix < 0 || ix >= g.w as isize {
                            continue;
                        }
                        let dst = (iy as usize * g.w + ix as usize) * cin;
                        add_to(&mut img[dst..dst + cin], &row[(ky * k + kx) * cin..][..cin]);
                    }
                }
            }
        }
    }
}

/// y = conv(x, w) (+ bias), `n x oh x ow x cout`.
pub fn forward(x: &[f32], wt: &[f32], bias: Option<&[f32]>, g: &Conv) -> Buf {
    let mut y = Buf::uninit(g.n * g.out_pixels() * g.cout);
    forward_into(x, wt, bias, g, &mut y);
    y
}

/// [`forward`] into a caller's buffer.
pub fn forward_into(x: &[f32], wt: &[f32], bias: Option<&[f32]>, g: &Conv, y: &mut [f32]) {
    forward_act_into(x, wt, bias, Act::None, g, y)
}

/// [`forward_into`] with an activation applied to each block of output rows while it is in
/// cache (inference).
pub fn forward_act_into(x: &[f32], wt: &[f32], bias: Option<&[f32]>, act: Act, g: &Conv, y: &mut [f32]) {
    assert_eq!(x.len(), g.n * g.in_image(), "conv input size");
    assert_eq!(y.len(), g.n * g.out_pixels() * g.cout, "conv output size");
    let w = View::rows(wt, g.patch(), g.cout);
    if let Some(b) = bias {
        y.par_chunks_mut(g.cout * 256)
            .for_each(|rows| rows.chunks_exact_mut(g.cout).for_each(|r| r.copy_from_slice(b)));
    }
    if g.pointwise() {
        let x = View::rows(x, g.n * g.in_image() / g.cin, g.cin);
        return par_gemm_then(y, x, w, bias.is_some(), |rows| act_mut(rows, act));
    }
    let per = g.images_per_task();
    let rows = g.out_pixels() * g.cout;
    y.par_chunks_mut(per * rows).enumerate().for_each(|(t, out)| {
        let lo = t * per;
        let hi = lo + out.len() / rows;
        let col = im2col(x, g, lo, hi);
        gemm(out, View::rows(&col, (hi - lo) * g.out_pixels(), g.patch()), w, bias.is_some());
        act_mut(out, act);
    });
}

/// Weight gradient (added to `dw`) and, when `need_dx`, the input gradient.
pub fn backward(x: &[f32], wt: &[f32], dy: &[f32], g: &Conv, dw: &mut [f32], need_dx: bool) -> Option<Buf> {
    let m = g.n * g.out_pixels();
    let dyv = View::rows(dy, m, g.cout);
    if g.pointwise() {
        par_gemm_reduce(dw, View::rows(x, m, g.cin).t(), dyv, true);
        return need_dx.then(|| {
            let mut dx = Buf::uninit(g.n * g.in_image());
            par_gemm(&mut dx, dyv, View::rows(wt, g.cin, g.cout).t(), false);
            dx
        });
    }
    let per = g.images_per_task();
    let tasks: Vec<(usize, usize)> = (0..g.n.div_ceil(per)).map(|t| (t * per, ((t + 1) * per).min(g.n))).collect();
    let mut dx = if need_dx { Buf::zeros(g.n * g.in_image()) } else { Buf::default() };
    let dx_parts: Vec<&mut [f32]> = if need_dx {
        dx.chunks_mut(per * g.in_image()).collect()
    } else {
        tasks.iter().map(|_| Default::default()).collect()
    };
    let wt_t = View::rows(wt, g.patch(), g.cout).t();
    let parts: Vec<Vec<f32>> = tasks
        .into_par_iter()
        .zip(dx_parts)
        .map(|((lo, hi), dx_part)| {
            let col = im2col(x, g, lo, hi);
            let rows = (hi - lo) * g.out_pixels();
            let dy_part = View::rows(&dy[lo * g.out_pixels() * g.cout..hi * g.out_pixels() * g.cout], rows, g.cout);
            let mut acc = vec![0f32; g.patch() * g.cout];
            gemm(&mut acc, View::rows(&col, rows, g.patch()).t(), dy_part, false);
            if need_dx {
                let mut dcol = col;
                gemm(&mut dcol, dy_part, wt_t, false);
                col2im(&dcol, g, hi - lo, dx_part);
            }
            acc
        })
        .collect();
    for p in &parts {
        add_to(dw, p);
    }
    need_dx.then_some(dx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{max_rel, values};

    fn direct(x: &[f32], wt: &[f32], dy: &[f32], g: &Conv) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let (oh, ow, k, s, p) = (g.oh(), g.ow(), g.k, g.stride as isize, g.pad() as isize);
        let mut y = vec![0f64; g.n * oh * ow * g.cout];
        let mut dx = vec![0f64; x.len()];
        let mut dw = vec![0f64; wt.len()];
        for b in 0..g.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for co in 0..g.cout {
                        let yi = ((b * oh + oy) * ow + ox) * g.cout + co;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = oy as isize * s + ky as isize - p;
                                let ix = ox as isize * s + kx as isize - p;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                for ci in 0..g.cin {
                                    let xi = ((b * g.h + iy as usize) * g.w + ix as usize) * g.cin + ci;
                                    let wi = ((ky * k + kx) * g.cin + ci) * g.cout + co;
                                    y[yi] += x[xi] as f64 * wt[wi] as f64;
                                    dx[xi] += dy[yi] as f64 * wt[wi] as f64;
                                    dw[wi] += dy[yi] as f64 * x[xi] as f64;
                                }
                            }
                        }
                    }
                }
            }
        }
        (y, dx, dw)
    }

    #[test]
    fn matches_direct_f64_for_pointwise_stem_and_kxk() {
        for &(n, h, w, cin, cout, k, stride) in &[
            (3, 5, 5, 7, 9, 1, 1),
            (2, 9, 9, 3, 8, 3, 2),
            (2, 8, 8, 6, 5, 3, 1),
            (3, 7, 7, 4, 6, 5, 2),
            (40, 4, 4, 16, 24, 1, 1),
        ] {
            let g = Conv { n, h, w, cin, cout, k, stride };
            let x = values(n * h * w * cin, 1);
            let wt = values(k * k * cin * cout, 2);
            let dy = values(n * g.oh() * g.ow() * cout, 3);
            let (y64, dx64, dw64) = direct(&x, &wt, &dy, &g);
            assert!(max_rel(&forward(&x, &wt, None, &g), &y64) < 1e-5, "forward {g:?}");
            let mut dw = vec![0f32; wt.len()];
            let dx = backward(&x, &wt, &dy, &g, &mut dw, true).expect("dx asked for");
            assert!(max_rel(&dx, &dx64) < 1e-5, "dx {g:?}");
            assert!(max_rel(&dw, &dw64) < 1e-5, "dw {g:?}");
            let bias = values(cout, 4);
            let with_bias = forward(&x, &wt, Some(&bias), &g);
            let plain = forward(&x, &wt, None, &g);
            for (i, (a, b)) in with_bias.iter().zip(plain.iter()).enumerate() {
                assert!((a - b - bias[i % cout]).abs() < 1e-5, "bias {g:?}");
            }
        }
    }
}
