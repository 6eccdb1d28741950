//! A proxy recipe judged against the reference: every sampled architecture trained with the
//! proxy under several seeds (each run cached, so a rerun of the same recipe costs nothing and an
//! interrupted one continues), then Kendall tau / Spearman of the proxy score against the
//! reference accuracy with bootstrap intervals, the seed-to-seed tau, the parameter-count and
//! MAC baselines, and the overlap of the top quarter.

use std::path::{Path, PathBuf};

use mnas_engine::train::{RunResult, RunStatus};
use mnas_space::SearchSpace;
use mnas_stats::{bootstrap_interval, spearman, tau_b, top_overlap};
use serde::{Deserialize, Serialize};

use super::record::{self, field};
use super::reference::{Reference, CLASSES};
use super::sample::stratified_sample;
use super::JobObserver;
use crate::error::{PipelineError, Result};
use crate::proxy::{ProxySettings, ProxyTrainer, Score};

const KIND: &str = "proxy-runs";
const COLUMNS: [&str; 10] = [
    "index",
    "seed",
    "val_top1",
    "val_loss",
    "train_loss",
    "train_loss_late",
    "steps",
    "seconds",
    "images_per_sec",
    "status",
];

/// Bootstrap resamples for the intervals.
const RESAMPLES: usize = 2000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunsHeader {
    reference_data_hash: String,
    archs: usize,
    archs_seed: u64,
    settings: ProxySettings,
}

/// One cached proxy run.
#[derive(Debug, Clone, PartialEq)]
struct RunRow {
    index: usize,
    seed: u64,
    result: RunResult,
}

impl RunRow {
    fn fields(&self) -> Vec<String> {
        let r = &self.result;
        vec![
            self.index.to_string(),
            self.seed.to_string(),
            format!("{:.6}", r.val_top1),
            format!("{:.6}", r.val_loss),
            format!("{:.6}", r.train_loss),
            format!("{:.6}", r.train_loss_late),
            r.steps.to_string(),
            format!("{:.3}", r.seconds),
            format!("{:.1}", r.images_per_sec),
            match &r.status {
                RunStatus::Completed => "ok".into(),
                RunStatus::Diverged { reason } => format!("diverged: {reason}"),
            },
        ]
    }

    fn parse(path: &Path, row: &[String]) -> Result<Self> {
        let status = if row[9] == "ok" {
            RunStatus::Completed
        } else {
            RunStatus::Diverged { reason: row[9].trim_start_matches("diverged: ").to_string() }
        };
        Ok(RunRow {
            index: field(path, row, &COLUMNS, "index")?,
            seed: field(path, row, &COLUMNS, "seed")?,
            result: RunResult {
                status,
                steps: field(path, row, &COLUMNS, "steps")?,
                train_loss: field(path, row, &COLUMNS, "train_loss")?,
                train_loss_late: field(path, row, &COLUMNS, "train_loss_late")?,
                val_top1: field(path, row, &COLUMNS, "val_top1")?,
                val_loss: field(path, row, &COLUMNS, "val_loss")?,
                seconds: field(path, row, &COLUMNS, "seconds")?,
                images_per_sec: field(path, row, &COLUMNS, "images_per_sec")?,
            },
        })
    }
}

/// A benchmark of one proxy recipe.
pub struct ProxyBench<'a> {
    pub reference: &'a Reference,
    /// The recipe; its `seed` is the first seed, the others follow it.
    pub settings: ProxySettings,
    pub seeds: usize,
    /// Where proxy runs are cached (one file per recipe); `None` keeps nothing.
    pub cache: Option<PathBuf>,
    /// Compare on the architectures the reference has finished so far (while its job runs); the
    /// proxy still runs, and caches, every architecture of the sample.
    pub partial: bool,
}

/// The figures of one proxy score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreFigures {
    pub score: Score,
    /// Kendall tau-b of the seed-mean score against the reference accuracy, with its 95 %
    /// bootstrap interval.
    pub tau: Option<f64>,
    pub tau_ci: Option<[f64; 2]>,
    pub spearman: Option<f64>,
    /// Tau between the first two seeds' scores.
    pub tau_seed: Option<f64>,
    /// Each seed's own tau against the reference (one proxy run per model, as a search trial
    /// runs), and their mean: the seed-mean `tau` above ranks with more compute than a trial has.
    pub tau_by_seed: Vec<Option<f64>>,
    pub tau_one_seed: Option<f64>,
    /// Share of the reference's top quarter that the proxy also puts in its top quarter.
    pub top25: Option<f64>,
}

