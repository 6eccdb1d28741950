//! The controller: NASNet's policy (Zoph et al. 2018, used by MnasNet §4.2). A one-layer LSTM
//! emits the 42 decisions in order; each decision has its own softmax head on the hidden state,
//! and the action taken is fed back as the next input through an embedding (one table per
//! decision, stored as one matrix with row offsets). The first input is a learned vector.
//!
//! The LSTM cell is written out from weight matrices: burn's `Lstm` runs whole sequences, while
//! sampling needs one step at a time with the sampled action in between.

use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{activation, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SearchError};

/// The policy network's shape and how logits become probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControllerConfig {
    /// LSTM hidden units; also the embedding size (NASNet: 100).
    pub hidden: usize,
    /// Weights start uniform in [-init_range, init_range] (NASNet/ENAS: ~0.1), head biases at 0,
    /// so the first policy is close to uniform over every decision.
    pub init_range: f64,
    /// Logits are divided by this before the softmax (1 = off).
    pub temperature: f64,
    /// [ENAS-style] logits become `c * tanh(logits / temperature)`: no option's probability can
    /// reach 0, which keeps some exploration however long the search runs. `None` = off.
    pub tanh_constant: Option<f64>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig { hidden: 100, init_range: 0.1, temperature: 1.0, tanh_constant: Some(2.5) }
    }
}

impl ControllerConfig {
    pub fn validate(&self) -> Result<()> {
        if self.hidden == 0 || self.hidden > 4096 {
            return Err(SearchError::Config(format!(
                "controller hidden size must be in 1..=4096, got {}",
                self.hidden
            )));
        }
        if !(self.init_range.is_finite() && self.init_range > 0.0) {
            return Err(SearchError::Config(format!("controller init_range must be > 0, got {}", self.init_range)));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(SearchError::Config(format!("controller temperature must be > 0, got {}", self.temperature)));
        }
        if let Some(c) = self.tanh_constant {
            if !(c.is_finite() && c > 0.0) {
                return Err(SearchError::Config(format!("controller tanh_constant must be > 0, got {c}")));
            }
        }
        Ok(())
    }
}

/// Per-decision option counts and where each decision's rows start in the embedding table.
#[derive(Debug, Clone, PartialEq)]
struct Layout {
    options: Vec<usize>,
    offsets: Vec<usize>,
    /// The widest decision: every head is padded to it so all heads run as one batched matmul.
    width: usize,
    temperature: f64,
    tanh_constant: Option<f64>,
}

/// A logit far below any real one: padded options get probability exactly 0 in f32.
const PAD_LOGIT: f32 = -1e9;

/// The LSTM policy over token sequences with `options[t]` choices at position `t`.
#[derive(Module, Debug)]
pub struct Controller<B: Backend> {
    /// The first step's input, [1, H].
    start: Param<Tensor<B, 2>>,
    /// Action embeddings of all decisions, [sum(options), H]; decision t owns rows offsets[t]..
    embed: Param<Tensor<B, 2>>,
    /// LSTM input and recurrent weights [H, 4H] (gate order i, f, g, o) and bias [4H].
    w_ih: Param<Tensor<B, 2>>,
    w_hh: Param<Tensor<B, 2>>,
    bias: Param<Tensor<B, 1>>,
    /// One softmax head per decision, padded to the widest: [T, H, K] and [T, 1, K].
    head_w: Param<Tensor<B, 3>>,
    head_b: Param<Tensor<B, 3>>,
    #[module(skip)]
    layout: Layout,
}

/// Log-probability and entropy of each sequence (summed over its decisions), [n] each.
pub struct Evaluation<B: Backend> {
    pub log_prob: Tensor<B, 1>,
    pub entropy: Tensor<B, 1>,
}

