//! Run-time dispatch to AVX2 + FMA code. The binary targets baseline x86-64 (SSE2), so the hot
//! loops are compiled twice: once with AVX2 + FMA enabled, taken when the CPU has them, and once
//! for the baseline. Kernels are written as plain slice loops that LLVM vectorises either way;
//! [`madd`] is a fused multiply-add only in the AVX2 + FMA instance (elsewhere `mul_add` would be
//! a slow libm call).

#[cfg(target_arch = "x86_64")]
pub fn avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

#[cfg(not(target_arch = "x86_64"))]
pub fn avx2_fma() -> bool {
    false
}

/// Whether this CPU has AVX-512F, which the inference kernels (`kernels::avx512`) need.
pub fn avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| is_x86_feature_detected!("avx512f"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The instruction set the kernels run with on this CPU, for fingerprints and benchmarks.
pub fn level() -> &'static str {
    if avx512f() {
        // The inference convolutions and depthwise rows run AVX-512 code of their own.
        "avx512f"
    } else if avx2_fma() {
        "avx2+fma"
    } else if cfg!(target_arch = "aarch64") {
        "neon"
    } else {
        "baseline"
    }
}

/// `a * b + c`, fused when the instance is compiled with FMA.
#[inline(always)]
pub fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Defines a function whose body is compiled twice (`FMA` = true with AVX2 + FMA enabled, false
/// for the baseline) and picks the instance at run time. The body sees a `const FMA: bool`.
/// Keep bodies sequential: closures handed to rayon would be compiled without the features.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn inner<const FMA: bool>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn fast($($arg: $ty),*) $(-> $ret)? {
                    inner::<true>($($arg),*)
                }
                if $crate::simd::avx2_fma() {
                    // SAFETY: the CPU has AVX2 and FMA (checked at run time above).
                    return unsafe { fast($($arg),*) };
                }
            }
            inner::<false>($($arg),*)
        }
    };
}
pub(crate) use simd_fn;

simd_fn! {
    /// `acc[i] += a[i] * b[i]`.
    pub fn mul_acc(acc: &mut [f32], a: &[f32], b: &[f32]) {
        for ((o, &x), &y) in acc.iter_mut().zip(a).zip(b) {
            *o = madd::<FMA>(x, y, *o);
        }
    }
}

simd_fn! {
    /// `acc[i] += a[i] * s`.
    pub fn axpy(acc: &mut [f32], a: &[f32], s: f32) {
        for (o, &x) in acc.iter_mut().zip(a) {
            *o = madd::<FMA>(x, s, *o);
        }
    }
}

simd_fn! {
    /// `acc[i] += a[i]`.
    pub fn add_to(acc: &mut [f32], a: &[f32]) {
        for (o, &x) in acc.iter_mut().zip(a) {
            *o += x;
        }
    }
}

simd_fn! {
    /// `acc[i] *= a[i]`.
    pub fn mul_in_place(acc: &mut [f32], a: &[f32]) {
        for (o, &x) in acc.iter_mut().zip(a) {
            *o *= x;
        }
    }
}
