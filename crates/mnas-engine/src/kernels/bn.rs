//! Batch normalisation over the rows of an `m x c` (NHWC) matrix, fused with the activation that
//! follows it. Train mode uses batch statistics, accumulated in f64 as PyTorch does on CPU (f32
//! sums over tens of thousands of activations flip ReLU masks downstream of low-variance BNs).

use rayon::prelude::*;

use crate::buf::Buf;
use crate::simd::{madd, simd_fn};

/// The activation after a BN (or none, before a residual sum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    Relu6,
}

impl Act {
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Act::None => v,
            Act::Relu => v.max(0.0),
            Act::Relu6 => v.clamp(0.0, 6.0),
        }
    }

    /// Whether the gradient passes at an activated output `y` (PyTorch: strictly inside the linear
    /// part, judged on the output, which is the same set as on the input).
    pub fn passes(self, y: f32) -> bool {
        match self {
            Act::None => true,
            Act::Relu => y > 0.0,
            Act::Relu6 => y > 0.0 && y < 6.0,
        }
    }
}

impl From<mnas_space::Activation> for Act {
    fn from(a: mnas_space::Activation) -> Act {
        match a {
            mnas_space::Activation::Relu => Act::Relu,
            mnas_space::Activation::Relu6 => Act::Relu6,
        }
    }
}

fn row_tasks(m: usize, c: usize) -> Vec<(usize, usize)> {
    let by_size = (m * c).div_ceil(16_384).max(1);
    super::ranges(m, by_size.min(super::tasks() * 2))
}

simd_fn! {
    /// Per-channel sums of `z - center` (f32 over blocks of rows, then f64) and of its square.
    fn centered_sums(z: &[f32], center: &[f32], sum: &mut [f64], sq: &mut [f64]) {
        let c = center.len();
        let (mut a, mut b) = (vec![0f32; c], vec![0f32; c]);
        for block in z.chunks(F32_ROWS * c) {
            a.fill(0.0);
            b.fill(0.0);
            for row in block.chunks_exact(c) {
                for (((&v, &m), sa), sb) in row.iter().zip(center).zip(a.iter_mut()).zip(b.iter_mut()) {
                    let d = v - m;
                    *sa += d;
                    *sb = madd::<FMA>(d, d, *sb);
                }
            }
            for ((t, u), (&va, &vb)) in sum.iter_mut().zip(sq.iter_mut()).zip(a.iter().zip(b.iter())) {
                *t += va as f64;
                *u += vb as f64;
            }
        }
    }
}

