//! Building a [`Lut`]: enumerate every distinct stage configuration the search space can produce
//! at its position, time each one alone in inference form on a pinned core, then fit the
//! overhead on a few end-to-end measurements.
//!
//! A layer's configuration depends only on its own block's decisions and on the previous block's
//! filter choice (its input channels), because strides, and so every spatial size, are fixed by
//! the skeleton. Enumerating block by block therefore covers the whole space in
//! `blocks x 3 x 432` decodes instead of `432^7`.

use std::collections::HashSet;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use mnas_engine::buf::Buf;
use mnas_engine::{Folded, FoldedLayer};
use mnas_space::space::{DECISIONS, FILTER_MULTIPLIERS};
use mnas_space::{Activation, Arch, Layer, SearchSpace};

use crate::error::LatencyError;
use crate::fingerprint::Fingerprint;
use crate::lut::{
    head_key, layer_key, stage_keys, stem_key, FitPoint, Lut, LutEntry, LutError, LutResult, OverheadFit, LUT_FORMAT,
};
use crate::measure::{self, BuiltIn, LocalEngine, MeasureOptions};
use crate::passes::measure_in_passes;
use crate::stats::Stats;
use mnas_space::timestamp::utc_now;

/// What one LUT entry times.
#[derive(Debug, Clone)]
pub enum StageKind {
    /// The stem of `arch` (timed inside a whole forward pass of it).
    Stem(Arch),
    /// One searched layer, timed alone.
    Layer(Layer, Activation),
    /// Head conv + pool + classifier of `arch` (timed inside a whole forward pass of it).
    Head(Arch),
}

/// An engine a lookup table can be built for: it times one stage configuration alone.
pub trait StageTimer: LocalEngine {
    /// `opts.runs` timings in ms of `kind` after `opts.warmup` untimed runs, on the calling
    /// thread (pinned to `cores[0]`; threads the engine starts belong on `cores`).
    fn time_stage(&self, kind: &StageKind, opts: &LutOptions, cores: &[usize]) -> LutResult<Vec<f64>>;
}

impl StageTimer for BuiltIn {
    fn time_stage(&self, kind: &StageKind, opts: &LutOptions, _cores: &[usize]) -> LutResult<Vec<f64>> {
        match kind {
            StageKind::Layer(layer, act) => time_layer(layer, *act, opts),
            StageKind::Stem(arch) => time_in_network(arch, opts, |times| times[0]),
            StageKind::Head(arch) => time_in_network(arch, opts, |times| {
                // head conv + pool, then the classifier: the last two stages.
                times[times.len() - 2] + times[times.len() - 1]
            }),
        }
    }
}

/// One distinct stage configuration of the space.
#[derive(Debug, Clone)]
pub struct StageConfig {
    pub key: String,
    /// Where it first occurs and what it is, e.g. `blocks.3.0 mbconv6 k3 s2`.
    pub description: String,
    pub macs: u64,
    pub kind: StageKind,
}

/// How to build a LUT.
#[derive(Debug, Clone, PartialEq)]
pub struct LutOptions {
    pub resolution: u32,
    pub threads: usize,
    /// Timed runs per entry (median kept).
    pub runs: usize,
    /// Untimed runs before them.
    pub warmup: usize,
    /// First core to pin to; `None`: the last allowed core(s), as `mnas latency`.
    pub core: Option<usize>,
    /// End-to-end measured archs for the overhead fit.
    pub fit_archs: usize,
    pub fit_seed: u64,
    /// Timed runs per fit arch.
    pub fit_runs: usize,
    /// Passes over the fit archs; each arch's point is the median of its passes. A measurement
    /// lasts a fraction of a second and lands in whatever speed the machine has then (a VM's
    /// moves by 10-20 % in spells of seconds); passes a minute apart average the spells out.
    pub fit_passes: usize,
    /// Seed of the random weights and inputs (and of the order entries are timed in).
    pub seed: u64,
    /// An entry whose spread (CV) exceeds this is timed again, up to twice; the tightest is kept.
    pub max_cv: f64,
}

