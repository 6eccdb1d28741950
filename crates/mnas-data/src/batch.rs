//! Turning an [`ImageSet`] into normalised NCHW f32 batches, with seeded augmentation.

use image::imageops::FilterType;
use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::set::ImageSet;

/// Training-time augmentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Augment {
    /// No augmentation (evaluation).
    None,
    /// Random crop after zero-padding by `pad` pixels, and a random horizontal flip (CIFAR style).
    PadCrop { pad: usize },
    /// Random-resized crop (area 25-100%, aspect 3/4-4/3) and a random horizontal flip
    /// (ImageNet style, for larger images).
    ResizedCrop,
}

impl Augment {
    /// The usual choice for an image size: pad-crop for small images, resized crops above 64 px.
    pub fn for_size(size: usize) -> Augment {
        if size <= 64 {
            Augment::PadCrop { pad: size / 8 }
        } else {
            Augment::ResizedCrop
        }
    }
}

/// Memory order of a batch's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// N x 3 x size x size (burn, PyTorch).
    Nchw,
    /// N x size x size x 3 (the CPU engine: channels innermost).
    Nhwc,
}

/// A batch ready for a model: `images` is normalised, in the layout it was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<i64>,
    pub size: usize,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Per-channel normalisation, in [0, 1] pixel units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

fn augment_image(src: &[u8], size: usize, aug: Augment, rng: &mut ChaCha8Rng, out: &mut Vec<u8>) {
    out.clear();
    match aug {
        Augment::None => out.extend_from_slice(src),
        Augment::PadCrop { pad } => {
            let (dx, dy) = (rng.gen_range(0..=2 * pad), rng.gen_range(0..=2 * pad));
            let flip = rng.gen_bool(0.5);
            out.resize(size * size * 3, 0);
            for y in 0..size {
                let sy = (y + dy) as isize - pad as isize;
                if sy < 0 || sy >= size as isize {
                    continue;
                }
                for x in 0..size {
                    let sx = (x + dx) as isize - pad as isize;
                    if sx < 0 || sx >= size as isize {
                        continue;
                    }
                    let tx = if flip { size - 1 - x } else { x };
                    let s = (sy as usize * size + sx as usize) * 3;
                    let d = (y * size + tx) * 3;
                    out[d..d + 3].copy_from_slice(&src[s..s + 3]);
                }
            }
        }
        Augment::ResizedCrop => {
            let area = rng.gen_range(0.25..=1.0) * (size * size) as f64;
            let aspect = (rng.gen_range((0.75f64).ln()..=(4.0f64 / 3.0).ln())).exp();
            let w = ((area * aspect).sqrt().round() as usize).clamp(1, size);
            let h = ((area / aspect).sqrt().round() as usize).clamp(1, size);
            let (x0, y0) = (rng.gen_range(0..=size - w), rng.gen_range(0..=size - h));
            let flip = rng.gen_bool(0.5);
            let img =
                RgbImage::from_raw(size as u32, size as u32, src.to_vec()).expect("image buffer of the set's size");
            let crop = image::imageops::crop_imm(&img, x0 as u32, y0 as u32, w as u32, h as u32).to_image();
            let mut resized = image::imageops::resize(&crop, size as u32, size as u32, FilterType::Triangle);
            if flip {
                image::imageops::flip_horizontal_in_place(&mut resized);
            }
            out.extend_from_slice(resized.as_raw());
        }
    }
}

/// Batches of one pass over `set` in NCHW: shuffled and augmented from `seed` when `shuffle` is
/// set, in order otherwise. The last batch may be smaller; `drop_last` drops it (training).
pub fn batches(
    set: &ImageSet,
    batch_size: usize,
    norm: Normalize,
    aug: Augment,
    shuffle: Option<u64>,
    drop_last: bool,
) -> impl Iterator<Item = Batch> + '_ {
    batches_in(set, batch_size, norm, aug, shuffle, drop_last, Layout::Nchw)
}

/// [`batches`] in the given layout.
pub fn batches_in(
    set: &ImageSet,
    batch_size: usize,
    norm: Normalize,
    aug: Augment,
    shuffle: Option<u64>,
    drop_last: bool,
    layout: Layout,
) -> impl Iterator<Item = Batch> + '_ {
    let mut order: Vec<usize> = (0..set.len()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(shuffle.unwrap_or(0));
    if shuffle.is_some() {
        order.shuffle(&mut rng);
    }
    let batch_size = batch_size.max(1);
    let chunks: Vec<Vec<usize>> =
        order.chunks(batch_size).filter(|c| !drop_last || c.len() == batch_size).map(|c| c.to_vec()).collect();
    let size = set.size;
    let plane = size * size;
    let scale: [f32; 3] = [0, 1, 2].map(|c| 1.0 / (255.0 * norm.std[c]));
    let shift: [f32; 3] = [0, 1, 2].map(|c| norm.mean[c] / norm.std[c]);
    chunks.into_iter().map(move |idx| {
        let mut images = vec![0f32; idx.len() * 3 * plane];
        let mut buf = Vec::with_capacity(plane * 3);
        for (b, &i) in idx.iter().enumerate() {
            augment_image(set.image(i), size, aug, &mut rng, &mut buf);
            let base = b * 3 * plane;
            match layout {
                Layout::Nchw => {
                    for p in 0..plane {
                        for c in 0..3 {
                            images[base + c * plane + p] = buf[p * 3 + c] as f32 * scale[c] - shift[c];
                        }
                    }
                }
                Layout::Nhwc => {
                    for (i, &v) in buf.iter().enumerate() {
                        images[base + i] = v as f32 * scale[i % 3] - shift[i % 3];
                    }
                }
            }
        }
        Batch { images, labels: idx.iter().map(|&i| set.labels[i] as i64).collect(), size }
    })
}
