//! Timing a network on this machine: pinned threads, warm-up, N timed batch forwards, and a
//! re-measurement when the spread is too wide.
//!
//! The engine (mnas-engine's inference form) parallelises with rayon, so the measurement runs
//! inside a dedicated rayon pool of exactly `threads` workers, each pinned to its own core; with
//! one thread every kernel runs serially on one pinned core.

use std::hint::black_box;
use std::time::{Duration, Instant};

use mnas_engine::Folded;
use mnas_space::Arch;
use serde::{Deserialize, Serialize};

use crate::error::{LatencyError, Result};
use crate::fingerprint::{Fingerprint, ENGINE, ENGINE_VERSION};
use crate::pin::{allowed_cores, choose_cores, pin_current_thread};
use crate::stats::Stats;
use mnas_space::timestamp::utc_now;

/// How to measure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureOptions {
    /// Engine threads, each pinned to its own core.
    pub threads: usize,
    /// Timed forward passes per attempt.
    pub runs: usize,
    /// Untimed forward passes before the first attempt.
    pub warmup: usize,
    pub batch: usize,
    /// Largest coefficient of variation accepted as stable.
    pub max_cv: f64,
    /// Extra attempts when the spread is too wide; the tightest attempt is kept.
    pub retries: usize,
    /// First core to pin to; `None` takes the last allowed core(s).
    pub core: Option<usize>,
    /// Also time each stage (stem, every layer, head, classifier).
    pub per_layer: bool,
    /// Seed of the random weights and input.
    pub seed: u64,
    /// How much slower (relative) than now the machine may have run when a stored measurement
    /// was taken (its pace against the pace now) for the store to serve it; above, it is
    /// measured again. Infinite: always served.
    #[serde(default = "default_max_slowdown")]
    pub max_slowdown: f64,
}

/// Timing the pace reference twice on a quiet machine differs by a few percent; a VM's slow
/// spell moves it by 20-70 %.
pub const DEFAULT_MAX_SLOWDOWN: f64 = 0.15;

fn default_max_slowdown() -> f64 {
    DEFAULT_MAX_SLOWDOWN
}

impl Default for MeasureOptions {
    fn default() -> Self {
        MeasureOptions {
            threads: 1,
            runs: 50,
            warmup: 10,
            batch: 1,
            max_cv: 0.10,
            retries: 2,
            core: None,
            per_layer: false,
            seed: 0,
            max_slowdown: DEFAULT_MAX_SLOWDOWN,
        }
    }
}

/// Largest accepted run count, warm-up count and batch: enough for any real use, small enough
/// that a typo does not tie the machine up for a day.
const MAX_RUNS: usize = 100_000;
const MAX_BATCH: usize = 4096;

impl MeasureOptions {
    /// Checks every field a user can get wrong; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(LatencyError::Option(msg));
        if self.threads == 0 {
            return bad("threads must be at least 1".into());
        }
        if self.runs == 0 {
            return bad("runs must be at least 1".into());
        }
        if self.runs > MAX_RUNS || self.warmup > MAX_RUNS {
            return bad(format!("runs and warmup must be at most {MAX_RUNS}"));
        }
        if self.batch == 0 || self.batch > MAX_BATCH {
            return bad(format!("batch must be between 1 and {MAX_BATCH}, got {}", self.batch));
        }
        if !(self.max_cv.is_finite() && self.max_cv > 0.0) {
            return bad(format!("max_cv must be > 0, got {}", self.max_cv));
        }
        if self.max_slowdown.is_nan() || self.max_slowdown <= 0.0 {
            return bad(format!("max_slowdown must be > 0, got {}", self.max_slowdown));
        }
        if self.retries > 10 {
            return bad(format!("retries must be at most 10, got {}", self.retries));
        }
        Ok(())
    }
}

/// Time of one stage of the network (median over the per-layer runs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageTime {
    /// `stem`, `blocks.i.j`, `head` or `classifier` (the rows of `mnas arch show`).
    pub name: String,
    pub description: String,
    /// Multiply-accumulates of the stage for the whole batch.
    pub macs: u64,
    pub median_ms: f64,
}