impl Default for LutOptions {
    fn default() -> Self {
        LutOptions {
            resolution: 224,
            threads: 1,
            runs: 20,
            warmup: 3,
            core: None,
            fit_archs: 50,
            fit_seed: 1,
            fit_runs: 20,
            fit_passes: 3,
            seed: 0,
            max_cv: 0.05,
        }
    }
}

impl LutOptions {
    fn measure_options(&self, runs: usize) -> MeasureOptions {
        MeasureOptions {
            threads: self.threads,
            runs,
            warmup: self.warmup,
            core: self.core,
            seed: self.seed,
            // The fit wants the typical latency, not a re-measured tight one: one attempt.
            retries: 0,
            ..MeasureOptions::default()
        }
    }

    pub fn validate(&self) -> LutResult<()> {
        self.measure_options(self.runs).validate()?;
        self.measure_options(self.fit_runs).validate()?;
        if !(self.max_cv.is_finite() && self.max_cv > 0.0) {
            return Err(LutError::Option(format!("the spread limit (CV) must be > 0, got {}", self.max_cv)));
        }
        if !(1..=20).contains(&self.fit_passes) {
            return Err(LutError::Option(format!("the fit passes must be 1 to 20, got {}", self.fit_passes)));
        }
        if self.fit_archs < 2 {
            return Err(LutError::Option(format!("the overhead fit needs at least 2 archs, got {}", self.fit_archs)));
        }
        if !(8..=1024).contains(&self.resolution) {
            return Err(LutError::Option(format!("resolution must be between 8 and 1024, got {}", self.resolution)));
        }
        Ok(())
    }
}

/// Where a build is, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LutProgress {
    /// `done` of `total` entries measured (`done` starts at the entries a resumed table had).
    Entries { done: usize, total: usize },
    /// `done` of `total` fit archs measured.
    Fit { done: usize, total: usize },
}

/// `space` at `resolution`.
pub fn space_at(space: &SearchSpace, resolution: u32) -> SearchSpace {
    SearchSpace { resolution, ..space.clone() }
}

/// Every distinct stage configuration `space` can produce, each once, in execution order of
/// first occurrence: the stem, the layers of block 0, 1, ..., then the heads.
pub fn enumerate(space: &SearchSpace) -> Vec<StageConfig> {
    let decisions = DECISIONS.len();
    let options: Vec<usize> = DECISIONS.iter().map(|d| d.num_options()).collect();
    let block_combos: usize = options.iter().product();
    let filters = FILTER_MULTIPLIERS.len();
    let mut found = Found::default();
    let decode = |tokens: &[usize]| space.decode(tokens).expect("tokens within the option counts");
    let base = vec![0usize; space.num_tokens()];
    let stem_arch = decode(&base);
    let stem_macs = mnas_space::count(&stem_arch).layers[0].macs;
    found.push(stem_key(&stem_arch), || ("stem conv k3 s2".into(), stem_macs, StageKind::Stem(stem_arch.clone())));

    for block in 0..space.num_blocks() {
        // The first block's input is the stem: one choice of input channels.
        let previous = if block == 0 { 1 } else { filters };
        for prev in 0..previous {
            for combo in 0..block_combos {
                let mut tokens = base.clone();
                if block > 0 {
                    tokens[(block - 1) * decisions + 4] = prev;
                }
                let mut rest = combo;
                for (d, &n) in options.iter().enumerate() {
                    tokens[block * decisions + d] = rest % n;
                    rest /= n;
                }
                let arch = decode(&tokens);
                // Repeats 2.. of a block are identical layers: the first two cover them all.
                for layer in arch.layers().into_iter().filter(|l| l.block == block && l.index <= 1) {
                    found.push(layer_key(&layer, arch.activation), || {
                        let stage = format!("blocks.{}.{}", layer.block, layer.index);
                        let description = stage_keys(&arch)
                            .into_iter()
                            .find(|s| s.stage == stage)
                            .map(|s| format!("{stage} {}", s.description))
                            .unwrap_or(stage);
                        (
                            description,
                            mnas_space::cost::layer_cost(&layer).1,
                            StageKind::Layer(layer.clone(), arch.activation),
                        )
                    });
                }
            }
        }
    }

    let last = space.num_blocks() - 1;
    for f in 0..filters {
        let mut tokens = base.clone();
        tokens[last * decisions + 4] = f;
        let arch = decode(&tokens);
        let layers = arch.layers();
        let (head_in, size) = arch.head_input_after(&layers);
        let costs = mnas_space::count(&arch).layers;
        let macs = costs.iter().rev().take(2).map(|c| c.macs).sum();
        let description = format!("head conv k1 {head_in}->{} + avgpool + linear", arch.head_channels);
        found.push(head_key(&arch, head_in, size), || (description, macs, StageKind::Head(arch.clone())));
    }

    // The reference of `--target auto` (MobileNetV2-1.0, ReLU6, its own channel plan) at the
    // table's resolution and classes, so that a search on the table can set its target too.
    if let Ok(mut reference) = mnas_space::lookup(TARGET_REFERENCE) {
        reference.resolution = space.resolution;
        reference.num_classes = space.num_classes;
        let costs = mnas_space::count(&reference).layers;
        for (i, stage) in stage_keys(&reference).into_iter().enumerate() {
            let description = format!("{TARGET_REFERENCE} {} {}", stage.stage, stage.description);
            let kind = match i {
                0 => StageKind::Stem(reference.clone()),
                i if i <= reference.layers().len() => {
                    StageKind::Layer(reference.layers()[i - 1].clone(), reference.activation)
                }
                _ => StageKind::Head(reference.clone()),
            };
            let macs = match &kind {
                StageKind::Head(_) => costs.iter().rev().take(2).map(|c| c.macs).sum(),
                _ => costs.get(i).map_or(0, |c| c.macs),
            };
            found.push(stage.key, || (description, macs, kind));
        }
    }
    found.configs
}

