//! mnas-search: the MnasNet search loop's parts (DESIGN §1, §7).
//!
//! - [`reward`]: `R = ACC * (LAT/T)^w`, soft/hard/custom constraints;
//! - [`trial`]: what one sampled model's evaluation produced (plain data, shared by every part);
//! - [`strategy`]: the one interface every search strategy implements, so runs compare fairly:
//!   [`controller`] + [`ppo`] (the paper's LSTM policy trained with PPO), [`random`], [`evolution`];
//! - [`store`]: the SQLite trial store in the run directory (config, trials, strategy state per step);
//! - [`pareto`] and [`report`]: the accuracy/latency front and the self-contained HTML report.

pub mod controller;
pub mod error;
pub mod evolution;
pub mod pareto;
pub mod ppo;
pub mod random;
pub mod report;
pub mod reward;
pub mod search_loop;
pub mod store;
pub mod strategies;
pub mod strategy;
pub mod trial;

pub use error::{Result, SearchError};
pub use reward::{Constraint, Reward};
pub use strategy::{Strategy, StrategyKind};
pub use trial::{Trial, TrialStatus};
