//! The ops mnas builds on (grouped and dense convolution, our train-mode BatchNorm) against direct
//! f64 implementations: forward and every gradient.

use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor};
use mnas_model::backend::CpuTrain;
use mnas_model::burn;

type B = CpuTrain;

fn v(t: Tensor<B, 4>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}
fn vi(t: Tensor<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend, 4>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}

fn check(n: usize, c: usize, h: usize, k: usize, s: usize) -> (f64, f64, f64) {
    check_conv(n, c, c, c, h, k, s)
}

fn check_conv(n: usize, c: usize, cout: usize, groups: usize, h: usize, k: usize, s: usize) -> (f64, f64, f64) {
    let dev = Default::default();
    let x = Tensor::<B, 4>::random([n, c, h, h], Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let cig = c / groups;
    let cog = cout / groups;
    let w = Tensor::<B, 4>::random([cout, cig, k, k], Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let p = k / 2;
    let y = conv2d(x.clone(), w.clone(), None, ConvOptions::new([s, s], [p, p], [1, 1], groups));
    let o = (h + 2 * p - k) / s + 1;
    let dy = Tensor::<B, 4>::random([n, cout, o, o], Distribution::Normal(0.0, 1.0), &dev);
    let loss = (y.clone() * dy.clone()).sum();
    let g = loss.backward();
    let (xv, wv, dyv, yv) = (v(x.clone()), v(w.clone()), v(dy), v(y));
    let gx = vi(x.grad(&g).unwrap());
    let gw = vi(w.grad(&g).unwrap());
    let mut ry = vec![0.0; n * cout * o * o];
    let mut rgx = vec![0.0; n * c * h * h];
    let mut rgw = vec![0.0; cout * cig * k * k];
    for b in 0..n {
        for oc in 0..cout {
            for icg in 0..cig {
                let ch = (oc / cog) * cig + icg;
                for oy in 0..o {
                    for ox in 0..o {
                        let yi = ((b * cout + oc) * o + oy) * o + ox;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - p as isize;
                                let ix = (ox * s + kx) as isize - p as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= h as isize {
                                    continue;
                                }
                                let xi = ((b * c + ch) * h + iy as usize) * h + ix as usize;
                                let wi = ((oc * cig + icg) * k + ky) * k + kx;
                                ry[yi] += xv[xi] * wv[wi];
                                rgx[xi] += dyv[yi] * wv[wi];
                                rgw[wi] += dyv[yi] * xv[xi];
                            }
                        }
                    }
                }
            }
        }
    }
    let err = |a: &[f64], b: &[f64]| {
        let m = b.iter().fold(0f64, |m, x| m.max(x.abs()));
        a.iter().zip(b).fold(0f64, |e, (x, y)| e.max((x - y).abs())) / m
    };
    (err(&yv, &ry), err(&gx, &rgx), err(&gw, &rgw))
}

#[test]
fn depthwise_conv_matches_direct_computation() {
    let mut worst: f64 = 0.0;
    for &(n, c, h) in &[(1, 8, 8), (4, 96, 4), (4, 528, 4), (2, 24, 16), (4, 48, 2), (3, 16, 7), (8, 8, 1)] {
        for k in [3, 5] {
            for s in [1, 2] {
                let (ey, egx, egw) = check(n, c, h, k, s);
                println!("n{n} c{c} h{h} k{k} s{s}: y {ey:.1e} dx {egx:.1e} dw {egw:.1e}");
                worst = worst.max(ey).max(egx).max(egw);
            }
        }
    }
    assert!(worst < 1e-5, "worst relative error {worst:e}");
}

#[test]
fn dense_conv_matches_direct_computation() {
    let mut worst: f64 = 0.0;
    for &(n, cin, cout, h, k, s) in &[
        (4, 88, 528, 4, 1, 1),
        (4, 528, 88, 4, 1, 1),
        (4, 64, 384, 8, 1, 1),
        (2, 24, 144, 16, 1, 1),
        (4, 3, 24, 64, 3, 2),
        (2, 16, 32, 9, 3, 1),
        (2, 16, 32, 9, 5, 2),
    ] {
        let (ey, egx, egw) = check_conv(n, cin, cout, 1, h, k, s);
        println!("dense n{n} {cin}->{cout} h{h} k{k} s{s}: y {ey:.1e} dx {egx:.1e} dw {egw:.1e}");
        worst = worst.max(ey).max(egx).max(egw);
    }
    assert!(worst < 1e-5, "worst relative error {worst:e}");
}

