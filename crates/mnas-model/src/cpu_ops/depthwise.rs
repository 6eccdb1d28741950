//! Depthwise convolution (groups = channels, one kxk filter per channel) on contiguous NCHW f32
//! slices: forward, input gradient and weight gradient. burn-flex 0.21 runs the grouped weight
//! gradient as one convolution per group (DESIGN §9); here each pass is one sweep over the data,
//! split across the rayon pool by image plane (forward, dx) or by channel (dw).

use rayon::prelude::*;

/// Geometry of one depthwise convolution with symmetric zero padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DwShape {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl DwShape {
    pub fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    pub fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }

    /// Output columns `ox` in lo..hi whose input column `ox*s + kx - pad` lies inside the image,
    /// with that first input column; `None` when there are none.
    fn ox_range(&self, kx: usize) -> Option<(usize, usize, usize)> {
        let (s, p, ow) = (self.stride, self.pad, self.out_w());
        let lo = if kx >= p { 0 } else { (p - kx).div_ceil(s) };
        // One past the largest ox with ox*s + kx - p <= w - 1.
        let hi = if self.w + p > kx { ((self.w - 1 + p - kx) / s + 1).min(ow) } else { 0 };
        (lo < hi).then(|| (lo, hi, lo * s + kx - p))
    }

    fn iy(&self, oy: usize, ky: usize) -> Option<usize> {
        let iy = (oy * self.stride + ky) as isize - self.pad as isize;
        (iy >= 0 && (iy as usize) < self.h).then_some(iy as usize)
    }
}

/// Work per rayon task: enough elements that scheduling stays below a few percent.
fn min_planes(plane: usize) -> usize {
    (8192 / plane.max(1)).max(1)
}

/// y[n, c] = sum_{ky,kx} w[c, ky, kx] * x[n, c, oy*s + ky - p, ox*s + kx - p].
pub fn forward(x: &[f32], weight: &[f32], g: &DwShape) -> Vec<f32> {
    let (oh, ow, kk) = (g.out_h(), g.out_w(), g.k * g.k);
    let mut y = vec![0f32; g.n * g.c * oh * ow];
    y.par_chunks_mut(oh * ow).with_min_len(min_planes(oh * ow)).enumerate().for_each(|(plane, out)| {
        let ch = plane % g.c;
        let xp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
        let wk = &weight[ch * kk..(ch + 1) * kk];
        for oy in 0..oh {
            let orow = &mut out[oy * ow..(oy + 1) * ow];
            for ky in 0..g.k {
                let Some(iy) = g.iy(oy, ky) else { continue };
                let xrow = &xp[iy * g.w..(iy + 1) * g.w];
                for kx in 0..g.k {
                    let wv = wk[ky * g.k + kx];
                    let Some((lo, hi, start)) = g.ox_range(kx) else { continue };
                    axpy_strided(&mut orow[lo..hi], wv, xrow, start, g.stride);
                }
            }
        }
    });
    y
}

/// dx = the transpose of [`forward`] applied to dy.
pub fn backward_x(dy: &[f32], weight: &[f32], g: &DwShape) -> Vec<f32> {
    let (oh, ow, kk) = (g.out_h(), g.out_w(), g.k * g.k);
    let mut dx = vec![0f32; g.n * g.c * g.h * g.w];
    dx.par_chunks_mut(g.h * g.w).with_min_len(min_planes(oh * ow)).enumerate().for_each(|(plane, dxp)| {
        let ch = plane % g.c;
        let dyp = &dy[plane * oh * ow..(plane + 1) * oh * ow];
        let wk = &weight[ch * kk..(ch + 1) * kk];
        for oy in 0..oh {
            let dyrow = &dyp[oy * ow..(oy + 1) * ow];
            for ky in 0..g.k {
                let Some(iy) = g.iy(oy, ky) else { continue };
                let dxrow = &mut dxp[iy * g.w..(iy + 1) * g.w];
                for kx in 0..g.k {
                    let wv = wk[ky * g.k + kx];
                    let Some((lo, hi, start)) = g.ox_range(kx) else { continue };
                    if g.stride == 1 {
                        for (d, &v) in dxrow[start..start + (hi - lo)].iter_mut().zip(&dyrow[lo..hi]) {
                            *d += wv * v;
                        }
                    } else {
                        for (i, &v) in dyrow[lo..hi].iter().enumerate() {
                            dxrow[start + i * g.stride] += wv * v;
                        }
                    }
                }
            }
        }
    });
    dx
}

/// dw[c, ky, kx] = sum over batch and output positions of dy * the input it multiplied.
/// Accumulated per image row in f32, across rows in f64.
pub fn backward_w(x: &[f32], dy: &[f32], g: &DwShape) -> Vec<f32> {
    let (oh, ow, kk) = (g.out_h(), g.out_w(), g.k * g.k);
    let mut dw = vec![0f32; g.c * kk];
    dw.par_chunks_mut(kk).enumerate().for_each(|(ch, dwc)| {
        let mut acc = vec![0f64; kk];
        for b in 0..g.n {
            let plane = b * g.c + ch;
            let xp = &x[plane * g.h * g.w..(plane + 1) * g.h * g.w];
            let dyp = &dy[plane * oh * ow..(plane + 1) * oh * ow];
            for oy in 0..oh {
                let dyrow = &dyp[oy * ow..(oy + 1) * ow];
                for ky in 0..g.k {
                    let Some(iy) = g.iy(oy, ky) else { continue };
                    let xrow = &xp[iy * g.w..(iy + 1) * g.w];
                    for kx in 0..g.k {
                        let Some((lo, hi, start)) = g.ox_range(kx) else { continue };
                        let dot: f32 = if g.stride == 1 {
                            dyrow[lo..hi].iter().zip(&xrow[start..start + (hi - lo)]).map(|(a, b)| a * b).sum()
                        } else {
                            dyrow[lo..hi].iter().enumerate().map(|(i, a)| a * xrow[start + i * g.stride]).sum()
                        };
                        acc[ky * g.k + kx] += dot as f64;
                    }
                }
            }
        }
        for (d, a) in dwc.iter_mut().zip(acc) {
            *d = a as f32;
        }
    });
    dw
}

/// out[i] += a * x[start + i * stride]; the stride-1 case is a plain loop the compiler vectorises.
fn axpy_strided(out: &mut [f32], a: f32, x: &[f32], start: usize, stride: usize) {
    if stride == 1 {
        let len = out.len();
        for (o, &v) in out.iter_mut().zip(&x[start..start + len]) {
            *o += a * v;
        }
    } else {
        for (i, o) in out.iter_mut().enumerate() {
            *o += a * x[start + i * stride];
        }
    }
}
