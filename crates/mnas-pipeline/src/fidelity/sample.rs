//! A fixed sample of the search space that covers its range of model sizes: many uniform draws,
//! sorted by MACs and cut into equal-count strata, one architecture drawn from each.

use mnas_space::{count, Arch, SearchSpace};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One sampled architecture with the counts the baselines rank by (deployed form: 224 px, width
/// 1.0, `classes` outputs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledArch {
    pub index: usize,
    pub tokens: Vec<usize>,
    pub arch: Arch,
    pub params: u64,
    pub macs: u64,
}

/// Uniform draws per stratum.
const DRAWS_PER_STRATUM: usize = 40;

/// `n` architectures from `seed`, stratified by MACs, smallest first.
pub fn stratified_sample(space: &SearchSpace, n: usize, seed: u64, classes: u32) -> Vec<SampledArch> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pool: Vec<(Vec<usize>, Arch, u64, u64)> = (0..n * DRAWS_PER_STRATUM)
        .map(|_| {
            let tokens = space.sample_tokens(&mut rng);
            let mut arch = space.decode(&tokens).expect("sampled tokens are in range");
            arch.num_classes = classes;
            let c = count(&arch);
            (tokens, arch, c.params, c.macs)
        })
        .collect();
    pool.sort_by_key(|p| p.3);
    (0..n)
        .map(|i| {
            let (lo, hi) = (i * pool.len() / n, (i + 1) * pool.len() / n);
            let (tokens, arch, params, macs) = pool[rng.gen_range(lo..hi)].clone();
            SampledArch { index: i, tokens, arch, params, macs }
        })
        .collect()
}

/// A short fingerprint of the search space's definition: samples of two spaces never compare.
pub fn space_id(space: &SearchSpace) -> String {
    let json = serde_json::to_string(space).expect("the space serialises");
    let h = json.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3));
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_is_seeded_and_spans_the_mac_range() {
        let space = SearchSpace::default();
        let a = stratified_sample(&space, 12, 7, 10);
        assert_eq!(a, stratified_sample(&space, 12, 7, 10));
        assert_ne!(a, stratified_sample(&space, 12, 8, 10));
        assert!(a.windows(2).all(|w| w[0].macs <= w[1].macs), "sorted by MACs");
        // Strata cover the range: the smallest and largest of the sample are far apart, unlike
        // 12 uniform draws typically are.
        assert!(a[11].macs as f64 > 2.5 * a[0].macs as f64, "{} .. {}", a[0].macs, a[11].macs);
        assert!(a.iter().enumerate().all(|(i, s)| s.index == i && s.arch.num_classes == 10));
        assert_eq!(space_id(&space), space_id(&SearchSpace::default()));
        let other = SearchSpace { stem_channels: 16, ..SearchSpace::default() };
        assert_ne!(space_id(&space), space_id(&other));
    }
}
