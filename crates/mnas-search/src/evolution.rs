//! Regularized (aging) evolution, Real et al. 2019 (AmoebaNet), as a baseline to the controller.
//!
//! Until the population holds `population` models the proposals are uniform samples; afterwards
//! each proposal mutates one decision of the best of `sample` members drawn at random (with
//! replacement, as in the paper's pseudo-code). Observed models join the population and the
//! oldest leave it, so a lucky early model cannot rule forever.

use std::collections::VecDeque;

use mnas_space::SearchSpace;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SearchError};
use crate::strategy::{check_observation, frame, unframe, RngState, Strategy, StrategyKind};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvolutionConfig {
    /// P: models kept alive.
    pub population: usize,
    /// S: tournament size (members compared to pick a parent).
    pub sample: usize,
}

impl Default for EvolutionConfig {
    fn default() -> Self {
        EvolutionConfig { population: 16, sample: 4 }
    }
}

impl EvolutionConfig {
    pub fn validate(&self) -> Result<()> {
        if self.population < 2 {
            return Err(SearchError::Config(format!("evolution population must be >= 2, got {}", self.population)));
        }
        if self.sample == 0 || self.sample > self.population {
            return Err(SearchError::Config(format!(
                "evolution sample must be in 1..={} (the population), got {}",
                self.population, self.sample
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Member {
    tokens: Vec<usize>,
    reward: f64,
}

#[derive(Serialize, Deserialize)]
struct State {
    options: Vec<usize>,
    population: VecDeque<Member>,
    rng: RngState,
}

pub struct Evolution {
    space: SearchSpace,
    options: Vec<usize>,
    cfg: EvolutionConfig,
    /// Oldest first.
    population: VecDeque<Member>,
    rng: ChaCha8Rng,
}

impl Evolution {
    pub fn new(space: &SearchSpace, cfg: &EvolutionConfig, seed: u64) -> Result<Evolution> {
        cfg.validate()?;
        Ok(Evolution {
            space: space.clone(),
            options: space.token_options(),
            cfg: cfg.clone(),
            population: VecDeque::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
        })
    }

    /// Current members, oldest first.
    pub fn population(&self) -> impl Iterator<Item = (&[usize], f64)> {
        self.population.iter().map(|m| (m.tokens.as_slice(), m.reward))
    }

    fn mutate(&mut self) -> Vec<usize> {
        let mut best: Option<&Member> = None;
        for _ in 0..self.cfg.sample {
            let m = &self.population[self.rng.gen_range(0..self.population.len())];
            if best.is_none_or(|b| m.reward > b.reward) {
                best = Some(m);
            }
        }
        let mut child = best.map(|m| m.tokens.clone()).unwrap_or_default();
        // Only decisions with a choice to make can mutate (every decision of the paper's space has >= 2).
        let mutable: Vec<usize> = (0..self.options.len()).filter(|&i| self.options[i] > 1).collect();
        if mutable.is_empty() {
            return child;
        }
        let pos = mutable[self.rng.gen_range(0..mutable.len())];
        let n = self.options[pos];
        child[pos] = (child[pos] + 1 + self.rng.gen_range(0..n - 1)) % n;
        child
    }
}

impl Strategy for Evolution {
    fn kind(&self) -> StrategyKind {
        StrategyKind::Evolution
    }

    fn propose(&mut self, n: usize) -> Result<Vec<Vec<usize>>> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            // Proposals of this step that are not yet observed count towards filling the population;
            // mutation needs at least one observed member (a first step larger than the
            // population samples all of its models).
            if self.population.len() + i < self.cfg.population || self.population.is_empty() {
                out.push(self.space.sample_tokens(&mut self.rng));
            } else {
                out.push(self.mutate());
            }
        }
        Ok(out)
    }

    fn observe(&mut self, proposals: &[Vec<usize>], rewards: &[f64]) -> Result<()> {
        check_observation(&self.options, proposals, rewards)?;
        for (tokens, &reward) in proposals.iter().zip(rewards) {
            self.population.push_back(Member { tokens: tokens.clone(), reward });
            while self.population.len() > self.cfg.population {
                self.population.pop_front();
            }
        }
        Ok(())
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        let state =
            State { options: self.options.clone(), population: self.population.clone(), rng: RngState::of(&self.rng) };
        Ok(frame(StrategyKind::Evolution, &[&serde_json::to_vec(&state)?]))
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let sections = unframe(StrategyKind::Evolution, bytes, 1)?;
        let state: State = serde_json::from_slice(sections[0])
            .map_err(|e| SearchError::State(format!("cannot load evolution state: {e}")))?;
        if state.options != self.options {
            return Err(SearchError::State(
                "cannot load evolution state: it was saved for another search space".into(),
            ));
        }
        let proposals: Vec<Vec<usize>> = state.population.iter().map(|m| m.tokens.clone()).collect();
        let rewards: Vec<f64> = state.population.iter().map(|m| m.reward).collect();
        check_observation(&self.options, &proposals, &rewards)
            .map_err(|e| SearchError::State(format!("cannot load evolution state: {e}")))?;
        let mut population = state.population;
        while population.len() > self.cfg.population {
            population.pop_front();
        }
        self.population = population;
        self.rng = state.rng.restore()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_with_random_then_mutates_one_decision_of_a_member() {
        let space = SearchSpace::default();
        let mut e = Evolution::new(&space, &EvolutionConfig { population: 4, sample: 2 }, 1).unwrap();
        let first = e.propose(3).unwrap();
        e.observe(&first, &[0.1, 0.2, 0.3]).unwrap();
        let second = e.propose(3).unwrap();
        // One slot left to fill: the first is random, the others are mutants of members.
        e.observe(&second[..1], &[0.4]).unwrap();
        let members: Vec<Vec<usize>> = e.population().map(|(t, _)| t.to_vec()).collect();
        for child in &second[1..] {
            let parent_distance =
                members[..3].iter().map(|m| m.iter().zip(child).filter(|(a, b)| a != b).count()).min().unwrap();
            assert_eq!(parent_distance, 1, "a mutant differs from its parent in exactly one decision");
        }
        // Aging: the population never exceeds P and drops the oldest first.
        e.observe(&second[1..], &[0.5, 0.6]).unwrap();
        let rewards: Vec<f64> = e.population().map(|(_, r)| r).collect();
        assert_eq!(rewards, vec![0.3, 0.4, 0.5, 0.6]);
    }

    #[test]
    fn bad_config() {
        let space = SearchSpace::default();
        assert!(Evolution::new(&space, &EvolutionConfig { population: 4, sample: 5 }, 0).is_err());
        assert!(Evolution::new(&space, &EvolutionConfig { population: 1, sample: 1 }, 0).is_err());
    }
}
