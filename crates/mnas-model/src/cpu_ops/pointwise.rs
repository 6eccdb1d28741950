//! 1x1 convolution (stride 1, no bias) on contiguous NCHW f32 slices as per-image matrix products
//! with the `gemm` crate (the kernels flex itself uses). The weight gradient accumulates
//! dy[n] x[n]^T over the batch in place (gemm's read-dst mode), one accumulator per rayon task;
//! flex's generic path instead materialises transposed copies (or an [n, cout, cin] tensor).

use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PwShape {
    pub n: usize,
    pub cin: usize,
    pub cout: usize,
    /// h * w
    pub hw: usize,
}

/// A strided row-major-or-not matrix view: element (r, c) at `data[r * rs + c * cs]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl View<'_> {
    fn fits(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// dst (row-major m x n) = (accumulate ? dst : 0) + lhs (m x k) * rhs (k x n), single-threaded.
fn gemm(dst: &mut [f32], lhs: View<'_>, rhs: View<'_>, accumulate: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert!(rhs.rows == k && dst.len() == m * n && lhs.fits() && rhs.fits(), "gemm operands out of bounds");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    // SAFETY: the assert above keeps every (row, col) the strides address inside the three slices,
    // and `dst` is borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

fn image(t: &[f32], b: usize, rows: usize, cols: usize) -> View<'_> {
    View { data: &t[b * rows * cols..(b + 1) * rows * cols], rows, cols, rs: cols, cs: 1 }
}

/// y[n] = W x[n]; W is [cout, cin].
pub fn forward(x: &[f32], w: &[f32], g: &PwShape) -> Vec<f32> {
    let mut y = vec![0f32; g.n * g.cout * g.hw];
    let wv = View { data: w, rows: g.cout, cols: g.cin, rs: g.cin, cs: 1 };
    y.par_chunks_mut(g.cout * g.hw).enumerate().for_each(|(b, out)| {
        gemm(out, wv, image(x, b, g.cin, g.hw), false);
    });
    y
}

/// dx[n] = W^T dy[n].
pub fn backward_x(dy: &[f32], w: &[f32], g: &PwShape) -> Vec<f32> {
    let mut dx = vec![0f32; g.n * g.cin * g.hw];
    let wt = View { data: w, rows: g.cin, cols: g.cout, rs: 1, cs: g.cin };
    dx.par_chunks_mut(g.cin * g.hw).enumerate().for_each(|(b, out)| {
        gemm(out, wt, image(dy, b, g.cout, g.hw), false);
    });
    dx
}

/// dW = sum_n dy[n] x[n]^T, [cout, cin].
pub fn backward_w(x: &[f32], dy: &[f32], g: &PwShape) -> Vec<f32> {
    let tasks = rayon::current_num_threads().clamp(1, g.n.max(1));
    let per = g.n.div_ceil(tasks).max(1);
    let partial: Vec<Vec<f32>> = (0..g.n.div_ceil(per))
        .into_par_iter()
        .map(|t| {
            let mut acc = vec![0f32; g.cout * g.cin];
            for b in t * per..((t + 1) * per).min(g.n) {
                let xt = View {
                    data: &x[b * g.cin * g.hw..(b + 1) * g.cin * g.hw],
                    rows: g.hw,
                    cols: g.cin,
                    rs: 1,
                    cs: g.hw,
                };
                gemm(&mut acc, image(dy, b, g.cout, g.hw), xt, b > t * per);
            }
            acc
        })
        .collect();
    let mut parts = partial.into_iter();
    let mut total = parts.next().unwrap_or_else(|| vec![0f32; g.cout * g.cin]);
    for p in parts {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}
