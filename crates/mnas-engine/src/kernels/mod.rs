//! Channels-last (NHWC) f32 kernels, forward and backward. Every loop runs over a contiguous run
//! of channels innermost, so SIMD lanes stay busy even on the 2x2 maps of a proxy run (DESIGN §13).
//! Each kernel is checked against direct f64 code in its tests.

pub mod avx512;
pub mod bn;
pub mod conv;
pub mod depthwise;
pub mod fused;
pub mod pointwise;
pub mod pool;
pub mod se;

/// Splits `0..n` into at most `parts` contiguous ranges of near-equal size.
pub(crate) fn ranges(n: usize, parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.clamp(1, n.max(1));
    let per = n.div_ceil(parts).max(1);
    (0..n.div_ceil(per)).map(|i| (i * per, ((i + 1) * per).min(n))).collect()
}

/// Tasks for a batch-level reduction: a few per thread.
pub(crate) fn tasks() -> usize {
    rayon::current_num_threads() * 2
}

#[cfg(test)]
pub(crate) mod testutil {
    /// Deterministic values in [-1, 1).
    pub fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f64 / (1u64 << 24) as f64 * 2.0 - 1.0) as f32
            })
            .collect()
    }

    pub fn max_rel(got: &[f32], want: &[f64]) -> f64 {
        assert_eq!(got.len(), want.len(), "lengths");
        let scale = want.iter().map(|v| v.abs()).fold(1e-12, f64::max);
        got.iter().zip(want).map(|(g, w)| (*g as f64 - w).abs()).fold(0.0, f64::max) / scale
    }
}
