//! Random search: every token drawn uniformly (the same draws as `SearchSpace::sample` with the
//! same seed). The baseline any learned strategy has to beat.

use mnas_space::SearchSpace;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SearchError};
use crate::strategy::{check_observation, frame, unframe, RngState, Strategy, StrategyKind};

pub struct RandomSearch {
    space: SearchSpace,
    options: Vec<usize>,
    rng: ChaCha8Rng,
}

#[derive(Serialize, Deserialize)]
struct State {
    rng: RngState,
}

impl RandomSearch {
    pub fn new(space: &SearchSpace, seed: u64) -> RandomSearch {
        RandomSearch { space: space.clone(), options: space.token_options(), rng: ChaCha8Rng::seed_from_u64(seed) }
    }
}

impl Strategy for RandomSearch {
    fn kind(&self) -> StrategyKind {
        StrategyKind::Random
    }

    fn propose(&mut self, n: usize) -> Result<Vec<Vec<usize>>> {
        Ok((0..n).map(|_| self.space.sample_tokens(&mut self.rng)).collect())
    }

    fn observe(&mut self, proposals: &[Vec<usize>], rewards: &[f64]) -> Result<()> {
        check_observation(&self.options, proposals, rewards)
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(&State { rng: RngState::of(&self.rng) })?;
        Ok(frame(StrategyKind::Random, &[&json]))
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let sections = unframe(StrategyKind::Random, bytes, 1)?;
        let state: State = serde_json::from_slice(sections[0])
            .map_err(|e| SearchError::State(format!("cannot load random state: {e}")))?;
        self.rng = state.rng.restore()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_what_search_space_sample_draws() {
        let space = SearchSpace::default();
        let mut r = RandomSearch::new(&space, 11);
        let mine = r.propose(6).unwrap();
        let theirs: Vec<Vec<usize>> = space.sample(11, 6).into_iter().map(|(t, _)| t).collect();
        assert_eq!(mine, theirs);
    }

    #[test]
    fn resumes_from_saved_position() {
        let space = SearchSpace::default();
        let mut a = RandomSearch::new(&space, 5);
        a.propose(3).unwrap();
        let state = a.save_state().unwrap();
        let next = a.propose(4).unwrap();
        let mut b = RandomSearch::new(&space, 99);
        b.load_state(&state).unwrap();
        assert_eq!(b.propose(4).unwrap(), next);
    }
}