impl<B: Backend> Controller<B> {
    /// A controller with weights drawn from `seed` (its own generator: the result does not depend
    /// on burn's global RNG or on anything else running in the process).
    pub fn new(options: &[usize], cfg: &ControllerConfig, seed: u64, device: &B::Device) -> Result<Self> {
        cfg.validate()?;
        if options.is_empty() || options.contains(&0) {
            return Err(SearchError::Config(format!("every decision needs at least one option, got {options:?}")));
        }
        let (h, steps) = (cfg.hidden, options.len());
        let total: usize = options.iter().sum();
        let width = options.iter().copied().max().unwrap_or(1);
        let offsets = options
            .iter()
            .scan(0, |acc, &n| {
                let o = *acc;
                *acc += n;
                Some(o)
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let r = cfg.init_range as f32;
        let mut uniform = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.gen_range(-1.0f32..1.0) * r).collect() };
        // Fixed ids keep saved states comparable across builds of the same controller.
        fn param<B: Backend, const D: usize>(
            values: Vec<f32>,
            shape: [usize; D],
            id: u64,
            device: &B::Device,
        ) -> Param<Tensor<B, D>> {
            let t = Tensor::<B, D>::from_data(TensorData::new(values, shape), device);
            Param::initialized(ParamId::from(id), t.require_grad())
        }
        Ok(Controller {
            start: param(uniform(h), [1, h], 1, device),
            embed: param(uniform(total * h), [total, h], 2, device),
            w_ih: param(uniform(h * 4 * h), [h, 4 * h], 3, device),
            w_hh: param(uniform(h * 4 * h), [h, 4 * h], 4, device),
            bias: param(vec![0.0; 4 * h], [4 * h], 5, device),
            head_w: param(uniform(steps * h * width), [steps, h, width], 6, device),
            head_b: param(vec![0.0; steps * width], [steps, 1, width], 7, device),
            layout: Layout {
                options: options.to_vec(),
                offsets,
                width,
                temperature: cfg.temperature,
                tanh_constant: cfg.tanh_constant,
            },
        })
    }

    pub fn options(&self) -> &[usize] {
        &self.layout.options
    }

    fn hidden(&self) -> usize {
        self.w_hh.dims()[0]
    }

    /// One LSTM step from the input's projection `xw = x W_ih + b`, [n, 4H].
    fn cell(&self, xw: Tensor<B, 2>, h: Tensor<B, 2>, c: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let hs = self.hidden();
        let gates = xw + h.matmul(self.w_hh.val());
        // One sigmoid over all four gates is cheaper than four small ones; the g slice is unused.
        let sig = activation::sigmoid(gates.clone());
        let (i, f, o) = (sig.clone().narrow(1, 0, hs), sig.clone().narrow(1, hs, hs), sig.narrow(1, 3 * hs, hs));
        let cand = activation::tanh(gates.narrow(1, 2 * hs, hs));
        let c = f * c + i * cand;
        let h = o * activation::tanh(c.clone());
        (h, c)
    }

    /// Temperature and tanh clipping, applied to raw head outputs.
    fn shape_logits<const D: usize>(&self, mut logits: Tensor<B, D>) -> Tensor<B, D> {
        if self.layout.temperature != 1.0 {
            logits = logits.div_scalar(self.layout.temperature);
        }
        if let Some(c) = self.layout.tanh_constant {
            logits = activation::tanh(logits).mul_scalar(c);
        }
        logits
    }

    /// Rows of the embedding table (`offsets[t] + action`), [rows, H].
    fn embed_rows(&self, rows: Vec<i64>) -> Tensor<B, 2> {
        let n = rows.len();
        let idx = Tensor::<B, 1, Int>::from_data(TensorData::new(rows, [n]), &self.embed.device());
        self.embed.val().select(0, idx)
    }

    fn bias_row(&self) -> Tensor<B, 2> {
        self.bias.val().unsqueeze_dim(0)
    }