/// The model `--target auto` measures (see mnas-pipeline's search set-up).
pub const TARGET_REFERENCE: &str = "mobilenetv2_100";

/// Configurations in order of first occurrence, each once.
#[derive(Default)]
struct Found {
    seen: HashSet<String>,
    configs: Vec<StageConfig>,
}

impl Found {
    /// Adds `key` unless it is there; `describe` only runs for a new key (it is the slow part).
    fn push(&mut self, key: String, describe: impl FnOnce() -> (String, u64, StageKind)) {
        if !self.seen.contains(&key) {
            let (description, macs, kind) = describe();
            self.seen.insert(key.clone());
            self.configs.push(StageConfig { key, description, macs, kind });
        }
    }
}

/// Builds (or, given `previous`, completes) the LUT of `space` at `opts.resolution`. With
/// `checkpoint` the table is saved there atomically every 30 s and when the entries are done, so
/// that an interrupted build resumes from it.
pub fn build(
    space: &SearchSpace,
    opts: &LutOptions,
    engine: &dyn StageTimer,
    previous: Option<Lut>,
    checkpoint: Option<&Path>,
    progress: &(dyn Fn(LutProgress) + Sync),
) -> LutResult<Lut> {
    opts.validate()?;
    let space = space_at(space, opts.resolution);
    let configs = enumerate(&space);
    let cores = measure::planned_cores(&opts.measure_options(opts.runs))?;
    let fingerprint = measure::fingerprint_of(engine, opts.threads, cores.clone());
    let mut lut = match previous {
        Some(prev) => resumable(prev, &space, opts, &fingerprint, configs.len())?,
        None => Lut {
            format: LUT_FORMAT,
            resolution: opts.resolution,
            skeleton: space.skeleton.clone(),
            stem_channels: space.stem_channels,
            head_channels: space.head_channels,
            num_classes: space.num_classes,
            threads: opts.threads,
            runs: opts.runs,
            warmup: opts.warmup,
            fingerprint_key: fingerprint.key(),
            fingerprint: fingerprint.clone(),
            configs: configs.len(),
            entries: Default::default(),
            fit: None,
            build_seconds: 0.0,
            updated_at: utc_now(),
        },
    };
    let mut todo: Vec<&StageConfig> = configs.iter().filter(|c| !lut.entries.contains_key(&c.key)).collect();
    // Timed in a seeded shuffled order: a load change during the build then spreads over random
    // entries instead of biasing whole blocks (block order timed the last blocks last).
    shuffle(&mut todo, opts.seed);
    tracing::info!(configs = configs.len(), todo = todo.len(), ?cores, "building the latency LUT");

    let pool = measure::pinned_pool(&cores, "mnas-lut")?;
    let total = configs.len();
    let mut done = total - todo.len();
    progress(LutProgress::Entries { done, total });
    let mut started = Instant::now();
    let mut last_save = Instant::now();
    // A reference entry re-timed every DRIFT_EVERY entries: when it moved by more than
    // DRIFT_LIMIT since the start, the machine's speed changed, and the entries timed since the
    // last check are timed again.
    // The layer of median cost: long enough to time steadily, short enough to re-time often.
    let mut layers: Vec<&StageConfig> = configs.iter().filter(|c| matches!(c.kind, StageKind::Layer(..))).collect();
    layers.sort_by_key(|c| c.macs);
    let reference = layers.get(layers.len() / 2).copied();
    let mut ref_ms = match reference {
        // Timed twice, the first discarded: a core that was idle runs its first milliseconds
        // slower, and a baseline taken then made the first check see a 29 % "drift" and time
        // its 100 entries again.
        Some(r) => Some(
            pool.install(|| {
                time_tight(engine, r, opts, &cores)?;
                time_tight(engine, r, opts, &cores)
            })?
            .median_ms,
        ),
        None => None,
    };
    let mut since_check: Vec<&StageConfig> = Vec::new();
    let mut queue: std::collections::VecDeque<&StageConfig> = todo.into_iter().collect();
    // Set while the entries of a drifted stretch are being timed again: its next check takes the
    // reference's new time as the baseline (a lasting change of speed is not re-timed forever).
    let mut retiming = false;
    while let Some(config) = queue.pop_front() {
        let stats = pool.install(|| time_tight(engine, config, opts, &cores))?;
        since_check.push(config);
        lut.entries.insert(
            config.key.clone(),
            LutEntry {
                median_ms: stats.median_ms,
                p10_ms: stats.p10_ms,
                p90_ms: stats.p90_ms,
                cv: stats.cv,
                macs: config.macs,
                description: config.description.clone(),
            },
        );
        done += 1;
        progress(LutProgress::Entries { done, total });
        if let (Some(r), Some(r0)) = (reference, ref_ms) {
            if since_check.len() >= DRIFT_EVERY || queue.is_empty() {
                let now = pool.install(|| time_tight(engine, r, opts, &cores))?.median_ms;
                let drift = now / r0 - 1.0;
                if drift.abs() > DRIFT_LIMIT && !retiming {
                    tracing::warn!(
                        drift,
                        entries = since_check.len(),
                        "the reference layer moved; timing those entries again"
                    );
                    retiming = true;
                    done -= since_check.len();
                    for c in since_check.drain(..).rev() {
                        queue.push_front(c);
                    }
                } else {
                    if retiming {
                        ref_ms = Some(now);
                    }
                    retiming = false;
                    since_check.clear();
                }
            }
        }
        if let Some(path) = checkpoint {
            if last_save.elapsed() > Duration::from_secs(30) || done == total {
                lut.build_seconds += started.elapsed().as_secs_f64();
                started = Instant::now();
                lut.updated_at = utc_now();
                lut.save(path)?;
                last_save = Instant::now();
            }
        }
    }
    drop(pool);

    if lut.fit.is_none() {
        lut.fit = Some(fit_overhead(engine, &lut, &space, opts, progress)?);
    }
    lut.build_seconds += started.elapsed().as_secs_f64();
    lut.updated_at = utc_now();
    if let Some(path) = checkpoint {
        lut.save(path)?;
    }
    Ok(lut)
}

