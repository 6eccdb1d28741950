//! The paper's factorized hierarchical search space (MnasNet §4.1) and its token codec.
//!
//! A model is 7 blocks x 6 decisions = 42 tokens, each token an index into that decision's options.
//! Strides, the stem and the head come from the MobileNetV2 skeleton and are not searched.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::arch::{Activation, Arch, Block, ConvOp, SkipOp};
use crate::error::SpaceError;

/// MobileNetV2 1.0 skeleton: (output channels, layers, first stride) per block.
pub const MOBILENETV2_SKELETON: [(u32, u32, u32); 7] =
    [(16, 1, 1), (24, 2, 2), (32, 3, 2), (64, 4, 2), (96, 3, 1), (160, 3, 2), (320, 1, 1)];

/// One searched decision of a block, in token order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Decision {
    ConvOp,
    Kernel,
    SeRatio,
    SkipOp,
    Filters,
    Layers,
}

pub const DECISIONS: [Decision; 6] =
    [Decision::ConvOp, Decision::Kernel, Decision::SeRatio, Decision::SkipOp, Decision::Filters, Decision::Layers];

/// (op, expansion) options: conv, dconv, MBConv3, MBConv6.
pub const CONV_OPS: [(ConvOp, u32, &str); 4] = [
    (ConvOp::Conv, 1, "conv"),
    (ConvOp::SepConv, 1, "dconv"),
    (ConvOp::MbConv, 3, "mbconv3"),
    (ConvOp::MbConv, 6, "mbconv6"),
];
pub const KERNELS: [u32; 2] = [3, 5];
pub const SE_RATIOS: [f64; 2] = [0.0, 0.25];
pub const SKIP_OPS: [(SkipOp, &str); 3] =
    [(SkipOp::Pool, "pool"), (SkipOp::Identity, "identity"), (SkipOp::None, "none")];
pub const FILTER_MULTIPLIERS: [f64; 3] = [0.75, 1.0, 1.25];
pub const LAYER_DELTAS: [i32; 3] = [-1, 0, 1];

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Decision::ConvOp => "conv_op",
            Decision::Kernel => "kernel",
            Decision::SeRatio => "se_ratio",
            Decision::SkipOp => "skip_op",
            Decision::Filters => "filters",
            Decision::Layers => "layers",
        }
    }

    pub fn num_options(self) -> usize {
        match self {
            Decision::ConvOp => CONV_OPS.len(),
            Decision::Kernel => KERNELS.len(),
            Decision::SeRatio => SE_RATIOS.len(),
            Decision::SkipOp => SKIP_OPS.len(),
            Decision::Filters => FILTER_MULTIPLIERS.len(),
            Decision::Layers => LAYER_DELTAS.len(),
        }
    }

    pub fn option_labels(self) -> Vec<String> {
        match self {
            Decision::ConvOp => CONV_OPS.iter().map(|o| o.2.to_string()).collect(),
            Decision::Kernel => KERNELS.iter().map(|k| format!("{k}x{k}")).collect(),
            Decision::SeRatio => SE_RATIOS.iter().map(|r| format!("{r}")).collect(),
            Decision::SkipOp => SKIP_OPS.iter().map(|s| s.1.to_string()).collect(),
            Decision::Filters => FILTER_MULTIPLIERS.iter().map(|m| format!("{m}x")).collect(),
            Decision::Layers => LAYER_DELTAS.iter().map(|d| format!("{d:+}")).collect(),
        }
    }
}

/// [our choice] Filters are rounded to the nearest multiple of 8 (ties up, at least 8), so that
/// 0.75x and 1.25x stay distinct from 1.0x wherever the skeleton allows it.
pub fn round_filters(channels: u32, multiplier: f64) -> u32 {
    let v = channels as f64 * multiplier / 8.0;
    ((v + 0.5).floor() as u32 * 8).max(8)
}

/// The search space: the skeleton plus the fixed parts of every sampled model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchSpace {
    pub skeleton: Vec<(u32, u32, u32)>,
    pub stem_channels: u32,
    pub head_channels: u32,
    pub num_classes: u32,
    pub resolution: u32,
}