/// The benchmark's result (`--json` prints it; scripts read these names).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// Architectures compared (those whose reference training and every proxy run finished).
    pub archs: usize,
    /// Architectures in the reference's sample.
    pub sample: usize,
    pub seeds: usize,
    /// The figures of the recipe's own score ([`ProxySettings::score`]).
    pub score: Score,
    pub tau: Option<f64>,
    pub tau_ci: Option<[f64; 2]>,
    pub spearman: Option<f64>,
    pub tau_seed: Option<f64>,
    pub tau_one_seed: Option<f64>,
    pub top25: Option<f64>,
    /// Baselines: parameter count and MACs (deployed form) against the reference.
    pub tau_params: Option<f64>,
    pub tau_params_ci: Option<[f64; 2]>,
    pub tau_macs: Option<f64>,
    pub tau_macs_ci: Option<[f64; 2]>,
    /// Every score, for comparison.
    pub scores: Vec<ScoreFigures>,
    /// Mean held-out top-1 of the proxy runs, and of the reference.
    pub mean_accuracy: f64,
    pub reference_mean_accuracy: f64,
    /// Wall seconds per proxy run (training + scoring) and training images per second, as run
    /// (from the cache where it served; give the load with them).
    pub seconds_per_trial: f64,
    pub images_per_sec: f64,
    /// Proxy runs that diverged (their archs are left out of the figures).
    pub diverged: usize,
    pub settings: ProxySettings,
}

fn ci(v: Option<(f64, f64)>) -> Option<[f64; 2]> {
    v.map(|(a, b)| [a, b])
}

fn settings_id(s: &ProxySettings) -> String {
    let json = serde_json::to_string(s).expect("settings serialise");
    let h = json.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3));
    format!("{h:016x}")
}

