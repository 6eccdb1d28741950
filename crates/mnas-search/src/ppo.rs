//! The paper's search strategy (MnasNet §4.2): the [`Controller`] trained with PPO.
//!
//! Each step's models are one batch of PPO: the whole token sequence is one action, its
//! advantage is `reward - baseline` with an exponential moving-average baseline, and the policy
//! takes `epochs` Adam steps on the clipped surrogate plus an entropy bonus.
//!
//! No per-proposal state is kept between `propose` and `observe`: the weights do not change in
//! between, so the "old" log-probabilities are recomputed from the observed tokens. A search
//! resumed from the state saved after step k therefore needs nothing but that state.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{Adam, AdamConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkBytesRecorder, Recorder};
use burn::tensor::{Tensor, TensorData};
use mnas_space::SearchSpace;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::controller::{Controller, ControllerConfig, ControllerRecord};
use crate::error::{Result, SearchError};
use crate::strategy::{check_observation, frame, unframe, RngState, Strategy, StrategyKind};

/// The controller trains on the CPU: one update is a few milliseconds, far below a trial's cost.
pub type Train = burn::backend::Autodiff<burn_flex::Flex>;
type Optim = OptimizerAdaptor<Adam, Controller<Train>, Train>;
type OptimRecord = <Optim as Optimizer<Controller<Train>, Train>>::Record;
type Bytes = NamedMpkBytesRecorder<FullPrecisionSettings>;

/// PPO's hyper-parameters. Defaults follow common PPO practice scaled to NAS-sized batches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PpoConfig {
    pub controller: ControllerConfig,
    /// Adam step size.
    pub learning_rate: f64,
    /// Probability-ratio clip epsilon of the surrogate objective.
    pub clip: f64,
    /// Adam steps per search step, each over all of that step's models.
    pub epochs: usize,
    /// Weight of the mean sequence entropy (summed over the decisions) in the objective.
    pub entropy_coef: f64,
    /// Decay of the exponential moving-average reward baseline.
    pub baseline_decay: f64,
    /// Divide advantages by a moving average of the rewards' spread, so the learning signal
    /// does not depend on the reward's scale (proxy accuracies differ by ~1%; the entropy bonus
    /// would otherwise swamp them).
    pub normalize_advantages: bool,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            controller: ControllerConfig::default(),
            learning_rate: 5e-3,
            clip: 0.2,
            epochs: 4,
            entropy_coef: 1e-3,
            baseline_decay: 0.95,
            normalize_advantages: true,
        }
    }
}

impl PpoConfig {
    pub fn validate(&self) -> Result<()> {
        self.controller.validate()?;
        let bad = |m: String| Err(SearchError::Config(m));
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            return bad(format!("ppo learning_rate must be in (0, 1), got {}", self.learning_rate));
        }
        if !(self.clip.is_finite() && self.clip > 0.0 && self.clip < 1.0) {
            return bad(format!("ppo clip must be in (0, 1), got {}", self.clip));
        }
        if self.epochs == 0 || self.epochs > 100 {
            return bad(format!("ppo epochs must be in 1..=100, got {}", self.epochs));
        }
        if !(self.entropy_coef.is_finite() && self.entropy_coef >= 0.0) {
            return bad(format!("ppo entropy_coef must be >= 0, got {}", self.entropy_coef));
        }
        if !(self.baseline_decay.is_finite() && (0.0..1.0).contains(&self.baseline_decay)) {
            return bad(format!("ppo baseline_decay must be in [0, 1), got {}", self.baseline_decay));
        }
        Ok(())
    }
}

/// What the last update did, for logs and the report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UpdateStats {
    pub step: u64,
    /// Baseline the advantages were taken against.
    pub baseline: f64,
    pub mean_reward: f64,
    /// Mean sequence entropy before the update (nats, summed over decisions).
    pub entropy: f64,
    /// Fraction of samples whose ratio was clipped in the last epoch.
    pub clip_fraction: f64,
    pub seconds: f64,
}

/// Everything but the weights and Adam moments, as JSON inside the state.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    options: Vec<usize>,
    controller: ControllerConfig,
    step: u64,
    baseline: Option<f64>,
    reward_scale: Option<f64>,
    rng: RngState,
}