#[test]
fn batchnorm_train_matches_direct_computation() {
    use mnas_model::layers::BatchNorm;
    let dev = Default::default();
    for &(n, c, h) in &[(4usize, 88usize, 4usize), (4, 528, 4), (2, 16, 2), (8, 32, 1), (2, 24, 16)] {
        let mut bn = BatchNorm::<B>::new(c as u32, &dev);
        bn.weight = burn::module::Param::from_tensor(Tensor::random([c], Distribution::Uniform(0.5, 1.5), &dev));
        bn.bias = burn::module::Param::from_tensor(Tensor::random([c], Distribution::Normal(0.0, 0.5), &dev));
        let x = (Tensor::<B, 4>::random([n, c, h, h], Distribution::Normal(0.0, 1.0), &dev) * 3.0 + 1.0).require_grad();
        let y = bn.forward(x.clone());
        let dy = Tensor::<B, 4>::random([n, c, h, h], Distribution::Normal(0.0, 1.0), &dev);
        let g = (y.clone() * dy.clone()).sum().backward();
        let (xv, yv, dyv) = (v(x.clone()), v(y), v(dy));
        let gx = vi(x.grad(&g).unwrap());
        let gamma: Vec<f64> = bn.weight.val().into_data().convert::<f64>().to_vec().unwrap();
        let beta: Vec<f64> = bn.bias.val().into_data().convert::<f64>().to_vec().unwrap();
        let ggamma: Vec<f64> = bn.weight.grad(&g).unwrap().into_data().convert::<f64>().to_vec().unwrap();
        let m = (n * h * h) as f64;
        let idx = |b: usize, ch: usize, i: usize| (b * c + ch) * h * h + i;
        let (mut ey, mut ex, mut eg) = (0f64, 0f64, 0f64);
        for ch in 0..c {
            let vals: Vec<(usize, usize)> = (0..n).flat_map(|b| (0..h * h).map(move |i| (b, i))).collect();
            let mu = vals.iter().map(|&(b, i)| xv[idx(b, ch, i)]).sum::<f64>() / m;
            let var = vals.iter().map(|&(b, i)| (xv[idx(b, ch, i)] - mu).powi(2)).sum::<f64>() / m;
            let inv = 1.0 / (var + 1e-5).sqrt();
            let xhat = |b, i| (xv[idx(b, ch, i)] - mu) * inv;
            let mdy = vals.iter().map(|&(b, i)| dyv[idx(b, ch, i)]).sum::<f64>() / m;
            let mdyx = vals.iter().map(|&(b, i)| dyv[idx(b, ch, i)] * xhat(b, i)).sum::<f64>() / m;
            eg = eg.max((ggamma[ch] - mdyx * m).abs() / (mdyx * m).abs().max(1.0));
            for &(b, i) in &vals {
                let j = idx(b, ch, i);
                ey = ey.max((yv[j] - (xhat(b, i) * gamma[ch] + beta[ch])).abs());
                let dx = gamma[ch] * inv * (dyv[j] - mdy - xhat(b, i) * mdyx);
                ex = ex.max((gx[j] - dx).abs() / dx.abs().max(1.0));
            }
        }
        println!("bn n{n} c{c} h{h}: y {ey:.1e} dx {ex:.1e} dgamma {eg:.1e}");
        assert!(ey < 1e-4 && ex < 1e-4 && eg < 1e-4);
    }
}