fn reduce(parts: Vec<Vec<f64>>, c: usize) -> Vec<f64> {
    let mut total = vec![0f64; c];
    for p in parts {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    total
}

/// Per-channel mean and biased variance of the rows of `z`. The sums are taken around a centre
/// (the mean of the first rows) so that a large mean does not cancel the variance's digits, in f32 over blocks
/// of rows and f64 across blocks.
pub fn stats(z: &[f32], c: usize) -> (Vec<f64>, Vec<f64>) {
    let m = z.len() / c;
    if m == 0 {
        return (vec![0.0; c], vec![0.0; c]);
    }
    let mut center = vec![0f32; c];
    let probe = m.min(16);
    for row in z[..probe * c].chunks_exact(c) {
        crate::simd::add_to(&mut center, row);
    }
    center.iter_mut().for_each(|v| *v /= probe as f32);
    let center = &center;
    let parts: Vec<(Vec<f64>, Vec<f64>)> = row_tasks(m, c)
        .par_iter()
        .map(|&(lo, hi)| {
            let (mut sum, mut sq) = (vec![0f64; c], vec![0f64; c]);
            centered_sums(&z[lo * c..hi * c], center, &mut sum, &mut sq);
            (sum, sq)
        })
        .collect();
    let (sums, sqs): (Vec<Vec<f64>>, Vec<Vec<f64>>) = parts.into_iter().unzip();
    let (sum, sq) = (reduce(sums, c), reduce(sqs, c));
    let mean = (0..c).map(|i| center[i] as f64 + sum[i] / m as f64).collect();
    let var = (0..c).map(|i| (sq[i] / m as f64 - (sum[i] / m as f64).powi(2)).max(0.0)).collect();
    (mean, var)
}

simd_fn! {
    /// y = act((z - center) * scale + shift), per channel. Centring first keeps the digits that
    /// `z * scale + (shift - center * scale)` would cancel away when |mean| >> std.
    pub fn affine_act(z: &[f32], center: &[f32], scale: &[f32], shift: &[f32], act: Act, y: &mut [f32]) {
        let c = scale.len();
        for (yr, zr) in y.chunks_exact_mut(c).zip(z.chunks_exact(c)) {
            let it = yr.iter_mut().zip(zr).zip(center).zip(scale.iter().zip(shift));
            match act {
                Act::None => it.for_each(|(((y, &z), &m), (&a, &b))| *y = madd::<FMA>(z - m, a, b)),
                Act::Relu => it.for_each(|(((y, &z), &m), (&a, &b))| *y = madd::<FMA>(z - m, a, b).max(0.0)),
                Act::Relu6 => it.for_each(|(((y, &z), &m), (&a, &b))| *y = madd::<FMA>(z - m, a, b).clamp(0.0, 6.0)),
            }
        }
    }
}

simd_fn! {
    /// `y = act(y * scale + shift)` in place (inference: statistics already folded into the shift).
    pub fn affine_act_mut(y: &mut [f32], scale: &[f32], shift: &[f32], act: Act) {
        let c = scale.len();
        for yr in y.chunks_exact_mut(c) {
            let it = yr.iter_mut().zip(scale).zip(shift);
            match act {
                Act::None => it.for_each(|((y, &a), &b)| *y = madd::<FMA>(*y, a, b)),
                Act::Relu => it.for_each(|((y, &a), &b)| *y = madd::<FMA>(*y, a, b).max(0.0)),
                Act::Relu6 => it.for_each(|((y, &a), &b)| *y = madd::<FMA>(*y, a, b).clamp(0.0, 6.0)),
            }
        }
    }
}

simd_fn! {
    /// `y = act(y)` in place.
    pub fn act_mut(y: &mut [f32], act: Act) {
        match act {
            Act::None => {}
            Act::Relu => y.iter_mut().for_each(|v| *v = v.max(0.0)),
            Act::Relu6 => y.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
        }
    }
}

/// [`affine_act_mut`] split across the pool.
pub fn par_affine_act_mut(y: &mut [f32], scale: &[f32], shift: &[f32], act: Act) {
    let c = scale.len();
    y.par_chunks_mut(c * 512).for_each(|part| affine_act_mut(part, scale, shift, act));
}

/// Batch statistics of one train-mode forward pass.
#[derive(Debug, Clone)]
pub struct BatchStats {
    pub mean: Vec<f64>,
    /// Biased variance.
    pub var: Vec<f64>,
    pub invstd: Vec<f64>,
}

/// Train-mode forward: y = act(gamma * (z - mean) / sqrt(var + eps) + beta) with batch statistics.
pub fn forward_train(z: &[f32], gamma: &[f32], beta: &[f32], eps: f64, act: Act) -> (Buf, BatchStats) {
    let c = gamma.len();
    let (mean, var) = stats(z, c);
    let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let scale: Vec<f32> = (0..c).map(|i| (gamma[i] as f64 * invstd[i]) as f32).collect();
    let center: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    let mut y = Buf::uninit(z.len());
    y.par_chunks_mut(c * 512)
        .zip(z.par_chunks(c * 512))
        .for_each(|(yo, zi)| affine_act(zi, &center, &scale, beta, act, yo));
    (y, BatchStats { mean, var, invstd })
}

/// Eval-mode scale and shift from running statistics.
pub fn eval_affine(gamma: &[f32], beta: &[f32], mean: &[f32], var: &[f32], eps: f64) -> (Vec<f32>, Vec<f32>) {
    let scale: Vec<f32> = gamma.iter().zip(var).map(|(&g, &v)| (g as f64 / (v as f64 + eps).sqrt()) as f32).collect();
    let shift: Vec<f32> = beta.iter().zip(mean).zip(&scale).map(|((&b, &m), &s)| b - m * s).collect();
    (scale, shift)
}

/// The gradient that passes the activation at output `y`; `ACT` is [`Act`] as a number so that
/// each activation gets its own branch-free loop.
#[inline(always)]
fn masked<const ACT: u8>(y: f32, dy: f32) -> f32 {
    match ACT {
        0 => dy,
        1 => {
            if y > 0.0 {
                dy
            } else {
                0.0
            }
        }
        _ => {
            if y > 0.0 && y < 6.0 {
                dy
            } else {
                0.0
            }
        }
    }
}

/// Rows summed in f32 before they are added to the f64 totals.
const F32_ROWS: usize = 32;

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn grad_sums_impl<const ACT: u8, const FMA: bool>(
    z: &[f32],
    y: &[f32],
    dy: &[f32],
    center: &[f32],
    sg: &mut [f64],
    sgx: &mut [f64],
    a: &mut [f32],
    b: &mut [f32],
) {
    let c = center.len();
    for ((zb, yb), db) in z.chunks(F32_ROWS * c).zip(y.chunks(F32_ROWS * c)).zip(dy.chunks(F32_ROWS * c)) {
        a.fill(0.0);
        b.fill(0.0);
        for ((zr, yr), dr) in zb.chunks_exact(c).zip(yb.chunks_exact(c)).zip(db.chunks_exact(c)) {
            for (((((&zv, &yv), &dv), &m), sa), sb) in
                zr.iter().zip(yr).zip(dr).zip(center).zip(a.iter_mut()).zip(b.iter_mut())
            {
                let g = masked::<ACT>(yv, dv);
                *sa += g;
                *sb = madd::<FMA>(g, zv - m, *sb);
            }
        }
        for ((t, u), (&va, &vb)) in sg.iter_mut().zip(sgx.iter_mut()).zip(a.iter().zip(b.iter())) {
            *t += va as f64;
            *u += vb as f64;
        }
    }
}

simd_fn! {
    /// Per-channel sums of the masked gradient g and of g * (z - center).
    fn grad_sums(z: &[f32], y: &[f32], dy: &[f32], center: &[f32], act: Act, sg: &mut [f64], sgx: &mut [f64]) {
        let c = center.len();
        let (mut a, mut b) = (vec![0f32; c], vec![0f32; c]);
        match act {
            Act::None => grad_sums_impl::<0, FMA>(z, y, dy, center, sg, sgx, &mut a, &mut b),
            Act::Relu => grad_sums_impl::<1, FMA>(z, y, dy, center, sg, sgx, &mut a, &mut b),
            Act::Relu6 => grad_sums_impl::<2, FMA>(z, y, dy, center, sg, sgx, &mut a, &mut b),
        }
    }
}

/// Per-channel coefficients of the BN input gradient: dz = a * g + b * (z - center) + d.
struct GradCoefficients {
    a: Vec<f32>,
    b: Vec<f32>,
    d: Vec<f32>,
    center: Vec<f32>,
}

#[inline(always)]
fn grad_apply_impl<const ACT: u8, const FMA: bool>(
    z: &[f32],
    y: &[f32],
    dy: &[f32],
    k: &GradCoefficients,
    dz: &mut [f32],
) {
    let c = k.a.len();
    let rows = z.chunks_exact(c).zip(y.chunks_exact(c)).zip(dy.chunks_exact(c)).zip(dz.chunks_exact_mut(c));
    for (((zr, yr), dr), out) in rows {
        let coef = k.a.iter().zip(&k.b).zip(k.d.iter().zip(&k.center));
        for ((((o, &zv), &yv), &dv), ((&av, &bv), (&dd, &m))) in out.iter_mut().zip(zr).zip(yr).zip(dr).zip(coef) {
            *o = madd::<FMA>(av, masked::<ACT>(yv, dv), madd::<FMA>(bv, zv - m, dd));
        }
    }
}

simd_fn! {
    fn grad_apply(z: &[f32], y: &[f32], dy: &[f32], k: &GradCoefficients, act: Act, dz: &mut [f32]) {
        match act {
            Act::None => grad_apply_impl::<0, FMA>(z, y, dy, k, dz),
            Act::Relu => grad_apply_impl::<1, FMA>(z, y, dy, k, dz),
            Act::Relu6 => grad_apply_impl::<2, FMA>(z, y, dy, k, dz),
        }
    }
}

/// Train-mode backward through act(BN(z)): returns dz and adds dgamma then dbeta to `daffine`
/// (`2c`, the layout of the BN's trainable slot). `y` is the forward output (its activation
/// mask), `dy` the gradient at it.
pub fn backward_train(
    z: &[f32],
    y: &[f32],
    dy: &[f32],
    gamma: &[f32],
    stats: &BatchStats,
    act: Act,
    daffine: &mut [f32],
) -> Buf {
    let c = gamma.len();
    let (dgamma, dbeta) = daffine.split_at_mut(c);
    let m = (z.len() / c).max(1) as f64;
    let tasks = row_tasks(z.len() / c, c);
    let center: Vec<f32> = stats.mean.iter().map(|&m| m as f32).collect();
    let parts: Vec<(Vec<f64>, Vec<f64>)> = tasks
        .par_iter()
        .map(|&(lo, hi)| {
            let (mut sg, mut sgx) = (vec![0f64; c], vec![0f64; c]);
            let r = lo * c..hi * c;
            grad_sums(&z[r.clone()], &y[r.clone()], &dy[r], &center, act, &mut sg, &mut sgx);
            (sg, sgx)
        })
        .collect();
    let (mut sg, mut sgx) = (vec![0f64; c], vec![0f64; c]);
    for (a, b) in parts {
        for i in 0..c {
            sg[i] += a[i];
            sgx[i] += b[i];
        }
    }
    // Sums were taken around the f32 centre: sum g (z - mean) = sum g (z - center) + (center - mean) sum g.
    for i in 0..c {
        sgx[i] += (center[i] as f64 - stats.mean[i]) * sg[i];
    }
    let mut k = GradCoefficients { a: vec![0f32; c], b: vec![0f32; c], d: vec![0f32; c], center: vec![0f32; c] };
    for i in 0..c {
        let is = stats.invstd[i];
        dgamma[i] += (sgx[i] * is) as f32;
        dbeta[i] += sg[i] as f32;
        let av = gamma[i] as f64 * is;
        let bv = -av * is * is * sgx[i] / m;
        let center = center[i];
        k.a[i] = av as f32;
        k.b[i] = bv as f32;
        // b * (z - mean) = b * (z - center) + b * (center - mean), the last term folded into d.
        k.d[i] = (-av * sg[i] / m + bv * (center as f64 - stats.mean[i])) as f32;
        k.center[i] = center;
    }
    let mut dz = Buf::uninit(z.len());
    let rows = 512 * c;
    dz.par_chunks_mut(rows).enumerate().for_each(|(t, out)| {
        let r = t * rows..t * rows + out.len();
        grad_apply(&z[r.clone()], &y[r.clone()], &dy[r], &k, act, out);
    });
    dz
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{max_rel, values};

    /// Direct f64 BN + activation and its gradient (autodiff by hand on the textbook formula).
    fn direct(
        z: &[f32],
        dy: &[f32],
        gamma: &[f32],
        beta: &[f32],
        act: Act,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let c = gamma.len();
        let m = z.len() / c;
        let eps = 1e-5;
        let mut y = vec![0f64; z.len()];
        let mut dz = vec![0f64; z.len()];
        let (mut dg, mut db) = (vec![0f64; c], vec![0f64; c]);
        for ch in 0..c {
            let col: Vec<f64> = (0..m).map(|r| z[r * c + ch] as f64).collect();
            let mean = col.iter().sum::<f64>() / m as f64;
            let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / m as f64;
            let is = 1.0 / (var + eps).sqrt();
            let xh: Vec<f64> = col.iter().map(|v| (v - mean) * is).collect();
            let pre: Vec<f64> = xh.iter().map(|x| gamma[ch] as f64 * x + beta[ch] as f64).collect();
            let g: Vec<f64> = (0..m)
                .map(|r| {
                    let p = pre[r];
                    let pass = match act {
                        Act::None => true,
                        Act::Relu => p > 0.0,
                        Act::Relu6 => p > 0.0 && p < 6.0,
                    };
                    if pass {
                        dy[r * c + ch] as f64
                    } else {
                        0.0
                    }
                })
                .collect();
            let sg: f64 = g.iter().sum();
            let sgx: f64 = g.iter().zip(&xh).map(|(a, b)| a * b).sum();
            dg[ch] = sgx;
            db[ch] = sg;
            for r in 0..m {
                y[r * c + ch] = act.apply(pre[r] as f32) as f64;
                dz[r * c + ch] = gamma[ch] as f64 * is / m as f64 * (m as f64 * g[r] - sg - xh[r] * sgx);
            }
        }
        (y, dz, dg, db)
    }

    #[test]
    fn train_forward_and_backward_match_direct_f64() {
        for (&(m, c), act) in [(200, 7), (9, 40), (4096, 24)].iter().zip([Act::Relu, Act::None, Act::Relu6]) {
            let z: Vec<f32> = values(m * c, 1).iter().map(|v| v * 4.0 + 0.5).collect();
            let dy = values(m * c, 2);
            let gamma: Vec<f32> = values(c, 3).iter().map(|v| v + 1.5).collect();
            let beta = values(c, 4);
            let (y64, dz64, dg64, db64) = direct(&z, &dy, &gamma, &beta, act);
            let (y, stats) = forward_train(&z, &gamma, &beta, 1e-5, act);
            assert!(max_rel(&y, &y64) < 1e-5, "forward {m}x{c} {act:?}");
            let mut daffine = vec![0f32; 2 * c];
            let dz = backward_train(&z, &y, &dy, &gamma, &stats, act, &mut daffine);
            let (dg, db) = daffine.split_at(c);
            assert!(max_rel(&dz, &dz64) < 1e-4, "dz {m}x{c} {act:?}: {}", max_rel(&dz, &dz64));
            assert!(max_rel(dg, &dg64) < 1e-5, "dgamma {m}x{c}");
            assert!(max_rel(db, &db64) < 1e-5, "dbeta {m}x{c}");
        }
    }
}