pub struct Ppo {
    options: Vec<usize>,
    cfg: PpoConfig,
    controller: Controller<Train>,
    optim: Optim,
    rng: ChaCha8Rng,
    baseline: Option<f64>,
    /// Moving RMS of `reward - baseline`, the advantage normaliser.
    reward_scale: Option<f64>,
    step: u64,
    last: Option<UpdateStats>,
}

/// Seeds of the weights and of the sampling stream differ so that neither mirrors the other.
const WEIGHT_SEED_SALT: u64 = 0x9e37_79b9_7f4a_7c15;

impl Ppo {
    pub fn new(space: &SearchSpace, cfg: &PpoConfig, seed: u64) -> Result<Ppo> {
        cfg.validate()?;
        let options = space.token_options();
        let controller = Controller::new(&options, &cfg.controller, seed ^ WEIGHT_SEED_SALT, &Default::default())?;
        Ok(Ppo {
            options,
            cfg: cfg.clone(),
            controller,
            optim: AdamConfig::new().init(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            baseline: None,
            reward_scale: None,
            step: 0,
            last: None,
        })
    }

    /// Steps observed so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    pub fn baseline(&self) -> Option<f64> {
        self.baseline
    }

    pub fn last_update(&self) -> Option<UpdateStats> {
        self.last
    }

    /// The policy's most likely model and the probability of each of its decisions.
    pub fn greedy(&self) -> Result<(Vec<usize>, Vec<f64>)> {
        self.controller.valid().greedy()
    }

    /// Advantages of this step's rewards; moves the baseline (initialised from the first step's
    /// mean) and the advantage scale afterwards. With several models per step the advantages are
    /// centred on the step's mean: a step whose rewards are all low (a bad batch, a slow device)
    /// then still ranks its models against each other instead of pushing every sequence down.
    fn advantages(&mut self, rewards: &[f64]) -> Vec<f64> {
        let mean = rewards.iter().sum::<f64>() / rewards.len() as f64;
        let baseline = *self.baseline.get_or_insert(mean);
        let centre = if rewards.len() >= 2 { mean } else { baseline };
        let raw: Vec<f64> = rewards.iter().map(|r| r - centre).collect();
        let rms = (raw.iter().map(|a| a * a).sum::<f64>() / raw.len() as f64).sqrt();
        let d = self.cfg.baseline_decay;
        self.baseline = Some(d * baseline + (1.0 - d) * mean);
        if !self.cfg.normalize_advantages {
            return raw;
        }
        let scale = match self.reward_scale {
            None => rms,
            Some(s) => d * s + (1.0 - d) * rms,
        };
        self.reward_scale = Some(scale);
        // Identical rewards (e.g. a step of failures) carry no ranking: keep them from exploding.
        let denom = scale.max(1e-6 * (1.0 + baseline.abs()));
        raw.into_iter().map(|a| a / denom).collect()
    }