/// Entries timed between two checks of the reference layer.
const DRIFT_EVERY: usize = 100;
/// Relative change of the reference layer that counts as drift.
const DRIFT_LIMIT: f64 = 0.05;

/// A seeded Fisher-Yates shuffle (splitmix64), so that a build's order is reproducible.
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// [`time_stage`], timed again (up to twice) while its spread exceeds `opts.max_cv`; the attempt
/// with the smallest spread is kept.
fn time_tight(engine: &dyn StageTimer, config: &StageConfig, opts: &LutOptions, cores: &[usize]) -> LutResult<Stats> {
    let mut best = time_stage(engine, config, opts, cores)?;
    for _ in 0..2 {
        if best.cv <= opts.max_cv {
            break;
        }
        let again = time_stage(engine, config, opts, cores)?;
        if again.cv < best.cv {
            best = again;
        }
    }
    Ok(best)
}

/// `prev` when it was built with the same settings on this device, else why not.
fn resumable(prev: Lut, space: &SearchSpace, opts: &LutOptions, here: &Fingerprint, configs: usize) -> LutResult<Lut> {
    let differs = |what: &str, theirs: String, ours: String| {
        Err(LutError::Resume(format!("the existing table has {what} {theirs}, this build {ours}")))
    };
    if prev.resolution != opts.resolution {
        return differs("resolution", prev.resolution.to_string(), opts.resolution.to_string());
    }
    if (prev.threads, prev.runs, prev.warmup) != (opts.threads, opts.runs, opts.warmup) {
        return differs(
            "threads/runs/warmup",
            format!("{}/{}/{}", prev.threads, prev.runs, prev.warmup),
            format!("{}/{}/{}", opts.threads, opts.runs, opts.warmup),
        );
    }
    if prev.space() != *space {
        return Err(LutError::Resume(
            "the existing table is of another search space (skeleton, stem, head or classes)".into(),
        ));
    }
    if prev.fingerprint.engine != here.engine {
        return differs("engine", prev.fingerprint.engine, here.engine.clone());
    }
    if prev.fingerprint_key != here.key() {
        return differs("device fingerprint", prev.fingerprint_key, here.key());
    }
    if prev.configs != configs {
        return differs("configuration count", prev.configs.to_string(), configs.to_string());
    }
    Ok(prev)
}

