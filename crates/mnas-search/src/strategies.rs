//! The strategies there are, and the one place that builds them from a run's stored settings.

use mnas_space::SearchSpace;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::evolution::{Evolution, EvolutionConfig};
use crate::ppo::{Ppo, PpoConfig};
use crate::random::RandomSearch;
use crate::strategy::{Strategy, StrategyKind};

/// The settings of every strategy, so one JSON document (stored with the run) rebuilds any of them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StrategyConfig {
    pub ppo: PpoConfig,
    pub evolution: EvolutionConfig,
}

/// Builds a fresh strategy of `kind` over `space`; the same `(kind, config, seed)` always proposes
/// the same models.
pub fn build(kind: StrategyKind, space: &SearchSpace, config: &StrategyConfig, seed: u64) -> Result<Box<dyn Strategy>> {
    Ok(match kind {
        StrategyKind::Ppo => Box::new(Ppo::new(space, &config.ppo, seed)?),
        StrategyKind::Random => Box::new(RandomSearch::new(space, seed)),
        StrategyKind::Evolution => Box::new(Evolution::new(space, &config.evolution, seed)?),
    })
}