/// The hand-written depthwise kernels (`cpu_ops`) against the same direct f64 computation, on the
/// shapes the search space produces (k 3/5, stride 1/2, maps from 1x1 to 16x16, odd sizes).
#[test]
fn fast_depthwise_conv_matches_direct_computation() {
    let dev = Default::default();
    let mut worst: f64 = 0.0;
    for &(n, c, h) in &[(1, 8, 8), (4, 96, 4), (2, 24, 16), (4, 48, 2), (3, 16, 7), (8, 8, 1), (2, 5, 9)] {
        for k in [3, 5] {
            for s in [1, 2] {
                let x = Tensor::<B, 4>::random([n, c, h, h], Distribution::Normal(0.0, 1.0), &dev).require_grad();
                let w = Tensor::<B, 4>::random([c, 1, k, k], Distribution::Normal(0.0, 1.0), &dev).require_grad();
                let y = mnas_model::cpu_ops::depthwise_conv2d(&x, &w, s).expect("CpuTrain takes the fast path");
                let generic = conv2d(x.clone(), w.clone(), None, ConvOptions::new([s, s], [k / 2, k / 2], [1, 1], c));
                assert_eq!(y.dims(), generic.dims());
                let dy = Tensor::<B, 4>::random(y.dims(), Distribution::Normal(0.0, 1.0), &dev);
                let g = (y.clone() * dy.clone()).sum().backward();
                let (gx, gw) = (vi(x.grad(&g).unwrap()), vi(w.grad(&g).unwrap()));
                let (ry, rgx, rgw) = direct_depthwise(&v(x), &v(w), &v(dy), n, c, h, k, s);
                let (ey, egx, egw) = (rel_err(&v(y), &ry), rel_err(&gx, &rgx), rel_err(&gw, &rgw));
                println!("fast n{n} c{c} h{h} k{k} s{s}: y {ey:.1e} dx {egx:.1e} dw {egw:.1e}");
                worst = worst.max(ey).max(egx).max(egw);
            }
        }
    }
    assert!(worst < 1e-5, "worst relative error {worst:e}");
}

/// Inference (no autodiff) takes the same kernel and gives the generic convolution's output.
#[test]
fn fast_depthwise_forward_matches_generic_on_inference_backend() {
    type I = mnas_model::backend::Cpu;
    let dev = Default::default();
    let x = Tensor::<I, 4>::random([3, 40, 7, 7], Distribution::Normal(0.0, 1.0), &dev);
    let w = Tensor::<I, 4>::random([40, 1, 5, 5], Distribution::Normal(0.0, 1.0), &dev);
    for s in [1, 2] {
        let fast = mnas_model::cpu_ops::depthwise_conv2d(&x, &w, s).expect("Cpu takes the fast path");
        let generic = conv2d(x.clone(), w.clone(), None, ConvOptions::new([s, s], [2, 2], [1, 1], 40));
        let (a, b) = (
            fast.into_data().convert::<f64>().to_vec::<f64>().unwrap(),
            generic.into_data().convert::<f64>().to_vec::<f64>().unwrap(),
        );
        assert!(rel_err(&a, &b) < 1e-5, "stride {s}: {:e}", rel_err(&a, &b));
    }
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let m = b.iter().fold(0f64, |m, x| m.max(x.abs()));
    a.iter().zip(b).fold(0f64, |e, (x, y)| e.max((x - y).abs())) / m
}

#[allow(clippy::too_many_arguments)]
fn direct_depthwise(
    xv: &[f64],
    wv: &[f64],
    dyv: &[f64],
    n: usize,
    c: usize,
    h: usize,
    k: usize,
    s: usize,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let p = k / 2;
    let o = (h + 2 * p - k) / s + 1;
    let (mut ry, mut rgx, mut rgw) = (vec![0.0; n * c * o * o], vec![0.0; n * c * h * h], vec![0.0; c * k * k]);
    for b in 0..n {
        for ch in 0..c {
            for oy in 0..o {
                for ox in 0..o {
                    let yi = ((b * c + ch) * o + oy) * o + ox;
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * s + ky) as isize - p as isize;
                            let ix = (ox * s + kx) as isize - p as isize;
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= h as isize {
                                continue;
                            }
                            let xi = ((b * c + ch) * h + iy as usize) * h + ix as usize;
                            let wi = (ch * k + ky) * k + kx;
                            ry[yi] += xv[xi] * wv[wi];
                            rgx[xi] += dyv[yi] * wv[wi];
                            rgw[wi] += dyv[yi] * xv[xi];
                        }
                    }
                }
            }
        }
    }
    (ry, rgx, rgw)
}