/// Statistics of one stage configuration's timings, on the calling (pinned) thread.
fn time_stage(engine: &dyn StageTimer, config: &StageConfig, opts: &LutOptions, cores: &[usize]) -> LutResult<Stats> {
    let samples = engine.time_stage(&config.kind, opts, cores)?;
    Stats::of(&samples).ok_or_else(|| LatencyError::Engine(format!("{}: no usable timings", config.key)).into())
}

fn engine_error(e: mnas_engine::EngineError) -> LatencyError {
    LatencyError::Engine(e.to_string())
}

/// `n` fixed values in [-1, 1): the input a stage is timed on (values do not change latency).
pub(crate) fn stage_input(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect()
}

/// Bytes read to evict a core's private caches: more than any core's L2 (and L1).
const EVICTION_BYTES: usize = 8 << 20;

thread_local! {
    /// The buffer [`evict_caches`] reads, one per timing thread, allocated once.
    static EVICTION: Vec<u8> = vec![1; EVICTION_BYTES];
}

/// Evicts the calling core's private caches before a stage is timed, as a network's pass does:
/// inside a network a layer's weights were last read a whole pass ago and come from the shared
/// cache or memory, while timed alone, run after run, they stayed in L2. On an AMD Zen 4 (1 MB
/// L2), against the same 200 measured archs, a table timed warm predicted 70 % within +-10 %,
/// one timed with this 84.5 %.
pub(crate) fn evict_caches() {
    EVICTION.with(|scratch| black_box(scratch.iter().step_by(64).fold(0u8, |a, &b| a.wrapping_add(b))));
}