impl ProxyBench<'_> {
    /// Runs what the cache lacks and computes the figures.
    pub fn run(&self, observer: &mut dyn JobObserver) -> Result<BenchReport> {
        if self.seeds == 0 {
            return Err(PipelineError::Bench("at least one seed is needed".into()));
        }
        let r = self.reference;
        let refs = r.by_index();
        let missing = refs.iter().filter(|x| x.is_none()).count();
        if missing > 0 && !self.partial {
            return Err(PipelineError::Reference {
                path: r.path.clone(),
                reason: format!(
                    "{missing} of {} architectures have no reference yet: finish the job with `mnas bench reference`",
                    r.header.archs
                ),
            });
        }
        let trainer = ProxyTrainer::new(self.settings.clone())?;
        r.check_data(&trainer.data.name, trainer.data_hash)?;
        let sample = stratified_sample(&SearchSpace::default(), r.header.archs, r.header.archs_seed, CLASSES);
        let header = RunsHeader {
            reference_data_hash: r.header.data_hash.clone(),
            archs: r.header.archs,
            archs_seed: r.header.archs_seed,
            settings: self.settings.clone(),
        };
        let cache = self.cache.as_ref().map(|dir| dir.join(format!("{}.csv", settings_id(&self.settings))));
        let mut rows: Vec<RunRow> = Vec::new();
        if let Some(path) = &cache {
            match record::read::<RunsHeader>(path, KIND, &COLUMNS)? {
                Some((h, raw)) if h == header => {
                    rows = raw.iter().map(|row| RunRow::parse(path, row)).collect::<Result<_>>()?;
                }
                _ => record::create(path, KIND, &header, &COLUMNS)?,
            }
        }
        let seeds: Vec<u64> = (0..self.seeds as u64).map(|k| self.settings.seed + k).collect();
        let total = sample.len() * seeds.len();
        let mut done = rows.iter().filter(|row| seeds.contains(&row.seed)).count();
        let mut warned = false;
        for &seed in &seeds {
            let run_trainer = ProxyTrainer {
                data: trainer.data.clone(),
                data_hash: trainer.data_hash,
                settings: ProxySettings { seed, ..self.settings.clone() },
            };
            for s in &sample {
                if rows.iter().any(|row| row.index == s.index && row.seed == seed) {
                    continue;
                }
                if !warned {
                    for w in run_trainer.warnings(&s.arch) {
                        tracing::warn!("{w}");
                    }
                    warned = true;
                }
                let what = format!("proxy {}/{} seed {seed}", s.index + 1, sample.len());
                observer.on_run_start(&what, done, total);
                let mut stopped = false;
                let result = run_trainer.run(&s.arch, &mut |p| {
                    let go = observer.on_step(p);
                    stopped |= !go;
                    go
                })?;
                if stopped {
                    return Err(PipelineError::Bench("stopped before every proxy run finished".into()));
                }
                observer.on_run_end(&what, &result);
                let row = RunRow { index: s.index, seed, result };
                if let Some(path) = &cache {
                    record::append(path, &row.fields())?;
                }
                rows.push(row);
                done += 1;
            }
        }
        Ok(self.figures(&rows, &seeds))
    }

    fn figures(&self, rows: &[RunRow], seeds: &[u64]) -> BenchReport {
        let refs = self.reference.by_index();
        let run = |index: usize, seed: u64| rows.iter().find(|r| r.index == index && r.seed == seed);
        let diverged =
            rows.iter().filter(|r| seeds.contains(&r.seed) && !matches!(r.result.status, RunStatus::Completed)).count();
        // Architectures with a finished reference and every seed's proxy run completed.
        let usable: Vec<usize> = (0..refs.len())
            .filter(|&i| {
                refs[i].is_some_and(|r| r.ok())
                    && seeds.iter().all(|&s| run(i, s).is_some_and(|r| r.result.status == RunStatus::Completed))
            })
            .collect();
        let reference: Vec<f64> = usable.iter().map(|&i| refs[i].expect("usable").val_top1).collect();
        let params: Vec<f64> = usable.iter().map(|&i| refs[i].expect("usable").params as f64).collect();
        let macs: Vec<f64> = usable.iter().map(|&i| refs[i].expect("usable").macs as f64).collect();
        let per_seed = |score: Score, seed: u64| -> Vec<f64> {
            usable.iter().map(|&i| score.of(&run(i, seed).expect("usable").result)).collect()
        };
        let mean_score = |score: Score| -> Vec<f64> {
            let mut acc = vec![0.0; usable.len()];
            for &s in seeds {
                for (a, v) in acc.iter_mut().zip(per_seed(score, s)) {
                    *a += v / seeds.len() as f64;
                }
            }
            acc
        };
        let boot = |x: &[f64], seed: u64| ci(bootstrap_interval(x, &reference, tau_b, RESAMPLES, 0.95, seed));
        let scores: Vec<ScoreFigures> = Score::ALL
            .iter()
            .map(|&score| {
                let x = mean_score(score);
                let tau_by_seed: Vec<Option<f64>> =
                    seeds.iter().map(|&s| tau_b(&per_seed(score, s), &reference)).collect();
                let known: Vec<f64> = tau_by_seed.iter().flatten().copied().collect();
                let tau_one_seed = (known.len() == seeds.len()).then(|| known.iter().sum::<f64>() / known.len() as f64);
                ScoreFigures {
                    score,
                    tau: tau_b(&x, &reference),
                    tau_ci: boot(&x, 1),
                    spearman: spearman(&x, &reference),
                    tau_seed: (seeds.len() >= 2)
                        .then(|| tau_b(&per_seed(score, seeds[0]), &per_seed(score, seeds[1])))
                        .flatten(),
                    tau_by_seed,
                    tau_one_seed,
                    top25: top_overlap(&x, &reference, 0.25),
                }
            })
            .collect();
        let own = scores.iter().find(|f| f.score == self.settings.score).expect("every score is listed").clone();
        let completed: Vec<&RunRow> =
            rows.iter().filter(|r| seeds.contains(&r.seed) && r.result.status == RunStatus::Completed).collect();
        let mean = |v: Vec<f64>| if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 };
        BenchReport {
            archs: usable.len(),
            sample: refs.len(),
            seeds: seeds.len(),
            score: own.score,
            tau: own.tau,
            tau_ci: own.tau_ci,
            spearman: own.spearman,
            tau_seed: own.tau_seed,
            tau_one_seed: own.tau_one_seed,
            top25: own.top25,
            tau_params: tau_b(&params, &reference),
            tau_params_ci: boot(&params, 2),
            tau_macs: tau_b(&macs, &reference),
            tau_macs_ci: boot(&macs, 3),
            scores,
            mean_accuracy: mean(completed.iter().map(|r| r.result.val_top1).collect()),
            reference_mean_accuracy: mean(reference.clone()),
            seconds_per_trial: mean(completed.iter().map(|r| r.result.seconds).collect()),
            images_per_sec: mean(completed.iter().map(|r| r.result.images_per_sec).collect()),
            diverged,
            settings: self.settings.clone(),
        }
    }
}
