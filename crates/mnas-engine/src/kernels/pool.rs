//! Average pooling on NHWC data: the pooling skip (kernel = stride, ceil mode, each window averaged
//! over its cells inside the image, as PyTorch's `avg_pool2d(ceil_mode=True, padding=0)`), and the
//! global average pool before the classifier.

use rayon::prelude::*;

use crate::buf::Buf;
use crate::simd::{add_to, axpy, simd_fn};

/// Output size of the pooling skip.
pub fn pooled(size: usize, stride: usize) -> usize {
    size.div_ceil(stride)
}

/// AvgPool(kernel = stride = `s`, ceil mode) of `n` images `h x w x c`.
pub fn avg_pool(x: &[f32], n: usize, h: usize, w: usize, c: usize, s: usize) -> Buf {
    let (oh, ow) = (pooled(h, s), pooled(w, s));
    let mut y = Buf::uninit(n * oh * ow * c);
    // Several output rows per task: at 112x112 with 16 channels one row is 1 KB of output, less
    // than rayon's cost of handing it out.
    let rows_per_task = (8192 / (ow * c).max(1)).max(1);
    y.par_chunks_mut(rows_per_task * ow * c).enumerate().for_each(|(t, block)| {
        for (i, out) in block.chunks_exact_mut(ow * c).enumerate() {
            let r = t * rows_per_task + i;
            let (b, oy) = (r / oh, r % oh);
            let (y0, y1) = (oy * s, ((oy + 1) * s).min(h));
            pool_row(&x[(b * h + y0) * w * c..(b * h + y1) * w * c], w, c, s, out);
        }
    });
    y
}

simd_fn! {
    /// One output row of [`avg_pool`] from the `rows.len() / (w * c)` input rows of its windows:
    /// each window's cells are summed in order, then scaled once.
    fn pool_row(rows: &[f32], w: usize, c: usize, s: usize, out: &mut [f32]) {
        let height = rows.len() / (w * c);
        for (ox, o) in out.chunks_exact_mut(c).enumerate() {
            let (x0, x1) = (ox * s, ((ox + 1) * s).min(w));
            o.fill(0.0);
            for iy in 0..height {
                for ix in x0..x1 {
                    let cell = &rows[(iy * w + ix) * c..][..c];
                    for (a, &v) in o.iter_mut().zip(cell) {
                        *a += v;
                    }
                }
            }
            let inv = 1.0 / (height * (x1 - x0)) as f32;
            o.iter_mut().for_each(|a| *a *= inv);
        }
    }
}

/// Gradient of [`avg_pool`]: each input cell gets its window's gradient over the window's size.
pub fn avg_pool_backward(dy: &[f32], n: usize, h: usize, w: usize, c: usize, s: usize) -> Buf {
    let (oh, ow) = (pooled(h, s), pooled(w, s));
    let mut dx = Buf::zeros(n * h * w * c);
    dx.par_chunks_mut(w * c).enumerate().for_each(|(r, out)| {
        let (b, iy) = (r / h, r % h);
        let oy = iy / s;
        let rows = ((oy + 1) * s).min(h) - oy * s;
        for ix in 0..w {
            let ox = ix / s;
            let cols = ((ox + 1) * s).min(w) - ox * s;
            let d = &dy[((b * oh + oy) * ow + ox) * c..][..c];
            axpy(&mut out[ix * c..(ix + 1) * c], d, 1.0 / (rows * cols) as f32);
        }
    });
    dx
}

/// Mean over the `hw` pixels of each of `n` images: `n x c`.
pub fn global_mean(x: &[f32], n: usize, hw: usize, c: usize) -> Vec<f32> {
    let mut y = vec![0f32; n * c];
    y.par_chunks_mut(c).enumerate().for_each(|(b, out)| {
        for px in x[b * hw * c..(b + 1) * hw * c].chunks_exact(c) {
            add_to(out, px);
        }
        let inv = 1.0 / hw as f32;
        out.iter_mut().for_each(|v| *v *= inv);
    });
    y
}

/// Gradient of [`global_mean`]: `dy / hw` broadcast over the pixels.
pub fn global_mean_backward(dy: &[f32], n: usize, hw: usize, c: usize) -> Buf {
    let mut dx = Buf::uninit(n * hw * c);
    let inv = 1.0 / hw as f32;
    dx.par_chunks_mut(hw * c).enumerate().for_each(|(b, img)| {
        let d: Vec<f32> = dy[b * c..(b + 1) * c].iter().map(|v| v * inv).collect();
        img.chunks_exact_mut(c).for_each(|px| px.copy_from_slice(&d));
    });
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{max_rel, values};

    #[test]
    fn ceil_mode_windows_average_only_cells_inside() {
        // One 3x3 single-channel image, stride 2: windows of 4, 2, 2 and 1 cells.
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
        let y = avg_pool(&x, 1, 3, 3, 1, 2);
        assert_eq!(&y[..], &[3.0, 4.5, 7.5, 9.0]);
        let dx = avg_pool_backward(&[4.0, 2.0, 2.0, 1.0], 1, 3, 3, 1, 2);
        assert_eq!(&dx[..], &[1.0; 9]);
    }

    #[test]
    fn pooling_matches_direct_f64_with_ragged_windows_and_many_rows_per_task() {
        for &(n, h, w, c, s) in &[(2, 7, 9, 5, 2), (1, 112, 112, 16, 2), (1, 15, 14, 40, 3)] {
            let x = values(n * h * w * c, 3);
            let (oh, ow) = (pooled(h, s), pooled(w, s));
            let mut want = Vec::with_capacity(n * oh * ow * c);
            for b in 0..n {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ch in 0..c {
                            let (ys, xs) = (oy * s..((oy + 1) * s).min(h), ox * s..((ox + 1) * s).min(w));
                            let cells = ys.len() * xs.len();
                            let sum: f64 = ys
                                .flat_map(|iy| xs.clone().map(move |ix| (iy, ix)))
                                .map(|(iy, ix)| x[((b * h + iy) * w + ix) * c + ch] as f64)
                                .sum();
                            want.push(sum / cells as f64);
                        }
                    }
                }
            }
            assert!(max_rel(&avg_pool(&x, n, h, w, c, s), &want) < 1e-6, "{n} {h} {w} {c} {s}");
        }
    }

    #[test]
    fn pool_gradients_are_the_adjoint_of_the_forward_pass() {
        // <avg_pool(x), dy> == <x, avg_pool_backward(dy)> for any x, dy.
        let (n, h, w, c, s) = (2, 5, 7, 3, 2);
        let x = values(n * h * w * c, 1);
        let dy = values(n * pooled(h, s) * pooled(w, s) * c, 2);
        let lhs: f64 = avg_pool(&x, n, h, w, c, s).iter().zip(&dy).map(|(a, b)| *a as f64 * *b as f64).sum();
        let rhs: f64 =
            x.iter().zip(avg_pool_backward(&dy, n, h, w, c, s).iter()).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((lhs - rhs).abs() < 1e-4, "{lhs} vs {rhs}");
        let g = global_mean(&x, n, h * w, c);
        let want: Vec<f64> = (0..n * c)
            .map(|i| (0..h * w).map(|p| x[(i / c * h * w + p) * c + i % c] as f64).sum::<f64>() / (h * w) as f64)
            .collect();
        assert!(max_rel(&g, &want) < 1e-6);
    }
}