impl Default for SearchSpace {
    fn default() -> Self {
        SearchSpace {
            skeleton: MOBILENETV2_SKELETON.to_vec(),
            stem_channels: 32,
            head_channels: 1280,
            num_classes: 1000,
            resolution: 224,
        }
    }
}

impl SearchSpace {
    pub fn num_blocks(&self) -> usize {
        self.skeleton.len()
    }

    /// Tokens per model: 6 per block.
    pub fn num_tokens(&self) -> usize {
        self.num_blocks() * DECISIONS.len()
    }

    /// Option count of each token position, in order.
    pub fn token_options(&self) -> Vec<usize> {
        (0..self.num_blocks()).flat_map(|_| DECISIONS.iter().map(|d| d.num_options())).collect()
    }

    /// Per-block size S (token combinations of one block): 432.
    pub fn block_size(&self) -> u64 {
        DECISIONS.iter().map(|d| d.num_options() as u64).product()
    }

    /// Token combinations of the whole space, S^B (exact; 432^7 fits in u128).
    pub fn size(&self) -> u128 {
        (self.block_size() as u128).pow(self.num_blocks() as u32)
    }

    /// Distinct block configurations of block `i` once options that build the same layers are
    /// merged (layer count clamped at 1, filter roundings that coincide).
    pub fn distinct_block_configs(&self, i: usize) -> u64 {
        let (c, n, _) = self.skeleton[i];
        let mut filters: Vec<u32> = FILTER_MULTIPLIERS.iter().map(|&m| round_filters(c, m)).collect();
        filters.dedup();
        let mut layers: Vec<u32> = LAYER_DELTAS.iter().map(|&d| (n as i32 + d).max(1) as u32).collect();
        layers.dedup();
        (CONV_OPS.len() * KERNELS.len() * SE_RATIOS.len() * SKIP_OPS.len() * filters.len() * layers.len()) as u64
    }

    /// Product of the distinct per-block configurations: a closer count of different networks.
    pub fn distinct_size(&self) -> u128 {
        (0..self.num_blocks()).map(|i| self.distinct_block_configs(i) as u128).product()
    }

    /// Decodes a token list into an Arch.
    pub fn decode(&self, tokens: &[usize]) -> Result<Arch, SpaceError> {
        if tokens.len() != self.num_tokens() {
            return Err(SpaceError::Tokens(format!("expected {} tokens, got {}", self.num_tokens(), tokens.len())));
        }
        for (pos, (&t, n)) in tokens.iter().zip(self.token_options()).enumerate() {
            if t >= n {
                let d = DECISIONS[pos % DECISIONS.len()];
                return Err(SpaceError::Tokens(format!(
                    "token {pos} (block {}, {}) is {t}, but only {n} options exist",
                    pos / DECISIONS.len(),
                    d.name()
                )));
            }
        }
        let blocks = self
            .skeleton
            .iter()
            .zip(tokens.chunks(DECISIONS.len()))
            .map(|(&(c, n, s), t)| {
                let (op, expand, _) = CONV_OPS[t[0]];
                Block {
                    op,
                    kernel: KERNELS[t[1]],
                    stride: s,
                    expand,
                    se_ratio: SE_RATIOS[t[2]],
                    skip: SKIP_OPS[t[3]].0,
                    out_channels: round_filters(c, FILTER_MULTIPLIERS[t[4]]),
                    repeats: (n as i32 + LAYER_DELTAS[t[5]]).max(1) as u32,
                }
            })
            .collect();
        Ok(Arch {
            name: None,
            stem_channels: self.stem_channels,
            blocks,
            head_channels: self.head_channels,
            num_classes: self.num_classes,
            resolution: self.resolution,
            width: 1.0,
            activation: Activation::Relu,
            dropout: 0.2,
        })
    }

