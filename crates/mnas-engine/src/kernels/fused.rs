//! An MBConv's 1x1 expansion fused with its depthwise convolution, for inference on AVX-512.
//!
//! At 112x112 the expanded tensor (96 channels: 4.8 MB) is written by the expansion and read back
//! by the depthwise convolution from memory, which costs more than the arithmetic of either. Here
//! each task expands only the input rows its output rows need, into a ring of k rows that stays
//! in L2, and runs the depthwise row from the ring: the expanded tensor never exists in full.

use rayon::prelude::*;

use super::bn::Act;
use super::depthwise::Dw;
use super::pointwise::PackedPointwise;
use crate::buf::Buf;

/// Fewest output rows per task when the pool has more than one thread (each task re-expands up
/// to k - stride rows at its start).
const ROWS_PER_TASK: usize = 8;

/// `y` (`n x oh x ow x c`) = dw_act(depthwise(expand_act(expand(`x`)))) where `x` is `n x h x w x
/// cin`, `g` describes the depthwise convolution on the expanded channels, `wt`/`bias` are its
/// folded weights. Returns false (and leaves `y` alone) on a CPU without AVX-512.
#[allow(clippy::too_many_arguments)]
pub fn expand_depthwise_into(
    x: &[f32],
    cin: usize,
    expand: &PackedPointwise,
    expand_act: Act,
    wt: &[f32],
    bias: &[f32],
    act: Act,
    g: &Dw,
    y: &mut [f32],
) -> bool {
    if !super::avx512::available() {
        return false;
    }
    let (oh, ow, c) = (g.oh(), g.ow(), g.c);
    assert!(expand.outputs() == c, "expansion to {} channels feeding a depthwise of {c}", expand.outputs());
    assert!(x.len() == g.n * g.h * g.w * cin && y.len() == g.n * oh * ow * c, "fused operands");
    assert!(wt.len() == g.k * g.k * c && bias.len() == c, "depthwise weights");
    // One band of rows per thread: each task's start re-expands k - stride rows, which with
    // 8-row tasks was a quarter (k3) to a half (k5) more expansion work.
    let per_task = if rayon::current_num_threads() > 1 {
        ROWS_PER_TASK.max(oh.div_ceil(rayon::current_num_threads()))
    } else {
        oh
    };
    let row = ow * c;
    let image_in = g.h * g.w * cin;
    y.par_chunks_mut(oh * row).zip(x.par_chunks(image_in)).for_each(|(y_img, img)| {
        y_img.par_chunks_mut(per_task * row).enumerate().for_each(|(t, out)| {
            let mut ring = Buf::uninit(g.k * g.w * c);
            let mut held: Vec<Option<usize>> = vec![None; g.k];
            for (i, out_row) in out.chunks_exact_mut(row).enumerate() {
                let oy = t * per_task + i;
                let mut rows = Vec::with_capacity(g.k);
                for ky in 0..g.k {
                    let Some(iy) = g.iy(oy, ky) else { continue };
                    let slot = iy % g.k;
                    let dst = &mut ring[slot * g.w * c..(slot + 1) * g.w * c];
                    if held[slot] != Some(iy) {
                        expand.forward_here(&img[iy * g.w * cin..(iy + 1) * g.w * cin], expand_act, dst);
                        held[slot] = Some(iy);
                    }
                    rows.push((ky, dst.as_ptr()));
                }
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F is present (checked above); each row pointer addresses a whole
                // expanded row of `w * c` floats in `ring`, not written while they are read.
                unsafe {
                    super::depthwise::row_from_avx512(&rows, wt, Some(bias), act, g, out_row)
                };
            }
        });
    });
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::depthwise;
    use crate::kernels::testutil::{max_rel, values};

    /// The fused rows against the expansion written out in full and the depthwise convolution
    /// run on it, for every stride and kernel, odd sizes and maps smaller than the kernel.
    #[test]
    fn fused_rows_match_expansion_then_depthwise() {
        if !super::super::avx512::available() {
            return;
        }
        for &(n, h, w, cin, c, k, stride) in
            &[(1, 23, 21, 16, 96, 3, 2), (2, 9, 12, 24, 72, 5, 1), (1, 2, 2, 40, 120, 5, 2), (1, 30, 17, 8, 48, 7, 1)]
        {
            let g = Dw { n, h, w, c, k, stride };
            let x = values(n * h * w * cin, 11);
            let we = values(cin * c, 12);
            let be = values(c, 13);
            let wt = values(k * k * c, 14);
            let bias = values(c, 15);
            let expand = PackedPointwise::pack(&we, &be, cin, c).expect("AVX-512 present");
            let mut expanded = vec![0f32; n * h * w * c];
            expand.forward(&x, Act::Relu6, &mut expanded);
            let mut want = vec![0f32; n * g.oh() * g.ow() * c];
            depthwise::forward_act_into(&expanded, &wt, Some(&bias), Act::Relu, &g, &mut want);
            let mut got = vec![f32::NAN; want.len()];
            assert!(expand_depthwise_into(&x, cin, &expand, Act::Relu6, &wt, &bias, Act::Relu, &g, &mut got));
            let want: Vec<f64> = want.iter().map(|v| *v as f64).collect();
            assert!(max_rel(&got, &want) < 1e-6, "{g:?}");
        }
    }
}