    /// Draws `n` token sequences. The draw is made on the host in f64 from each decision's logits
    /// with one uniform number per decision, so the same weights and RNG position always give the
    /// same tokens. Run it on a non-autodiff backend (`valid()`): nothing here needs gradients.
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Result<Vec<Vec<usize>>> {
        let mut tokens = vec![Vec::with_capacity(self.layout.options.len()); n];
        if n == 0 {
            return Ok(tokens);
        }
        let (hs, width) = (self.hidden(), self.layout.width);
        let device = self.embed.device();
        let mut x = self.start.val().repeat_dim(0, n);
        let (mut h, mut c) = (Tensor::zeros([n, hs], &device), Tensor::zeros([n, hs], &device));
        for (t, &k) in self.layout.options.iter().enumerate() {
            (h, c) = self.cell(x.matmul(self.w_ih.val()) + self.bias_row(), h, c);
            let w = self.head_w.val().narrow(0, t, 1).reshape([hs, width]);
            let b = self.head_b.val().narrow(0, t, 1).reshape([1, width]);
            let logits = self
                .shape_logits(h.clone().matmul(w) + b)
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| SearchError::State(format!("controller logits unreadable: {e:?}")))?;
            for (seq, row) in tokens.iter_mut().zip(logits.chunks(width)) {
                seq.push(draw(&row[..k], rng.gen::<f64>())?);
            }
            x = self.embed_rows(tokens.iter().map(|s| (self.layout.offsets[t] + s[t]) as i64).collect());
        }
        Ok(tokens)
    }

    /// Log-probability and entropy of the given sequences under the policy (teacher forcing).
    /// Sequences must be valid for `options()`; callers check with `check_observation`.
    ///
    /// Everything that does not depend on the recurrence runs batched over all decisions (input
    /// projections, heads, softmaxes): the per-decision loop is only the LSTM cell.
    pub fn evaluate(&self, sequences: &[Vec<usize>]) -> Evaluation<B> {
        let (n, steps, width, hs) = (sequences.len(), self.layout.options.len(), self.layout.width, self.hidden());
        let device = self.embed.device();
        // Inputs of steps 1..T are the embeddings of the actions at 0..T-1, step-major.
        let rows: Vec<i64> = (0..steps - 1)
            .flat_map(|t| sequences.iter().map(move |s| (self.layout.offsets[t] + s[t]) as i64))
            .collect();
        let mut inputs = vec![self.start.val().repeat_dim(0, n)];
        if steps > 1 {
            inputs.push(self.embed_rows(rows));
        }
        let xw = Tensor::cat(inputs, 0).matmul(self.w_ih.val()) + self.bias_row();
        let (mut h, mut c) = (Tensor::zeros([n, hs], &device), Tensor::zeros([n, hs], &device));
        let mut hidden = Vec::with_capacity(steps);
        for t in 0..steps {
            (h, c) = self.cell(xw.clone().narrow(0, t * n, n), h, c);
            hidden.push(h.clone());
        }
        let hidden: Tensor<B, 3> = Tensor::stack(hidden, 0);
        let logits = self.shape_logits(hidden.matmul(self.head_w.val()) + self.head_b.val());
        let pad: Vec<f32> = self
            .layout
            .options
            .iter()
            .flat_map(|&k| (0..width).map(move |j| if j < k { 0.0 } else { PAD_LOGIT }))
            .collect();
        let logits = logits + Tensor::<B, 3>::from_data(TensorData::new(pad, [steps, 1, width]), &device);
        let logp = activation::log_softmax(logits, 2);
        let taken: Vec<i64> = (0..steps).flat_map(|t| sequences.iter().map(move |s| s[t] as i64)).collect();
        let idx = Tensor::<B, 3, Int>::from_data(TensorData::new(taken, [steps, n, 1]), &device);
        let log_prob = logp.clone().gather(2, idx).sum_dim(0).reshape([n]);
        let entropy = (logp.clone().exp() * logp).sum_dim(2).sum_dim(0).reshape([n]).neg();
        Evaluation { log_prob, entropy }
    }

    /// The most likely decision at each step (greedy decoding) and its probability: how sure the
    /// policy has become.
    pub fn greedy(&self) -> Result<(Vec<usize>, Vec<f64>)> {
        let (hs, width) = (self.hidden(), self.layout.width);
        let device = self.embed.device();
        let mut x = self.start.val();
        let (mut h, mut c) = (Tensor::zeros([1, hs], &device), Tensor::zeros([1, hs], &device));
        let (mut tokens, mut probs) = (Vec::new(), Vec::new());
        for (t, &k) in self.layout.options.iter().enumerate() {
            (h, c) = self.cell(x.matmul(self.w_ih.val()) + self.bias_row(), h, c);
            let w = self.head_w.val().narrow(0, t, 1).reshape([hs, width]);
            let b = self.head_b.val().narrow(0, t, 1).reshape([1, width]);
            let logits = self
                .shape_logits(h.clone().matmul(w) + b)
                .into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .map_err(|e| SearchError::State(format!("controller logits unreadable: {e:?}")))?;
            let p = softmax(&logits[..k]);
            let best = p.iter().enumerate().fold(0, |b, (i, &v)| if v > p[b] { i } else { b });
            tokens.push(best);
            probs.push(p[best]);
            x = self.embed_rows(vec![(self.layout.offsets[t] + best) as i64]);
        }
        Ok((tokens, probs))
    }
}

fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &l| m.max(l as f64));
    let e: Vec<f64> = logits.iter().map(|&l| (l as f64 - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.into_iter().map(|v| v / sum).collect()
}

/// Inverse-CDF draw of one option from logits with the uniform number `u` in [0, 1).
fn draw(logits: &[f32], u: f64) -> Result<usize> {
    if logits.iter().any(|l| !l.is_finite()) {
        return Err(SearchError::State(format!("controller produced non-finite logits {logits:?}")));
    }
    let p = softmax(logits);
    let mut acc = 0.0;
    for (i, v) in p.iter().enumerate() {
        acc += v;
        if u < acc {
            return Ok(i);
        }
    }
    Ok(p.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn controller(seed: u64) -> Controller<Flex> {
        let options = mnas_space::SearchSpace::default().token_options();
        Controller::new(&options, &ControllerConfig::default(), seed, &Default::default()).unwrap()
    }

    #[test]
    fn sampling_is_deterministic_and_in_range() {
        let (a, b) = (controller(3), controller(3));
        let draw = |c: &Controller<Flex>| c.sample(5, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
        let s = draw(&a);
        assert_eq!(s, draw(&b));
        assert_eq!(s.len(), 5);
        let options = a.options().to_vec();
        for seq in &s {
            assert_eq!(seq.len(), 42);
            assert!(seq.iter().zip(&options).all(|(&t, &n)| t < n));
        }
        assert_ne!(s, draw(&controller(4)));
    }

    #[test]
    fn fresh_policy_is_near_uniform_and_log_probs_agree_with_entropy() {
        let c = controller(0);
        let seqs = c.sample(4, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let ev = c.evaluate(&seqs);
        let logp = ev.log_prob.into_data().to_vec::<f32>().unwrap();
        let ent = ev.entropy.into_data().to_vec::<f32>().unwrap();
        // Uniform over every decision: log-prob = -sum(ln n), entropy = sum(ln n).
        let uniform: f64 = c.options().iter().map(|&n| (n as f64).ln()).sum();
        for (&lp, &e) in logp.iter().zip(&ent) {
            assert!((lp as f64 + uniform).abs() < 0.05 * uniform, "log-prob {lp} vs {}", -uniform);
            assert!((e as f64 - uniform).abs() < 0.01 * uniform, "entropy {e} vs {uniform}");
        }
    }

    #[test]
    fn draw_follows_the_cumulative_distribution() {
        let logits = [0.0f32, (3.0f32).ln()];
        assert_eq!(draw(&logits, 0.2).unwrap(), 0);
        assert_eq!(draw(&logits, 0.3).unwrap(), 1);
        assert_eq!(draw(&logits, 0.999_999).unwrap(), 1);
        assert!(draw(&[f32::NAN, 0.0], 0.1).is_err());
    }

    #[test]
    fn bad_settings_are_rejected() {
        let cfg = ControllerConfig { hidden: 0, ..ControllerConfig::default() };
        assert!(Controller::<Flex>::new(&[2, 3], &cfg, 0, &Default::default()).is_err());
        assert!(Controller::<Flex>::new(&[2, 0], &ControllerConfig::default(), 0, &Default::default()).is_err());
        let cfg = ControllerConfig { tanh_constant: Some(-1.0), ..ControllerConfig::default() };
        assert!(cfg.validate().is_err());
    }
}
