//! Matrix products on f32 slices with the `gemm` crate, split across the rayon pool by rows of
//! the output (forward passes, input gradients) or by the reduction dimension (weight gradients,
//! where the output is small and the reduction runs over every pixel of the batch).

use rayon::prelude::*;

/// A strided matrix view: element (r, c) at `data[r * rs + c * cs]`.
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A contiguous row-major `rows x cols` matrix.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        View { data, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        View { data: self.data, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    /// Rows `lo..hi`.
    fn row_range(self, lo: usize, hi: usize) -> Self {
        let start = (lo * self.rs).min(self.data.len());
        View { data: &self.data[start..], rows: hi - lo, ..self }
    }

    fn fits(&self) -> bool {
        self.rows == 0 || self.cols == 0 || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst` (row-major `m x n`) = (`accumulate` ? `dst` : 0) + `lhs` (`m x k`) * `rhs` (`k x n`), on
/// the calling thread.
pub fn gemm(dst: &mut [f32], lhs: View<'_>, rhs: View<'_>, accumulate: bool) {
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
    // SAFETY: the assert keeps every (row, col) the strides address inside the three slices, and
    // `dst` is borrowed mutably, so it aliases neither operand.
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

/// Below this many multiply-adds a product runs on one thread.
const PARALLEL_MACS: usize = 1 << 17;

/// Rows per task so that each thread gets a few tasks.
fn row_chunk(m: usize, threads: usize) -> usize {
    m.div_ceil(threads * 3).max(16)
}

/// Fewer rows than this are not split across threads.
const MIN_SPLIT_ROWS: usize = 32;

/// [`gemm`] with the rows of `lhs` and `dst` split across the rayon pool, or, with too few rows
/// to split (a classifier at batch 1), its reduction: then each thread reads its part of the
/// (megabytes of) weights instead of one thread reading them all.
pub fn par_gemm(dst: &mut [f32], lhs: View<'_>, rhs: View<'_>, accumulate: bool) {
    if lhs.rows < MIN_SPLIT_ROWS {
        return par_gemm_reduce(dst, lhs, rhs, accumulate);
    }
    par_gemm_then(dst, lhs, rhs, accumulate, |_| {})
}

/// Rows of output per block when a product is followed by an element-wise pass: small enough
/// that the block is still in cache for the pass.
const EPILOGUE_ROWS: usize = 256;

/// [`par_gemm`], then `epilogue` on each block of output rows right after it is computed.
pub fn par_gemm_then(
    dst: &mut [f32],
    lhs: View<'_>,
    rhs: View<'_>,
    accumulate: bool,
    epilogue: impl Fn(&mut [f32]) + Sync,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(dst.len(), m * n, "gemm destination size");
    let threads = rayon::current_num_threads();
    if threads == 1 || m * n * k < PARALLEL_MACS || m < MIN_SPLIT_ROWS {
        for (i, out) in dst.chunks_mut(EPILOGUE_ROWS * n.max(1)).enumerate() {
            let lo = i * EPILOGUE_ROWS;
            gemm(out, lhs.row_range(lo, lo + out.len() / n.max(1)), rhs, accumulate);
            epilogue(out);
        }
        return;
    }
    let chunk = row_chunk(m, threads).min(EPILOGUE_ROWS.max(16));
    dst.par_chunks_mut(chunk * n).enumerate().for_each(|(i, out)| {
        let lo = i * chunk;
        let hi = (lo + chunk).min(m);
        gemm(out, lhs.row_range(lo, hi), rhs, accumulate);
        epilogue(out);
    });
}

/// `dst` (`m x n`) = (`accumulate` ? `dst` : 0) + `lhs` (`m x k`) * `rhs` (`k x n`) for a long
/// reduction `k`: each task multiplies a slice of `k` into its own accumulator, then the partial
/// products are added.
pub fn par_gemm_reduce(dst: &mut [f32], lhs: View<'_>, rhs: View<'_>, accumulate: bool) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let threads = rayon::current_num_threads();
    if threads == 1 || m * n * k < PARALLEL_MACS || k < 64 {
        return gemm(dst, lhs, rhs, accumulate);
    }
    let chunk = k.div_ceil(threads).max(32);
    let parts: Vec<Vec<f32>> = (0..k.div_ceil(chunk))
        .into_par_iter()
        .map(|i| {
            let lo = i * chunk;
            let hi = (lo + chunk).min(k);
            let l = View { data: &lhs.data[(lo * lhs.cs).min(lhs.data.len())..], cols: hi - lo, ..lhs };
            let r = rhs.row_range(lo, hi);
            let mut acc = vec![0f32; m * n];
            gemm(&mut acc, l, r, false);
            acc
        })
        .collect();
    if !accumulate {
        dst.fill(0.0);
    }
    for p in &parts {
        crate::simd::add_to(dst, p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &View<'_>, b: &View<'_>) -> Vec<f64> {
        let mut out = vec![0f64; a.rows * b.cols];
        for i in 0..a.rows {
            for j in 0..b.cols {
                for k in 0..a.cols {
                    out[i * b.cols + j] += a.data[i * a.rs + k * a.cs] as f64 * b.data[k * b.rs + j * b.cs] as f64;
                }
            }
        }
        out
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn products_match_direct_f64_in_every_split() {
        let (m, k, n) = (300, 257, 40);
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let (va, vb) = (View::rows(&a, m, k), View::rows(&b, k, n));
        let want = naive(&va, &vb);
        let check = |got: &[f32]| {
            let worst = got.iter().zip(&want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max);
            assert!(worst < 1e-3, "max abs error {worst}");
        };
        let mut out = vec![0f32; m * n];
        gemm(&mut out, va, vb, false);
        check(&out);
        par_gemm(&mut out, va, vb, false);
        check(&out);
        par_gemm_reduce(&mut out, va, vb, false);
        check(&out);
        // Transposed views: (B^T A^T)^T = A B.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut out_t = vec![0f32; n * m];
        par_gemm_reduce(&mut out_t, View::rows(&bt, n, k), va.t(), false);
        let back: Vec<f32> = (0..m * n).map(|i| out_t[(i % n) * m + i / n]).collect();
        check(&back);
        // Accumulation adds to what is there.
        let mut twice = out.clone();
        par_gemm(&mut twice, va, vb, true);
        let doubled: Vec<f32> = out.iter().map(|v| v * 2.0).collect();
        let worst = twice.iter().zip(&doubled).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4);
    }
}
