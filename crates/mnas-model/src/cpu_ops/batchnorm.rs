//! Train-mode batch normalisation on contiguous NCHW f32 slices, forward and backward in closed
//! form. Statistics and the gradient's per-channel sums accumulate in f64 (PyTorch's CPU kernels
//! do too): f32 sums over thousands of activations flip ReLU masks downstream of low-variance BNs.

use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BnShape {
    pub n: usize,
    pub c: usize,
    /// h * w
    pub hw: usize,
}

impl BnShape {
    fn count(&self) -> f64 {
        (self.n * self.hw) as f64
    }
    fn plane<'a>(&self, t: &'a [f32], b: usize, ch: usize) -> &'a [f32] {
        let at = (b * self.c + ch) * self.hw;
        &t[at..at + self.hw]
    }
}

fn min_planes(hw: usize) -> usize {
    (8192 / hw.max(1)).max(1)
}

/// Per-channel batch mean and biased variance (two passes, f64).
pub fn stats(x: &[f32], g: &BnShape) -> (Vec<f64>, Vec<f64>) {
    (0..g.c)
        .into_par_iter()
        .map(|ch| {
            let sum: f64 = (0..g.n).map(|b| g.plane(x, b, ch).iter().map(|&v| v as f64).sum::<f64>()).sum();
            let mean = sum / g.count();
            let sq: f64 =
                (0..g.n).map(|b| g.plane(x, b, ch).iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>()).sum();
            (mean, sq / g.count())
        })
        .unzip()
}

/// y = (x - mean) * gamma / sqrt(var + eps) + beta.
pub fn forward(x: &[f32], g: &BnShape, mean: &[f64], invstd: &[f64], gamma: &[f32], beta: &[f32]) -> Vec<f32> {
    let scale: Vec<f32> = (0..g.c).map(|ch| (gamma[ch] as f64 * invstd[ch]) as f32).collect();
    let mut y = vec![0f32; x.len()];
    y.par_chunks_mut(g.hw).with_min_len(min_planes(g.hw)).enumerate().for_each(|(plane, out)| {
        let ch = plane % g.c;
        let (m, a, s) = (mean[ch] as f32, scale[ch], beta[ch]);
        for (o, &v) in out.iter_mut().zip(&x[plane * g.hw..(plane + 1) * g.hw]) {
            *o = (v - m) * a + s;
        }
    });
    y
}

/// Gradients of the loss w.r.t. x, gamma and beta given dy.
pub fn backward(
    x: &[f32],
    dy: &[f32],
    g: &BnShape,
    mean: &[f64],
    invstd: &[f64],
    gamma: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    // dbeta = sum dy; dgamma = sum dy * xhat, xhat = (x - mean) * invstd.
    let (dbeta, dgamma): (Vec<f64>, Vec<f64>) = (0..g.c)
        .into_par_iter()
        .map(|ch| {
            let (mut s, mut sx) = (0f64, 0f64);
            for b in 0..g.n {
                let (xp, dp) = (g.plane(x, b, ch), g.plane(dy, b, ch));
                let mut ps = 0f64;
                let mut psx = 0f64;
                for (&xv, &d) in xp.iter().zip(dp) {
                    ps += d as f64;
                    psx += d as f64 * (xv as f64 - mean[ch]);
                }
                s += ps;
                sx += psx;
            }
            (s, sx * invstd[ch])
        })
        .unzip();
    let m = g.count();
    // dx = gamma * invstd * (dy - dbeta/m - xhat * dgamma/m)
    //    = dy * a + (x - mean) * b + c per channel.
    let coef: Vec<(f32, f32, f32, f32)> = (0..g.c)
        .map(|ch| {
            let k = gamma[ch] as f64 * invstd[ch];
            let b = -k * dgamma[ch] / m * invstd[ch];
            let c = -k * dbeta[ch] / m;
            (mean[ch] as f32, k as f32, b as f32, c as f32)
        })
        .collect();
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(g.hw).with_min_len(min_planes(g.hw)).enumerate().for_each(|(plane, out)| {
        let (mu, a, b, c) = coef[plane % g.c];
        let range = plane * g.hw..(plane + 1) * g.hw;
        for ((o, &d), &xv) in out.iter_mut().zip(&dy[range.clone()]).zip(&x[range]) {
            *o = d * a + (xv - mu) * b + c;
        }
    });
    let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (dx, to32(dgamma), to32(dbeta))
}
