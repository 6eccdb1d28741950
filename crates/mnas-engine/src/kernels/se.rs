//! Squeeze-and-excitation on NHWC data: global mean -> dense (`c -> r`, bias) -> activation ->
//! dense (`r -> c`, bias) -> sigmoid -> per-channel gate. Dense weights are stored input-major
//! (`w1`: `c x r`, `w2`: `r x c`) so that every product runs along a contiguous row.

use rayon::prelude::*;

use super::bn::Act;
use crate::buf::Buf;
use crate::simd::{axpy, madd, mul_acc, simd_fn};

/// The parameters of one SE module.
#[derive(Debug, Clone, Copy)]
pub struct SeWeights<'a> {
    pub w1: &'a [f32],
    pub b1: &'a [f32],
    pub w2: &'a [f32],
    pub b2: &'a [f32],
    pub c: usize,
    pub r: usize,
    pub act: Act,
}

/// What the backward pass needs, per image.
#[derive(Debug, Clone, Default)]
pub struct SeCache {
    pub pooled: Vec<f32>,
    /// Activated hidden units, `n x r`.
    pub hidden: Vec<f32>,
    pub gate: Vec<f32>,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// Hidden units and gate from an image's pooled (mean) vector: the part of an SE that training
/// and inference share.
pub fn excite(pooled: &[f32], p: &SeWeights<'_>) -> (Vec<f32>, Vec<f32>) {
    let mut hidden = p.b1.to_vec();
    for (ch, &v) in pooled.iter().enumerate() {
        axpy(&mut hidden, &p.w1[ch * p.r..(ch + 1) * p.r], v);
    }
    hidden.iter_mut().for_each(|v| *v = p.act.apply(*v));
    let mut s = p.b2.to_vec();
    for (j, &h) in hidden.iter().enumerate() {
        axpy(&mut s, &p.w2[j * p.c..(j + 1) * p.c], h);
    }
    (hidden, s.into_iter().map(sigmoid).collect())
}

/// Pooled vector, hidden units and gate of one image.
fn gate_of(img: &[f32], hw: usize, p: &SeWeights<'_>) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut pooled = vec![0f32; p.c];
    for px in img.chunks_exact(p.c) {
        crate::simd::add_to(&mut pooled, px);
    }
    pooled.iter_mut().for_each(|v| *v /= hw as f32);
    let (hidden, gate) = excite(&pooled, p);
    (pooled, hidden, gate)
}

simd_fn! {
    fn scale_rows(x: &[f32], gate: &[f32], y: &mut [f32]) {
        for (yr, xr) in y.chunks_exact_mut(gate.len()).zip(x.chunks_exact(gate.len())) {
            for ((o, &v), &g) in yr.iter_mut().zip(xr).zip(gate) {
                *o = v * g;
            }
        }
    }
}

simd_fn! {
    fn gate_grad_rows(dy: &[f32], gate: &[f32], dpooled_over_hw: &[f32], dx: &mut [f32]) {
        let c = gate.len();
        for (o, d) in dx.chunks_exact_mut(c).zip(dy.chunks_exact(c)) {
            for (((o, &dv), &g), &dp) in o.iter_mut().zip(d).zip(gate).zip(dpooled_over_hw) {
                *o = madd::<FMA>(dv, g, dp);
            }
        }
    }
}

/// y = x * gate(x) for `n` images of `hw` pixels.
pub fn forward(x: &[f32], n: usize, hw: usize, p: &SeWeights<'_>) -> (Buf, SeCache) {
    let img = hw * p.c;
    let gates: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> =
        (0..n).into_par_iter().map(|b| gate_of(&x[b * img..(b + 1) * img], hw, p)).collect();
    let mut y = Buf::uninit(x.len());
    y.par_chunks_mut(img).enumerate().for_each(|(b, out)| scale_rows(&x[b * img..(b + 1) * img], &gates[b].2, out));
    let mut cache = SeCache::default();
    for (pooled, hidden, gate) in gates {
        cache.pooled.extend(pooled);
        cache.hidden.extend(hidden);
        cache.gate.extend(gate);
    }
    (y, cache)
}

/// Gradients of one SE module's parameters, laid out as its weights.
#[derive(Debug)]
pub struct SeGrads<'a> {
    pub w1: &'a mut [f32],
    pub b1: &'a mut [f32],
    pub w2: &'a mut [f32],
    pub b2: &'a mut [f32],
}