/// One latency measurement and where it was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// [`Arch::canonical`] of the measured network (includes the resolution).
    pub arch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub resolution: u32,
    pub batch: usize,
    pub threads: usize,
    /// Median, p10, p90, mean, min, CV and the timed runs behind them (flattened in JSON).
    #[serde(flatten)]
    pub stats: Stats,
    pub warmup: usize,
    /// Attempts it took (1 + re-measurements).
    pub attempts: usize,
    /// Whether the kept attempt's CV is within the accepted spread.
    pub stable: bool,
    pub fingerprint: Fingerprint,
    /// RFC 3339 UTC.
    pub measured_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_layer: Option<Vec<StageTime>>,
    /// How fast the machine ran: the fastest of 21 runs of [`PACE_REFERENCE`] on the same engine
    /// and cores right after it. `None` where it was not timed (an external command, a prediction, a
    /// record from an older mnas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace_ms: Option<f64>,
}

/// The network whose time is a measurement's pace: small enough to cost tens of milliseconds,
/// made of the same ops as the networks measured, so that what slows them (another load, a VM's
/// neighbours, a power mode) slows it by about the same factor.
pub const PACE_REFERENCE: &str = "mobilenetv2_100";
/// Its resolution.
pub const PACE_RESOLUTION: u32 = 64;
/// Untimed runs of the pace reference: at least this many, for at least [`PACE_WARMUP_TIME`]. A
/// core that was idle runs its first tens of milliseconds slower (measured here: the reference's
/// fastest run 0.89-0.94 ms right after 5 s of idle, 0.62-0.69 ms otherwise).
const PACE_WARMUP: usize = 3;
const PACE_WARMUP_TIME: Duration = Duration::from_millis(40);
/// Most untimed runs, for an engine so slow that 40 ms is a few runs anyway.
const PACE_WARMUP_MAX: usize = 1000;
const PACE_RUNS: usize = 21;

/// Where a measurement is, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// About to run `total` timed passes (attempt counts from 1).
    Start { attempt: usize, total: usize },
    /// `done` of the attempt's timed passes finished.
    Run { done: usize },
    /// Per-layer timing: `done` of `total` passes.
    Layers { done: usize, total: usize },
}

/// The cores a measurement with `opts` would pin its threads to; an error when this process
/// cannot run that many threads on cores of their own, or `opts.core` is not available.
pub fn planned_cores(opts: &MeasureOptions) -> Result<Vec<usize>> {
    choose_cores(&allowed_cores()?, opts.threads, opts.core)
}

/// An inference engine of this machine: builds a runnable model of an arch on the thread that
/// will time it.
pub trait LocalEngine: Sync {
    /// Engine name and version as the fingerprint records them.
    fn identity(&self) -> (String, String);
    /// A model of `arch` (random weights) with its input, ready to run `opts.batch` images.
    /// `cores` are the measurement's cores (the calling thread is pinned to the first): threads the
    /// engine starts belong on them.
    fn build(&self, arch: &Arch, opts: &MeasureOptions, cores: &[usize]) -> Result<Box<dyn Runnable>>;
}

/// A built model: one forward pass per call.
pub trait Runnable {
    fn run(&mut self) -> Result<()>;
    /// One forward pass with the time of each stage (stem, blocks.i.j, head, classifier);
    /// `None` when the engine cannot time stages.
    fn run_stages(&mut self) -> Result<Option<Vec<Duration>>> {
        Ok(None)
    }
}

/// The fingerprint of a measurement on `engine` here.
pub fn fingerprint_of(engine: &dyn LocalEngine, threads: usize, cores: Vec<usize>) -> Fingerprint {
    let (name, version) = engine.identity();
    Fingerprint { engine: name, engine_version: version, ..Fingerprint::current(threads, cores) }
}

/// mnas-engine's inference form: BN folded, activations fused.
pub struct BuiltIn;

impl LocalEngine for BuiltIn {
    fn identity(&self) -> (String, String) {
        (ENGINE.to_string(), ENGINE_VERSION.to_string())
    }

