//! An MBConv's 1x1 expansion, depthwise convolution and 1x1 projection fused, for inference on
//! AVX-512.
//!
//! At 112x112 the expanded tensor (96 channels: 4.8 MB) is written by the expansion and read back
//! by the depthwise convolution from memory, which costs more than the arithmetic of either. Here
//! each task expands only the input rows its output rows need, into a ring of k rows that stays
//! in L2, and runs the depthwise row from the ring: the expanded tensor never exists in full.
//! Without an SE between them (it needs the whole map), each depthwise output row is projected
//! while it is in L1, so that tensor never exists in full either.

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
/// folded weights; without `expand` the depthwise convolution reads `x` (`cin` = `c`). With
/// `project`, `y` (`n x oh x ow x cout`) is that 1x1 convolution of it instead, row by row: the
/// depthwise output then never exists in full either (at 56x56 it was 1.8 MB, written to and
/// read back from L3). Returns false (and leaves `y` alone) on a CPU without AVX-512.
#[allow(clippy::too_many_arguments)]
pub fn mbconv_into(
    x: &[f32],
    cin: usize,
    expand: Option<(&PackedPointwise, Act)>,
    wt: &[f32],
    bias: &[f32],
    act: Act,
    g: &Dw,
    project: Option<(&PackedPointwise, Act)>,
    y: &mut [f32],
) -> bool {
    if !super::avx512::available() {
        return false;
    }
    let (oh, ow, c) = (g.oh(), g.ow(), g.c);
    let cout = project.map_or(c, |(p, _)| p.outputs());
    let expanded = expand.map_or(cin, |(e, _)| e.outputs());
    assert!(expanded == c, "{expanded} channels feeding a depthwise convolution of {c}");
    assert!(project.is_none_or(|(p, _)| p.inputs() == c), "projection of another width than {c}");
    assert!(x.len() == g.n * g.h * g.w * cin && y.len() == g.n * oh * ow * cout, "fused operands");
    assert!(wt.len() == g.k * g.k * c && bias.len() == c, "depthwise weights");
    // One band of rows per thread: each task's start re-expands k - stride rows, which with
    // 8-row tasks was a quarter (k3) to a half (k5) more expansion work.
    let per_task = if rayon::current_num_threads() > 1 {
        ROWS_PER_TASK.max(oh.div_ceil(rayon::current_num_threads()))
    } else {
        oh
    };
    let (row, row_out) = (ow * c, ow * cout);
    let image_in = g.h * g.w * cin;
    y.par_chunks_mut(oh * row_out).zip(x.par_chunks(image_in)).for_each(|(y_img, img)| {
        y_img.par_chunks_mut(per_task * row_out).enumerate().for_each(|(t, out)| {
            let mut ring = Buf::uninit(if expand.is_some() { g.k * g.w * c } else { 0 });
            let mut held: Vec<Option<usize>> = vec![None; g.k];
            let mut dw_row = Buf::uninit(if project.is_some() { row } else { 0 });
            for (i, final_row) in out.chunks_exact_mut(row_out).enumerate() {
                let out_row: &mut [f32] = if project.is_some() { &mut dw_row } else { &mut *final_row };
                let oy = t * per_task + i;
                let mut rows = Vec::with_capacity(g.k);
                for ky in 0..g.k {
                    let Some(iy) = g.iy(oy, ky) else { continue };
                    let src = &img[iy * g.w * cin..(iy + 1) * g.w * cin];
                    let Some((e, expand_act)) = expand else {
                        rows.push((ky, src.as_ptr()));
                        continue;
                    };
                    let slot = iy % g.k;
                    let dst = &mut ring[slot * g.w * c..(slot + 1) * g.w * c];
                    if held[slot] != Some(iy) {
                        e.forward_here(src, expand_act, dst);
                        held[slot] = Some(iy);
                    }
                    rows.push((ky, dst.as_ptr()));
                }
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F is present (checked above); each row pointer addresses a whole
                // row of `w * c` floats (expanded in `ring`, or of `x`), not written while read.
                unsafe {
                    super::depthwise::row_from_avx512(&rows, wt, Some(bias), act, g, out_row)
                };
                if let Some((p, pact)) = project {
                    p.forward_here(&dw_row, pact, final_row);
                }
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
            let fused_expand = Some((&expand, Act::Relu6));
            assert!(mbconv_into(&x, cin, fused_expand, &wt, &bias, Act::Relu, &g, None, &mut got));
            let want64: Vec<f64> = want.iter().map(|v| *v as f64).collect();
            assert!(max_rel(&got, &want64) < 1e-6, "{g:?}");

            // With the projection fused as well, against the projection of the rows above.
            let cout = 40;
            let project = PackedPointwise::pack(&values(c * cout, 16), &values(cout, 17), c, cout).expect("AVX-512");
            let mut projected = vec![0f32; n * g.oh() * g.ow() * cout];
            project.forward(&want, Act::None, &mut projected);
            let mut got = vec![f32::NAN; projected.len()];
            let fused_project = Some((&project, Act::None));
            assert!(mbconv_into(&x, cin, fused_expand, &wt, &bias, Act::Relu, &g, fused_project, &mut got));
            let projected64: Vec<f64> = projected.iter().map(|v| *v as f64).collect();
            assert!(max_rel(&got, &projected64) < 1e-5, "{g:?} projected");

            // A separable convolution's: no expansion, the depthwise convolution on `expanded`.
            let mut got = vec![f32::NAN; projected.len()];
            assert!(mbconv_into(&expanded, c, None, &wt, &bias, Act::Relu, &g, fused_project, &mut got));
            assert!(max_rel(&got, &projected64) < 1e-5, "{g:?} without expansion");
        }
    }
}