    fn update(&mut self, proposals: &[Vec<usize>], rewards: &[f64]) -> Result<UpdateStats> {
        let started = Instant::now();
        let baseline_before = self.baseline.unwrap_or(rewards.iter().sum::<f64>() / rewards.len() as f64);
        let adv = self.advantages(rewards);
        let n = proposals.len();
        let device = Default::default();
        let adv = Tensor::<Train, 1>::from_data(TensorData::new(adv.iter().map(|&a| a as f32).collect(), [n]), &device);
        let old = self.controller.valid().evaluate(proposals);
        let entropy = mean_of(old.entropy)?;
        let old_logp = Tensor::<Train, 1>::from_inner(old.log_prob);
        let (lo, hi) = (1.0 - self.cfg.clip as f32, 1.0 + self.cfg.clip as f32);
        let mut clip_fraction = 0.0;
        for _ in 0..self.cfg.epochs {
            let ev = self.controller.evaluate(proposals);
            let ratio = (ev.log_prob - old_logp.clone()).exp();
            let clipped = ratio.clone().clamp(lo, hi);
            clip_fraction = ratio
                .clone()
                .inner()
                .into_data()
                .to_vec::<f32>()
                .map_err(|e| SearchError::State(format!("ratio unreadable: {e:?}")))?
                .iter()
                .filter(|&&r| r < lo || r > hi)
                .count() as f64
                / n as f64;
            let surrogate = (ratio * adv.clone()).min_pair(clipped * adv.clone());
            let loss = -surrogate.mean() - ev.entropy.mean().mul_scalar(self.cfg.entropy_coef);
            let grads = GradientsParams::from_grads(loss.backward(), &self.controller);
            let controller = self.controller.clone();
            self.controller = self.optim.step(self.cfg.learning_rate, controller, grads);
        }
        Ok(UpdateStats {
            step: self.step,
            baseline: baseline_before,
            mean_reward: rewards.iter().sum::<f64>() / n as f64,
            entropy,
            clip_fraction,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

fn mean_of<B: burn::tensor::backend::Backend>(t: Tensor<B, 1>) -> Result<f64> {
    let v = t.into_data().convert::<f32>().to_vec::<f32>().map_err(|e| SearchError::State(format!("{e:?}")))?;
    Ok(v.iter().map(|&x| x as f64).sum::<f64>() / v.len().max(1) as f64)
}

impl Strategy for Ppo {
    fn kind(&self) -> StrategyKind {
        StrategyKind::Ppo
    }

    fn propose(&mut self, n: usize) -> Result<Vec<Vec<usize>>> {
        self.controller.valid().sample(n, &mut self.rng)
    }

    fn observe(&mut self, proposals: &[Vec<usize>], rewards: &[f64]) -> Result<()> {
        check_observation(&self.options, proposals, rewards)?;
        if proposals.is_empty() {
            return Ok(());
        }
        let stats = self.update(proposals, rewards)?;
        tracing::debug!(
            step = stats.step,
            baseline = stats.baseline,
            mean_reward = stats.mean_reward,
            entropy = stats.entropy,
            clip_fraction = stats.clip_fraction,
            seconds = stats.seconds,
            "ppo update"
        );
        self.last = Some(stats);
        self.step += 1;
        Ok(())
    }

    fn save_state(&self) -> Result<Vec<u8>> {
        let header = Header {
            options: self.options.clone(),
            controller: self.cfg.controller.clone(),
            step: self.step,
            baseline: self.baseline,
            reward_scale: self.reward_scale,
            rng: RngState::of(&self.rng),
        };
        let header = serde_json::to_vec(&header)?;
        let rec = |e: burn::record::RecorderError| SearchError::State(format!("cannot record the controller: {e}"));
        let model =
            Recorder::<Train>::record(&Bytes::default(), self.controller.clone().into_record(), ()).map_err(rec)?;
        let optim = Recorder::<Train>::record(&Bytes::default(), self.optim.to_record(), ()).map_err(rec)?;
        Ok(frame(StrategyKind::Ppo, &[&header, &model, &optim]))
    }

    fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        let sections = unframe(StrategyKind::Ppo, bytes, 3)?;
        let header: Header = serde_json::from_slice(sections[0])
            .map_err(|e| SearchError::State(format!("cannot load ppo state: bad header: {e}")))?;
        if header.options != self.options || header.controller != self.cfg.controller {
            return Err(SearchError::State(format!(
                "cannot load ppo state: it was saved by a controller over {} decisions with {:?}, this one has {} with {:?}",
                header.options.len(),
                header.controller,
                self.options.len(),
                self.cfg.controller
            )));
        }
        let rng = header.rng.restore()?;
        let (model_bytes, optim_bytes) = (sections[1].to_vec(), sections[2].to_vec());
        let template = self.controller.clone();
        let fresh_optim: Optim = AdamConfig::new().init();
        // The checksum has already rejected foreign bytes; this guards against a decoder panic on
        // a state written by an incompatible build.
        let loaded = catch_unwind(AssertUnwindSafe(move || -> Result<(Controller<Train>, Optim)> {
            let device = Default::default();
            let bad = |what: &str, e: burn::record::RecorderError| {
                SearchError::State(format!("cannot load ppo state: {what}: {e}"))
            };
            let record: ControllerRecord<Train> =
                Recorder::<Train>::load(&Bytes::default(), model_bytes, &device).map_err(|e| bad("controller", e))?;
            let optim: OptimRecord =
                Recorder::<Train>::load(&Bytes::default(), optim_bytes, &device).map_err(|e| bad("optimizer", e))?;
            Ok((template.load_record(record), fresh_optim.load_record(optim)))
        }))
        .map_err(|_| SearchError::State("cannot load ppo state: the weights do not decode".into()))??;
        (self.controller, self.optim) = loaded;
        self.rng = rng;
        self.step = header.step;
        self.baseline = header.baseline;
        self.reward_scale = header.reward_scale;
        self.last = None;
        Ok(())
    }
}
