//! The one interface every search strategy implements.
//!
//! A search alternates `propose` (a step's models, as token lists) and `observe` (their rewards,
//! in the same order). Everything a strategy needs to continue — network weights, optimizer
//! moments, RNG position, population — is in `save_state`, which the store writes after every
//! step; `load_state` on a fresh strategy built from the same config continues bit-for-bit, so a
//! search killed at any moment and resumed proposes exactly what it would have proposed.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SearchError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// The paper's LSTM controller trained with PPO.
    Ppo,
    /// Uniform samples from the space.
    Random,
    /// Regularized (aging) evolution, Real et al. 2019.
    Evolution,
}

impl StrategyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Ppo => "ppo",
            StrategyKind::Random => "random",
            StrategyKind::Evolution => "evolution",
        }
    }
}

pub trait Strategy: Send {
    fn kind(&self) -> StrategyKind;
    /// `n` token lists for the next step. Deterministic given the state.
    fn propose(&mut self, n: usize) -> Result<Vec<Vec<usize>>>;
    /// Rewards of the last proposal, same order. Failed trials come with `FAILED_REWARD`.
    fn observe(&mut self, proposals: &[Vec<usize>], rewards: &[f64]) -> Result<()>;
    /// Everything needed to continue (bytes; the store keeps them per step).
    fn save_state(&self) -> Result<Vec<u8>>;
    fn load_state(&mut self, bytes: &[u8]) -> Result<()>;
}

/// Checks what `observe` receives before any strategy learns from it: a reward per proposal, every
/// proposal a valid token list of the space, every reward a number.
pub(crate) fn check_observation(options: &[usize], proposals: &[Vec<usize>], rewards: &[f64]) -> Result<()> {
    if proposals.len() != rewards.len() {
        return Err(SearchError::Config(format!(
            "observe got {} rewards for {} proposals",
            rewards.len(),
            proposals.len()
        )));
    }
    for (i, (tokens, reward)) in proposals.iter().zip(rewards).enumerate() {
        if tokens.len() != options.len() {
            return Err(SearchError::Config(format!(
                "proposal {i} has {} tokens, the space has {}",
                tokens.len(),
                options.len()
            )));
        }
        if let Some(pos) = tokens.iter().zip(options).position(|(&t, &n)| t >= n) {
            return Err(SearchError::Config(format!(
                "proposal {i}: token {pos} is {}, but only {} options exist",
                tokens[pos], options[pos]
            )));
        }
        if !reward.is_finite() {
            return Err(SearchError::Config(format!(
                "reward {i} is {reward}; failed trials must be reported as FAILED_REWARD"
            )));
        }
    }
    Ok(())
}

/// A ChaCha8 generator's exact position, so a resumed strategy draws the very numbers it would have drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RngState {
    seed: [u8; 32],
    stream: u64,
    /// u128 as a decimal string: JSON numbers lose precision beyond 2^53 in many readers.
    word_pos: String,
}

impl RngState {
    pub(crate) fn of(rng: &ChaCha8Rng) -> RngState {
        RngState { seed: rng.get_seed(), stream: rng.get_stream(), word_pos: rng.get_word_pos().to_string() }
    }

    pub(crate) fn restore(&self) -> Result<ChaCha8Rng> {
        let word_pos: u128 = self
            .word_pos
            .parse()
            .map_err(|_| SearchError::State(format!("RNG position {:?} is not a number", self.word_pos)))?;
        let mut rng = ChaCha8Rng::from_seed(self.seed);
        rng.set_stream(self.stream);
        rng.set_word_pos(word_pos);
        Ok(rng)
    }
}

/// Strategy states are framed as `MNAS` + kind tag (8 bytes) + format version + FNV-1a checksum of the
/// payload + length-prefixed sections. The checksum turns truncated or foreign bytes into a clear
/// error before any decoder (some of burn's panic on malformed input) sees them.
const MAGIC: &[u8; 4] = b"MNAS";
const FORMAT_VERSION: u32 = 1;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

fn kind_tag(kind: StrategyKind) -> [u8; 4] {
    let mut tag = [b' '; 4];
    for (t, b) in tag.iter_mut().zip(kind.as_str().bytes()) {
        *t = b;
    }
    tag
}

pub(crate) fn frame(kind: StrategyKind, sections: &[&[u8]]) -> Vec<u8> {
    let mut payload = Vec::new();
    for s in sections {
        payload.extend_from_slice(&(s.len() as u64).to_le_bytes());
        payload.extend_from_slice(s);
    }
    let mut out = Vec::with_capacity(payload.len() + 24);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&kind_tag(kind));
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&fnv1a(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// The `n` sections of a state written by [`frame`] for `kind`, or why the bytes are not one.
pub(crate) fn unframe(kind: StrategyKind, bytes: &[u8], n: usize) -> Result<Vec<&[u8]>> {
    let name = kind.as_str();
    let bad = |why: String| SearchError::State(format!("cannot load {name} state: {why}"));
    if bytes.len() < 24 || &bytes[..4] != MAGIC {
        return Err(bad(format!("not an mnas strategy state ({} bytes without the header)", bytes.len())));
    }
    if bytes[4..8] != kind_tag(kind) {
        let found = [StrategyKind::Ppo, StrategyKind::Random, StrategyKind::Evolution]
            .into_iter()
            .find(|k| bytes[4..8] == kind_tag(*k))
            .map_or("an unknown", |k| k.as_str());
        return Err(bad(format!("it was written by the {found} strategy")));
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(bad(format!("format version {version}, this build reads {FORMAT_VERSION}")));
    }
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&bytes[12..20]);
    let payload = &bytes[20..];
    if u64::from_le_bytes(sum) != fnv1a(payload) {
        return Err(bad("checksum mismatch (truncated or corrupted)".into()));
    }
    let mut sections = Vec::with_capacity(n);
    let mut rest = payload;
    for i in 0..n {
        if rest.len() < 8 {
            return Err(bad(format!("section {i} is missing")));
        }
        let mut len = [0u8; 8];
        len.copy_from_slice(&rest[..8]);
        let len = u64::from_le_bytes(len);
        rest = &rest[8..];
        if len > rest.len() as u64 {
            return Err(bad(format!("section {i} claims {len} bytes, {} remain", rest.len())));
        }
        let (section, tail) = rest.split_at(len as usize);
        sections.push(section);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(bad(format!("{} unexpected trailing bytes", rest.len())));
    }
    Ok(sections)
}