/// Times one layer alone in inference form (BN folded) on a random input of its shape.
fn time_layer(layer: &Layer, act: Activation, opts: &LutOptions) -> LutResult<Vec<f64>> {
    let net = FoldedLayer::random(layer, act, opts.seed);
    let (c, s) = (layer.in_channels as usize, layer.in_size as usize);
    let input = stage_input(c * s * s);
    let once = || -> LutResult<f64> {
        evict_caches();
        // The layer consumes its input buffer, so the copy is made before the clock starts: in
        // a network nothing is copied between layers. The copy also brings the input into the
        // caches, as the layer before leaves it there.
        let x = Buf::from_slice(&input);
        let start = Instant::now();
        let y = net.run_buf(x, 1, s, s).map_err(engine_error)?;
        let elapsed = start.elapsed();
        black_box(y);
        Ok(elapsed.as_secs_f64() * 1e3)
    };
    for _ in 0..opts.warmup {
        once()?;
    }
    (0..opts.runs).map(|_| once()).collect()
}

/// Times a part of a whole network's forward pass (stage times from
/// [`Folded::forward_timed`]); the stem and the head only exist inside a network.
fn time_in_network(arch: &Arch, opts: &LutOptions, pick: impl Fn(&[Duration]) -> Duration) -> LutResult<Vec<f64>> {
    let net = Folded::random(arch, opts.seed).map_err(engine_error)?;
    let r = arch.resolution as usize;
    let input = stage_input(r * r * 3);
    let once = || -> LutResult<f64> {
        let (logits, times) = net.forward_timed(&input, 1, r).map_err(engine_error)?;
        black_box(logits);
        Ok(pick(&times).as_secs_f64() * 1e3)
    };
    for _ in 0..opts.warmup {
        once()?;
    }
    (0..opts.runs).map(|_| once()).collect()
}

/// The fit archs: `opts.fit_archs` samples of the space drawn with `opts.fit_seed`.
pub fn fit_archs(space: &SearchSpace, opts: &LutOptions) -> Vec<Arch> {
    space_at(space, opts.resolution).sample(opts.fit_seed, opts.fit_archs).into_iter().map(|(_, a)| a).collect()
}

/// Measures the fit archs end to end and fits `measured = a * layer_sum + b`.
fn fit_overhead(
    engine: &dyn StageTimer,
    lut: &Lut,
    space: &SearchSpace,
    opts: &LutOptions,
    progress: &(dyn Fn(LutProgress) + Sync),
) -> LutResult<OverheadFit> {
    let archs = fit_archs(space, opts);
    let total = archs.len() * opts.fit_passes;
    progress(LutProgress::Fit { done: 0, total });
    let fit_opts = opts.measure_options(opts.fit_runs);
    let measured = measure_in_passes(engine, &archs, &fit_opts, opts.fit_passes, None, &mut |i, pass| {
        progress(LutProgress::Fit { done: pass * archs.len() + i + 1, total });
        Ok::<_, LutError>(())
    })?;
    let mut points = Vec::with_capacity(archs.len());
    for (arch, measured_ms) in archs.iter().zip(measured.medians()) {
        let (layer_sum_ms, _) = lut.layer_sum(arch)?;
        points.push(FitPoint { arch: arch.canonical(), layer_sum_ms, measured_ms, excluded: false });
    }
    let mut fit = OverheadFit::least_squares(points, opts.fit_seed, opts.fit_runs)?;
    fit.passes = opts.fit_passes;
    fit.pace_ms = measured.pace_ms();
    Ok(fit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_order_is_a_seeded_permutation_that_leaves_block_order() {
        let order = |seed| {
            let mut v: Vec<usize> = (0..500).collect();
            shuffle(&mut v, seed);
            v
        };
        let a = order(0);
        assert_eq!(a, order(0), "same seed, same order");
        assert_ne!(a, order(1), "another seed, another order");
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..500).collect::<Vec<_>>(), "every entry exactly once");
        // Far from block order: the first fifth holds entries from all over the range.
        assert!(a[..100].iter().filter(|&&i| i >= 250).count() > 30, "{:?}", &a[..100]);
    }

    #[test]
    fn a_spread_limit_that_is_not_positive_is_refused() {
        for bad in [0.0, -1.0, f64::NAN] {
            let e = LutOptions { max_cv: bad, ..LutOptions::default() }.validate().unwrap_err();
            assert!(e.to_string().contains("spread"), "{e}");
        }
    }
}
