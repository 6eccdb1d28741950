//! Decoded images held in memory as u8, all of one size.

/// Images of one split: `len` images of `size` x `size` x 3, HWC, u8, with their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSet {
    pub size: usize,
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
}

impl ImageSet {
    pub fn new(size: usize) -> Self {
        ImageSet { size, pixels: Vec::new(), labels: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_bytes(&self) -> usize {
        self.size * self.size * 3
    }

    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_bytes();
        &self.pixels[i * n..(i + 1) * n]
    }

    pub fn push(&mut self, pixels: &[u8], label: u32) {
        debug_assert_eq!(pixels.len(), self.image_bytes());
        self.pixels.extend_from_slice(pixels);
        self.labels.push(label);
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        let mut out = ImageSet::new(self.size);
        out.pixels.reserve(indices.len() * self.image_bytes());
        for &i in indices {
            out.push(self.image(i), self.labels[i]);
        }
        out
    }

    /// A 64-bit fingerprint of the size, pixels and labels (stable across platforms and
    /// versions): two sets with equal hashes hold the same images in the same order.
    pub fn content_hash(&self) -> u64 {
        let mut h = Fnv::new();
        h.write_u64(self.size as u64);
        h.write_u64(self.labels.len() as u64);
        h.write_bytes(&self.pixels);
        for &l in &self.labels {
            h.write_u64(l as u64);
        }
        h.finish()
    }

    /// Per-channel mean and standard deviation of the pixels, in [0, 1] units.
    pub fn channel_stats(&self) -> ([f32; 3], [f32; 3]) {
        let mut sum = [0f64; 3];
        let mut sq = [0f64; 3];
        for px in self.pixels.chunks_exact(3) {
            for c in 0..3 {
                let v = px[c] as f64 / 255.0;
                sum[c] += v;
                sq[c] += v * v;
            }
        }
        let n = (self.pixels.len() / 3).max(1) as f64;
        let mean = sum.map(|s| s / n);
        let std: Vec<f64> = (0..3).map(|c| (sq[c] / n - mean[c] * mean[c]).max(1e-12).sqrt()).collect();
        (mean.map(|m| m as f32), [std[0] as f32, std[1] as f32, std[2] as f32])
    }
}

/// FNV-1a over 8-byte words (bytes for the tail): fast enough for 150 MB in a fraction of a
/// second, and defined here so that it never changes with a compiler or dependency.
pub(crate) struct Fnv(u64);

impl Fnv {
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write_u64(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(Self::PRIME);
    }

    pub(crate) fn write_bytes(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.write_u64(u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
        }
        for &b in words.remainder() {
            self.write_u64(b as u64);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}
