//! What the AVX-512 inference kernels (pointwise, depthwise, fused) share: whether this CPU
//! runs them, and the activation on a register before its one store.

use super::bn::Act;

/// Whether this CPU runs the AVX-512 kernels (detected with the other instruction sets).
pub use crate::simd::avx512f as available;

/// `act` on 16 lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) fn activate(v: std::arch::x86_64::__m512, act: Act) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    match act {
        Act::None => v,
        Act::Relu => _mm512_max_ps(v, _mm512_setzero_ps()),
        Act::Relu6 => _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(6.0)),
    }
}