/// dx from dy, adding the parameter gradients.
pub fn backward(x: &[f32], dy: &[f32], hw: usize, p: &SeWeights<'_>, cache: &SeCache, grads: SeGrads<'_>) -> Buf {
    let (c, r) = (p.c, p.r);
    let img = hw * c;
    let mut dx = Buf::uninit(x.len());
    let parts: Vec<Vec<f32>> = dx
        .par_chunks_mut(img)
        .enumerate()
        .map(|(b, out)| {
            let (xi, di) = (&x[b * img..(b + 1) * img], &dy[b * img..(b + 1) * img]);
            let (pooled, hidden, gate) =
                (&cache.pooled[b * c..(b + 1) * c], &cache.hidden[b * r..(b + 1) * r], &cache.gate[b * c..(b + 1) * c]);
            let mut dgate = vec![0f32; c];
            for (xr, dr) in xi.chunks_exact(c).zip(di.chunks_exact(c)) {
                mul_acc(&mut dgate, xr, dr);
            }
            let ds: Vec<f32> = dgate.iter().zip(gate).map(|(d, g)| d * g * (1.0 - g)).collect();
            // Per-image parameter gradients, packed [w1 | b1 | w2 | b2].
            let mut part = vec![0f32; c * r + r + r * c + c];
            let (pw1, rest) = part.split_at_mut(c * r);
            let (pb1, rest) = rest.split_at_mut(r);
            let (pw2, pb2) = rest.split_at_mut(r * c);
            let mut dh = vec![0f32; r];
            for j in 0..r {
                axpy(&mut pw2[j * c..(j + 1) * c], &ds, hidden[j]);
                let v = dot(&ds, &p.w2[j * c..(j + 1) * c]);
                dh[j] = if p.act.passes(hidden[j]) { v } else { 0.0 };
            }
            pb2.copy_from_slice(&ds);
            pb1.copy_from_slice(&dh);
            let mut dpooled = vec![0f32; c];
            for ch in 0..c {
                axpy(&mut pw1[ch * r..(ch + 1) * r], &dh, pooled[ch]);
                dpooled[ch] = dot(&dh, &p.w1[ch * r..(ch + 1) * r]) / hw as f32;
            }
            gate_grad_rows(di, gate, &dpooled, out);
            part
        })
        .collect();
    for part in parts {
        let (pw1, rest) = part.split_at(c * r);
        let (pb1, rest) = rest.split_at(r);
        let (pw2, pb2) = rest.split_at(r * c);
        crate::simd::add_to(grads.w1, pw1);
        crate::simd::add_to(grads.b1, pb1);
        crate::simd::add_to(grads.w2, pw2);
        crate::simd::add_to(grads.b2, pb2);
    }
    dx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::values;

    /// The SE output as a scalar loss <y, dy>, in f64, for finite differences.
    #[allow(clippy::too_many_arguments)]
    fn loss(
        x: &[f32],
        dy: &[f32],
        n: usize,
        hw: usize,
        w1: &[f32],
        b1: &[f32],
        w2: &[f32],
        b2: &[f32],
        c: usize,
        r: usize,
    ) -> f64 {
        let mut total = 0.0;
        for b in 0..n {
            let img = &x[b * hw * c..(b + 1) * hw * c];
            let pooled: Vec<f64> =
                (0..c).map(|ch| (0..hw).map(|p| img[p * c + ch] as f64).sum::<f64>() / hw as f64).collect();
            let hidden: Vec<f64> = (0..r)
                .map(|j| (b1[j] as f64 + (0..c).map(|ch| pooled[ch] * w1[ch * r + j] as f64).sum::<f64>()).max(0.0))
                .collect();
            for ch in 0..c {
                let s = b2[ch] as f64 + (0..r).map(|j| hidden[j] * w2[j * c + ch] as f64).sum::<f64>();
                let g = 1.0 / (1.0 + (-s).exp());
                for p in 0..hw {
                    total += img[p * c + ch] as f64 * g * dy[(b * hw + p) * c + ch] as f64;
                }
            }
        }
        total
    }

    #[test]
    fn gradients_match_central_differences_in_f64() {
        let (n, hw, c, r) = (3, 5, 6, 2);
        let x = values(n * hw * c, 1);
        let dy = values(n * hw * c, 2);
        let (w1, b1, w2, b2) = (values(c * r, 3), values(r, 4), values(r * c, 5), values(c, 6));
        let p = SeWeights { w1: &w1, b1: &b1, w2: &w2, b2: &b2, c, r, act: Act::Relu };
        let (y, cache) = forward(&x, n, hw, &p);
        let forward_loss: f64 = y.iter().zip(&dy).map(|(a, b)| *a as f64 * *b as f64).sum();
        assert!((forward_loss - loss(&x, &dy, n, hw, &w1, &b1, &w2, &b2, c, r)).abs() < 1e-5);
        let (mut gw1, mut gb1, mut gw2, mut gb2) = (vec![0f32; c * r], vec![0f32; r], vec![0f32; r * c], vec![0f32; c]);
        let dx = backward(&x, &dy, hw, &p, &cache, SeGrads { w1: &mut gw1, b1: &mut gb1, w2: &mut gw2, b2: &mut gb2 });
        let h = 1e-3f32;
        let numeric = |which: usize, i: usize| {
            let mut v = [x.clone(), w1.clone(), b1.clone(), w2.clone(), b2.clone()];
            v[which][i] += h;
            let up = loss(&v[0], &dy, n, hw, &v[1], &v[2], &v[3], &v[4], c, r);
            v[which][i] -= 2.0 * h;
            let down = loss(&v[0], &dy, n, hw, &v[1], &v[2], &v[3], &v[4], c, r);
            (up - down) / (2.0 * h as f64)
        };
        for (which, got) in [(0, &dx[..]), (1, &gw1[..]), (2, &gb1[..]), (3, &gw2[..]), (4, &gb2[..])] {
            for (i, &g) in got.iter().enumerate() {
                let want = numeric(which, i);
                assert!((g as f64 - want).abs() < 2e-3 * want.abs().max(1.0), "tensor {which}[{i}]: {g} vs {want}");
            }
        }
    }
}