    /// Encodes an Arch of this space back into tokens. Where two options build the same network
    /// (a clamped layer count, coinciding filter roundings) the first matching option is chosen.
    pub fn encode(&self, arch: &Arch) -> Result<Vec<usize>, SpaceError> {
        let fail = |msg: String| Err(SpaceError::Tokens(msg));
        if arch.blocks.len() != self.num_blocks() {
            return fail(format!("the space has {} blocks, the arch {}", self.num_blocks(), arch.blocks.len()));
        }
        if arch.width != 1.0 || arch.stem_channels != self.stem_channels || arch.head_channels != self.head_channels {
            return fail("stem, head and width must be the space's own".into());
        }
        let mut tokens = Vec::with_capacity(self.num_tokens());
        for (i, (b, &(c, n, s))) in arch.blocks.iter().zip(&self.skeleton).enumerate() {
            let find = |what: &str, idx: Option<usize>| {
                idx.ok_or_else(|| SpaceError::Tokens(format!("block {i}: {what} is not an option of the space")))
            };
            if b.stride != s {
                return fail(format!("block {i}: stride {} differs from the skeleton's {s}", b.stride));
            }
            tokens.push(find("conv op", CONV_OPS.iter().position(|o| o.0 == b.op && o.1 == b.expand))?);
            tokens.push(find("kernel", KERNELS.iter().position(|&k| k == b.kernel))?);
            tokens.push(find("SE ratio", SE_RATIOS.iter().position(|&r| r == b.se_ratio))?);
            tokens.push(find("skip op", SKIP_OPS.iter().position(|o| o.0 == b.skip))?);
            tokens
                .push(find("filters", FILTER_MULTIPLIERS.iter().position(|&m| round_filters(c, m) == b.out_channels))?);
            tokens.push(find("layers", LAYER_DELTAS.iter().position(|&d| (n as i32 + d).max(1) as u32 == b.repeats))?);
        }
        Ok(tokens)
    }

    /// Uniform random tokens.
    pub fn sample_tokens(&self, rng: &mut impl Rng) -> Vec<usize> {
        self.token_options().into_iter().map(|n| rng.gen_range(0..n)).collect()
    }

    /// `n` models sampled uniformly, reproducible from `seed`.
    pub fn sample(&self, seed: u64, n: usize) -> Vec<(Vec<usize>, Arch)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                let tokens = self.sample_tokens(&mut rng);
                let arch = self.decode(&tokens).expect("sampled tokens are in range");
                (tokens, arch)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_432_per_block() {
        let space = SearchSpace::default();
        assert_eq!(space.block_size(), 432);
        assert_eq!(space.num_tokens(), 42);
        assert_eq!(space.size(), 432u128.pow(7));
        assert!(space.distinct_size() < space.size());
    }

    #[test]
    fn samples_are_valid_and_round_trip() {
        let space = SearchSpace::default();
        for (tokens, arch) in space.sample(7, 200) {
            arch.validate().unwrap();
            let back = space.encode(&arch).unwrap();
            assert_eq!(space.decode(&back).unwrap(), arch);
            // Re-encoding is canonical: decode(encode(x)) == x for every sampled x.
            assert_eq!(space.decode(&tokens).unwrap(), arch);
        }
    }

    #[test]
    fn sampling_is_deterministic_per_seed() {
        let space = SearchSpace::default();
        assert_eq!(space.sample(3, 5), space.sample(3, 5));
        assert_ne!(space.sample(3, 5), space.sample(4, 5));
    }

    #[test]
    fn bad_tokens_are_rejected() {
        let space = SearchSpace::default();
        assert!(space.decode(&[0; 41]).is_err());
        let mut t = vec![0; 42];
        t[6] = 4;
        let err = space.decode(&t).unwrap_err().to_string();
        assert!(err.contains("block 1") && err.contains("conv_op"), "{err}");
    }

    #[test]
    fn filter_rounding() {
        assert_eq!(
            [24, 32, 64, 320].map(|c| FILTER_MULTIPLIERS.map(|m| round_filters(c, m))),
            [[16, 24, 32], [24, 32, 40], [48, 64, 80], [240, 320, 400]]
        );
    }
}