    fn build(&self, arch: &Arch, opts: &MeasureOptions, _cores: &[usize]) -> Result<Box<dyn Runnable>> {
        let net = Folded::random(arch, opts.seed).map_err(engine_error)?;
        Ok(Box::new(BuiltInModel { net, input: Input::random(arch, opts) }))
    }
}

struct BuiltInModel {
    net: Folded,
    input: Input,
}

impl Runnable for BuiltInModel {
    fn run(&mut self) -> Result<()> {
        let logits = self.net.forward(&self.input.pixels, self.input.batch, self.input.size).map_err(engine_error)?;
        black_box(logits);
        Ok(())
    }

    fn run_stages(&mut self) -> Result<Option<Vec<Duration>>> {
        let (logits, times) =
            self.net.forward_timed(&self.input.pixels, self.input.batch, self.input.size).map_err(engine_error)?;
        black_box(logits);
        Ok(Some(times))
    }
}

/// Measures `arch` on this machine with the built-in engine and `opts` (random weights; weights
/// do not change latency).
pub fn measure(arch: &Arch, opts: &MeasureOptions, progress: &(dyn Fn(Progress) + Sync)) -> Result<Measurement> {
    measure_on(&BuiltIn, arch, opts, progress)
}

/// [`measure`] on any engine of this machine.
pub fn measure_on(
    engine: &dyn LocalEngine,
    arch: &Arch,
    opts: &MeasureOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Measurement> {
    opts.validate()?;
    arch.validate()?;
    let cores = planned_cores(opts)?;
    let pool = pinned_pool(&cores, "mnas-latency")?;
    tracing::info!(arch = %arch.canonical(), ?cores, threads = opts.threads, "measuring");
    let (kept, attempts, per_layer, pace) = pool.install(|| {
        let (kept, attempts, per_layer) = run_pinned(engine, arch, opts, &cores, progress)?;
        // After the measurement, while the core still runs at the speed it was measured at.
        let pace = time_pace(engine, opts, &cores)?;
        Ok::<_, LatencyError>((kept, attempts, per_layer, pace))
    })?;
    let stable = kept.cv <= opts.max_cv;
    if !stable {
        tracing::info!(cv = kept.cv, max_cv = opts.max_cv, attempts, "latency spread stays too wide");
    }
    Ok(Measurement {
        arch: arch.canonical(),
        name: arch.name.clone(),
        resolution: arch.resolution,
        batch: opts.batch,
        threads: opts.threads,
        stats: kept,
        warmup: opts.warmup,
        attempts,
        stable,
        fingerprint: fingerprint_of(engine, opts.threads, cores),
        measured_at: utc_now(),
        per_layer,
        pace_ms: Some(pace),
    })
}

/// The pace of this machine now: [`PACE_REFERENCE`]'s median on `engine` with `opts`'s threads
/// and cores (batch 1), in ms.
pub fn pace_on(engine: &dyn LocalEngine, opts: &MeasureOptions) -> Result<f64> {
    opts.validate()?;
    let cores = planned_cores(opts)?;
    let pool = pinned_pool(&cores, "mnas-pace")?;
    pool.install(|| time_pace(engine, opts, &cores))
}

/// One engine thread pinned to each of `cores` (the pool a measurement runs in).
pub(crate) fn pinned_pool(cores: &[usize], name: &'static str) -> Result<rayon::ThreadPool> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cores.len())
        .thread_name(move |i| format!("{name}-{i}"))
        .build()
        .map_err(|e| LatencyError::Pin(format!("cannot start {} engine threads: {e}", cores.len())))?;
    for result in pool.broadcast(|ctx| pin_current_thread(cores[ctx.index()])) {
        result?;
    }
    Ok(pool)
}

/// [`pace_on`] on a thread already pinned to `cores[0]`.
fn time_pace(engine: &dyn LocalEngine, opts: &MeasureOptions, cores: &[usize]) -> Result<f64> {
    let mut reference = mnas_space::lookup(PACE_REFERENCE)?;
    reference.resolution = PACE_RESOLUTION;
    reference.num_classes = 10;
    let pace_opts = MeasureOptions { batch: 1, per_layer: false, ..opts.clone() };
    let mut model = engine.build(&reference, &pace_opts, cores)?;
    let warming = Instant::now();
    let mut warm = 0;
    while warm < PACE_WARMUP || (warming.elapsed() < PACE_WARMUP_TIME && warm < PACE_WARMUP_MAX) {
        model.run()?;
        warm += 1;
    }
    let mut samples = Vec::with_capacity(PACE_RUNS);
    for _ in 0..PACE_RUNS {
        let start = Instant::now();
        model.run()?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    // The fastest run: another process sharing the core delays some runs, not all of them,
    // while a machine that runs slower (a VM's neighbours, a power mode) slows every run.
    Stats::of(&samples)
        .map(|s| s.min_ms)
        .ok_or_else(|| LatencyError::Engine("no usable timings of the pace reference".into()))
}

type Pinned = (Stats, usize, Option<Vec<StageTime>>);

fn engine_error(e: mnas_engine::EngineError) -> LatencyError {
    LatencyError::Engine(e.to_string())
}

/// A batch of NHWC images with normal(0, 1) pixels (seeded): values do not change latency.
pub struct Input {
    pub pixels: Vec<f32>,
    pub batch: usize,
    pub size: usize,
}

impl Input {
    pub fn random(arch: &Arch, opts: &MeasureOptions) -> Input {
        let size = arch.resolution as usize;
        let mut s = opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let pixels = (0..opts.batch * size * size * 3)
            .map(|_| {
                // xorshift, then a sum of uniforms: close enough to normal for timing.
                let mut sum = 0.0f32;
                for _ in 0..4 {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    sum += (s >> 40) as f32 / (1u64 << 24) as f32;
                }
                (sum - 2.0) * 1.732
            })
            .collect();
        Input { pixels, batch: opts.batch, size }
    }
}

/// Times `runs` runs of `model` back to back, appending each (ms) to `times`; `after_each` gets
/// the count done so far.
pub(crate) fn time_runs(
    model: &mut dyn Runnable,
    runs: usize,
    times: &mut Vec<f64>,
    after_each: &mut dyn FnMut(usize),
) -> Result<()> {
    for done in 1..=runs {
        let start = Instant::now();
        model.run()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
        after_each(done);
    }
    Ok(())
}

/// Runs on a pinned pool thread: builds the model there (its memory is first touched by the
/// measuring core), warms up, times, and re-measures while the spread is too wide.
fn run_pinned(
    engine: &dyn LocalEngine,
    arch: &Arch,
    opts: &MeasureOptions,
    cores: &[usize],
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Pinned> {
    let mut model = engine.build(arch, opts, cores)?;
    for _ in 0..opts.warmup {
        model.run()?;
    }
    let mut best: Option<Stats> = None;
    let mut attempts = 0;
    while attempts <= opts.retries {
        attempts += 1;
        progress(Progress::Start { attempt: attempts, total: opts.runs });
        let mut samples = Vec::with_capacity(opts.runs);
        time_runs(model.as_mut(), opts.runs, &mut samples, &mut |done| progress(Progress::Run { done }))?;
        let stats = Stats::of(&samples).ok_or_else(|| LatencyError::Engine("no usable timings".into()))?;
        tracing::debug!(attempt = attempts, median_ms = stats.median_ms, cv = stats.cv, "attempt");
        if best.is_none_or(|b| stats.cv < b.cv) {
            best = Some(stats);
        }
        if stats.cv <= opts.max_cv {
            break;
        }
    }
    let best = best.ok_or_else(|| LatencyError::Engine("no attempt ran".into()))?;
    let per_layer = if opts.per_layer { Some(time_stages(model.as_mut(), arch, opts, progress)?) } else { None };
    Ok((best, attempts, per_layer))
}

/// Median time per op kind of the built-in engine over `opts.runs` passes, pinned like a
/// measurement (see [`mnas_engine::OpKind`]).
pub fn op_breakdown(arch: &Arch, opts: &MeasureOptions) -> Result<Vec<(String, f64)>> {
    opts.validate()?;
    let cores = planned_cores(opts)?;
    let pool = pinned_pool(&cores, "mnas-ops")?;
    pool.install(|| {
        let net = Folded::random(arch, opts.seed).map_err(engine_error)?;
        let input = Input::random(arch, opts);
        for _ in 0..opts.warmup {
            net.forward(&input.pixels, input.batch, input.size).map_err(engine_error)?;
        }
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); mnas_engine::OpKind::ALL.len()];
        for _ in 0..opts.runs {
            let ops = net.forward_ops(&input.pixels, input.batch, input.size).map_err(engine_error)?;
            for (slot, (_, d)) in samples.iter_mut().zip(ops) {
                slot.push(d.as_secs_f64() * 1e3);
            }
        }
        Ok(mnas_engine::OpKind::ALL
            .iter()
            .zip(samples)
            .map(|(k, s)| (k.name().to_string(), Stats::of(&s).map_or(f64::NAN, |st| st.median_ms)))
            .collect())
    })
}

/// Median time of every stage over `opts.runs` passes.
fn time_stages(
    model: &mut dyn Runnable,
    arch: &Arch,
    opts: &MeasureOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Vec<StageTime>> {
    let rows = mnas_space::count(arch).layers;
    let mut per_stage: Vec<Vec<f64>> = vec![Vec::with_capacity(opts.runs); rows.len()];
    for done in 1..=opts.runs {
        let times = model.run_stages()?.ok_or_else(|| {
            LatencyError::Option("per-layer timing needs the built-in engine (this engine times whole passes)".into())
        })?;
        for (slot, t) in per_stage.iter_mut().zip(times) {
            slot.push(t.as_secs_f64() * 1e3);
        }
        progress(Progress::Layers { done, total: opts.runs });
    }
    Ok(rows
        .into_iter()
        .zip(per_stage)
        .map(|(row, samples)| StageTime {
            description: row.description,
            macs: row.macs * opts.batch as u64,
            median_ms: Stats::of(&samples).map_or(f64::NAN, |s| s.median_ms),
            name: row.name,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_options() {
        assert!(MeasureOptions::default().validate().is_ok());
        for (opts, needle) in [
            (MeasureOptions { runs: 0, ..Default::default() }, "runs"),
            (MeasureOptions { threads: 0, ..Default::default() }, "threads"),
            (MeasureOptions { batch: 0, ..Default::default() }, "batch"),
            (MeasureOptions { max_cv: f64::NAN, ..Default::default() }, "max_cv"),
            (MeasureOptions { max_slowdown: 0.0, ..Default::default() }, "max_slowdown"),
        ] {
            let e = opts.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn measures_a_small_model() {
        let mut arch = mnas_space::lookup("mnasnet-small").unwrap();
        arch.resolution = 32;
        let opts = MeasureOptions { runs: 4, warmup: 1, per_layer: true, max_cv: 10.0, ..Default::default() };
        let seen = std::sync::Mutex::new(Vec::new());
        let m = measure(&arch, &opts, &|p| seen.lock().unwrap().push(p)).unwrap();
        assert!(
            m.stats.median_ms > 0.0 && m.stats.p10_ms <= m.stats.median_ms && m.stats.median_ms <= m.stats.p90_ms,
            "{m:?}"
        );
        assert_eq!((m.stats.runs, m.attempts, m.stable, m.threads), (4, 1, true, 1));
        assert_eq!(m.fingerprint.cores.len(), 1);
        assert_eq!(m.arch, arch.canonical());
        let pace = m.pace_ms.expect("a local measurement records its pace");
        assert!(pace.is_finite() && pace > 0.0, "{pace}");
        let layers = m.per_layer.unwrap();
        assert_eq!(layers.len(), arch.layers().len() + 3);
        assert!(layers.iter().all(|l| l.median_ms.is_finite() && l.macs > 0), "{layers:?}");
        let seen = seen.into_inner().unwrap();
        assert_eq!(seen.iter().filter(|p| matches!(p, Progress::Run { .. })).count(), 4);
    }

    #[test]
    fn too_many_threads_is_an_error() {
        let arch = mnas_space::lookup("mnasnet-small").unwrap();
        let opts = MeasureOptions { threads: 100_000, ..Default::default() };
        let e = measure(&arch, &opts, &|_| {}).unwrap_err().to_string();
        assert!(e.contains("100000 threads"), "{e}");
    }
}
