//! The lookup-table latency predictor: one measured entry per distinct stage configuration of the
//! search space (stem, every layer at its position, head + classifier), and
//! `prediction = a * (sum of the arch's entries) + b`, with `a` and `b` fitted by least squares on
//! a few end-to-end measurements. It answers in microseconds, so a search can score thousands of
//! models without running them; `mnas latency lut-report` says how far to trust it.
//!
//! The table is only valid where it was measured: [`Lut::check_device`] compares fingerprints,
//! and an arch whose stages are not in the table (another resolution, a model outside the space)
//! is an error naming the first missing stage, never a silent guess.
//!
//! Building the table is [`crate::lut_build`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mnas_space::{Activation, Arch, ConvOp, Layer, Residual, SearchSpace};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::LatencyError;
use crate::fingerprint::Fingerprint;
use crate::measure::{fingerprint_of, LocalEngine};

/// Version of the LUT file layout; a file of another version is refused.
pub const LUT_FORMAT: u32 = 1;

/// Everything that can stop building, loading or using a LUT.
#[derive(Debug, Error)]
pub enum LutError {
    #[error("LUT {path}: no such file (build one with `mnas latency build-lut --out {path}`)")]
    NotFound { path: PathBuf },
    #[error("LUT {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("LUT {path}: not a valid LUT file ({reason})")]
    Parse { path: PathBuf, reason: String },
    #[error("LUT {path}: format {found}, this mnas reads format {LUT_FORMAT} (build it again)")]
    Format { path: PathBuf, found: u32 },
    #[error(
        "the LUT was built at {lut}x{lut}, the arch is at {arch}x{arch}: predict at --resolution {lut}, or build a \
         LUT at {arch}"
    )]
    Resolution { lut: u32, arch: u32 },
    #[error(
        "{stage} ({description}) is not in the LUT (key {key}): the arch is outside the search space the LUT was \
         built for (stem {stem}, head {head}, {classes} classes, {resolution}x{resolution})"
    )]
    Missing { stage: String, description: String, key: String, stem: u32, head: u32, classes: u32, resolution: u32 },
    #[error("the LUT has {have} of its {want} entries and no overhead fit: its build did not finish (rerun build-lut with --resume)")]
    Incomplete { have: usize, want: usize },
    #[error(
        "the LUT was measured on another device or build (fingerprint {lut_key}: {lut}); this one is {here_key}: \
         {here}"
    )]
    OtherDevice { lut_key: String, lut: String, here_key: String, here: String },
    #[error(
        "the LUT was measured with engine `{0}`, which this mnas cannot run (it knows mnas-engine and onnxruntime)"
    )]
    Engine(String),
    #[error("cannot resume the LUT: {0}")]
    Resume(String),
    #[error("invalid LUT option: {0}")]
    Option(String),
    #[error(transparent)]
    Latency(#[from] LatencyError),
}

pub type LutResult<T> = std::result::Result<T, LutError>;

/// One measured stage configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LutEntry {
    pub median_ms: f64,
    pub p10_ms: f64,
    pub p90_ms: f64,
    pub cv: f64,
    /// Multiply-accumulates of the stage (batch 1).
    pub macs: u64,
    /// Where the configuration occurs and what it is, e.g. `blocks.3.0 mbconv6 k3 s2 se12 +id`.
    pub description: String,
}

/// One end-to-end measurement the overhead fit used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitPoint {
    pub arch: String,
    pub layer_sum_ms: f64,
    /// The median of the fit's passes over its archs.
    pub measured_ms: f64,
    /// Left out of the fit: its measurement sat far off the line the others draw (a slow spell
    /// of the machine read 1.6-1.9x on four of 50 archs and pulled the line off).
    #[serde(default)]
    pub excluded: bool,
}

/// `measured ~ a * layer_sum + b`: what timing stages one at a time misses (the memory traffic
/// between stages, cache state, the per-pass allocations) or counts twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverheadFit {
    pub a: f64,
    pub b_ms: f64,
    /// Root mean square residual of the fit on its own points.
    pub rmse_ms: f64,
    /// Seed of [`mnas_space::SearchSpace::sample`] that drew the fit archs.
    pub seed: u64,
    pub runs: usize,
    /// Passes over the fit archs, each measuring every one of them (1 in tables built before
    /// passes existed).
    #[serde(default = "one_pass")]
    pub passes: usize,
    /// The machine's pace while the fit archs were measured (median over their measurements of
    /// [`crate::measure::PACE_REFERENCE`]'s time, ms): a report taken while the machine runs
    /// slower or faster than this reads the table off by about that much.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pace_ms: Option<f64>,
    pub points: Vec<FitPoint>,
}

fn one_pass() -> usize {
    1
}

impl OverheadFit {
    /// Least squares through `(layer_sum, measured)` points, then again without the points far
    /// off the line (more than [`OUTLIER_SPREADS`] robust spreads of the log ratio, at least
    /// [`OUTLIER_FLOOR`]), which stay listed as excluded; at least half the points are always
    /// kept. With every sum equal (no slope to fit) the fit is a pure offset.
    pub fn least_squares(mut points: Vec<FitPoint>, seed: u64, runs: usize) -> LutResult<OverheadFit> {
        if points.len() < 2 {
            return Err(LutError::Option(format!("the overhead fit needs at least 2 archs, got {}", points.len())));
        }
        points.iter_mut().for_each(|p| p.excluded = false);
        let mut line = line_through(&points);
        for _ in 0..3 {
            let off: Vec<f64> = points.iter().map(|p| log_ratio(p, line)).collect();
            let mut sorted = off.clone();
            sorted.sort_by(f64::total_cmp);
            // 1.4826 x the median absolute deviation: the standard deviation of a normal spread.
            let spread = 1.4826 * sorted[sorted.len() / 2];
            let limit = (OUTLIER_SPREADS * spread).max(OUTLIER_FLOOR);
            let keep = off.iter().filter(|&&d| d <= limit).count();
            if keep * 2 < points.len() {
                break;
            }
            points.iter_mut().zip(&off).for_each(|(p, &d)| p.excluded = d > limit);
            line = line_through(&points);
        }
        let (a, b_ms) = line;
        let kept: Vec<&FitPoint> = points.iter().filter(|p| !p.excluded).collect();
        let rmse_ms = (kept.iter().map(|p| (a * p.layer_sum_ms + b_ms - p.measured_ms).powi(2)).sum::<f64>()
            / kept.len() as f64)
            .sqrt();
        Ok(OverheadFit { a, b_ms, rmse_ms, seed, runs, passes: 1, pace_ms: None, points })
    }

    /// The predicted end-to-end latency: the line inside and above the fit archs' layer sums.
    /// Below the smallest, a negative intercept would extrapolate to a tiny or negative latency
    /// (a noisy fit on small models did), so there the prediction scales in proportion to the
    /// layer sum from the line's value at that smallest sum.
    pub fn apply(&self, layer_sum_ms: f64) -> f64 {
        let linear = |x: f64| self.a * x + self.b_ms;
        let smallest = self
            .points
            .iter()
            .filter(|p| p.layer_sum_ms > 0.0 && !p.excluded)
            .min_by(|p, q| p.layer_sum_ms.total_cmp(&q.layer_sum_ms));
        match smallest {
            Some(p) if layer_sum_ms < p.layer_sum_ms => {
                let at = linear(p.layer_sum_ms);
                let ratio = if at > 0.0 { at / p.layer_sum_ms } else { p.measured_ms / p.layer_sum_ms };
                ratio * layer_sum_ms
            }
            _ => linear(layer_sum_ms),
        }
    }
}

/// A fit point further off the line than this many robust spreads is left out.
pub const OUTLIER_SPREADS: f64 = 4.0;
/// ... but never one within this log ratio of the line (about 10 %).
pub const OUTLIER_FLOOR: f64 = 0.1;

/// `(a, b)` of the least-squares line through the points not excluded.
fn line_through(points: &[FitPoint]) -> (f64, f64) {
    let kept: Vec<&FitPoint> = points.iter().filter(|p| !p.excluded).collect();
    let n = kept.len() as f64;
    let mx = kept.iter().map(|p| p.layer_sum_ms).sum::<f64>() / n;
    let my = kept.iter().map(|p| p.measured_ms).sum::<f64>() / n;
    let sxx: f64 = kept.iter().map(|p| (p.layer_sum_ms - mx).powi(2)).sum();
    let sxy: f64 = kept.iter().map(|p| (p.layer_sum_ms - mx) * (p.measured_ms - my)).sum();
    let a = if sxx > 1e-12 * mx.abs().max(1.0) { sxy / sxx } else { 1.0 };
    (a, my - a * mx)
}

/// How far `p` lies off `line`: |ln(measured / predicted)| (infinite where the line predicts
/// nothing positive).
fn log_ratio(p: &FitPoint, (a, b): (f64, f64)) -> f64 {
    let predicted = a * p.layer_sum_ms + b;
    if predicted > 0.0 && p.measured_ms > 0.0 {
        (p.measured_ms / predicted).ln().abs()
    } else {
        f64::INFINITY
    }
}

/// A latency lookup table of one search space at one resolution on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lut {
    pub format: u32,
    pub resolution: u32,
    /// The search space's skeleton: (channels, layers, first stride) per block.
    pub skeleton: Vec<(u32, u32, u32)>,
    pub stem_channels: u32,
    pub head_channels: u32,
    pub num_classes: u32,
    pub threads: usize,
    /// Timed runs (after `warmup` untimed ones) behind each entry.
    pub runs: usize,
    pub warmup: usize,
    /// Where the entries were measured.
    pub fingerprint: Fingerprint,
    /// [`Fingerprint::key`] of `fingerprint`.
    pub fingerprint_key: String,
    /// Distinct stage configurations of the space: the entry count of a finished table.
    pub configs: usize,
    /// Stage key ([`stage_keys`]) -> entry.
    pub entries: BTreeMap<String, LutEntry>,
    /// `None` until the build has measured every entry and the fit archs.
    pub fit: Option<OverheadFit>,
    /// Wall time spent measuring, summed over resumed builds.
    pub build_seconds: f64,
    /// RFC 3339 UTC of the last write.
    pub updated_at: String,
}

/// One stage of an arch as the LUT sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StageRef {
    /// `stem`, `blocks.i.j` or `head`.
    pub stage: String,
    pub description: String,
    pub key: String,
}

/// A prediction with the entries behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub predicted_ms: f64,
    pub layer_sum_ms: f64,
    /// (stage, entry median ms), in execution order.
    pub stages: Vec<(String, f64)>,
}

impl Lut {
    /// Reads a LUT file. It is not checked against this device: see [`Lut::check_device`].
    pub fn load(path: impl AsRef<Path>) -> LutResult<Lut> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LutError::NotFound { path: path.to_path_buf() },
            _ => LutError::Io { path: path.to_path_buf(), source: e },
        })?;
        Lut::from_json(&text, path)
    }

    fn from_json(text: &str, path: &Path) -> LutResult<Lut> {
        let parse = |reason: String| LutError::Parse { path: path.to_path_buf(), reason };
        // The format is read first so that an older or newer layout gets its own message.
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| parse(e.to_string()))?;
        let format = value.get("format").and_then(|f| f.as_u64()).ok_or_else(|| parse("no `format` field".into()))?;
        if format != u64::from(LUT_FORMAT) {
            return Err(LutError::Format {
                path: path.to_path_buf(),
                found: u32::try_from(format).unwrap_or(u32::MAX),
            });
        }
        let lut: Lut = serde_json::from_value(value).map_err(|e| parse(e.to_string()))?;
        if let Some((key, _)) = lut.entries.iter().find(|(_, e)| !(e.median_ms.is_finite() && e.median_ms >= 0.0)) {
            return Err(parse(format!("entry {key} has no valid time")));
        }
        if lut.fit.as_ref().is_some_and(|f| !(f.a.is_finite() && f.b_ms.is_finite())) {
            return Err(parse("the overhead fit is not finite".into()));
        }
        Ok(lut)
    }

    /// Writes the LUT atomically (a temporary file in the same directory, then a rename), so a
    /// killed build never leaves a truncated table behind.
    pub fn save(&self, path: impl AsRef<Path>) -> LutResult<()> {
        let path = path.as_ref();
        let io = |source| LutError::Io { path: path.to_path_buf(), source };
        let text = serde_json::to_string_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "lut.json".into());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }

    /// The search space the table was built for, at its resolution.
    pub fn space(&self) -> SearchSpace {
        SearchSpace {
            skeleton: self.skeleton.clone(),
            stem_channels: self.stem_channels,
            head_channels: self.head_channels,
            num_classes: self.num_classes,
            resolution: self.resolution,
        }
    }

    /// Whether every configuration and the overhead fit are there.
    pub fn is_complete(&self) -> bool {
        self.fit.is_some() && self.entries.len() >= self.configs
    }

    /// An error when this machine's fingerprint (for the LUT's thread count) differs from the
    /// one the LUT was measured with: its CPU, SIMD level, engine build or mnas build profile.
    pub fn check_device(&self, engine: &dyn LocalEngine) -> LutResult<()> {
        let here = fingerprint_of(engine, self.threads, Vec::new());
        if here.key() == self.fingerprint_key {
            return Ok(());
        }
        Err(LutError::OtherDevice {
            lut_key: self.fingerprint_key.clone(),
            lut: self.fingerprint.summary(),
            here_key: here.key(),
            here: here.summary(),
        })
    }

    /// The stages of `arch` with their LUT keys; an error for another resolution.
    pub fn stages(&self, arch: &Arch) -> LutResult<Vec<StageRef>> {
        if arch.resolution != self.resolution {
            return Err(LutError::Resolution { lut: self.resolution, arch: arch.resolution });
        }
        Ok(stage_keys(arch))
    }

    /// Sum of the entries of `arch`'s stages, in ms, with the per-stage values.
    pub fn layer_sum(&self, arch: &Arch) -> LutResult<(f64, Vec<(String, f64)>)> {
        let mut stages = Vec::new();
        let mut total = 0.0;
        for s in self.stages(arch)? {
            let Some(entry) = self.entries.get(&s.key) else {
                return Err(LutError::Missing {
                    stage: s.stage,
                    description: s.description,
                    key: s.key,
                    stem: self.stem_channels,
                    head: self.head_channels,
                    classes: self.num_classes,
                    resolution: self.resolution,
                });
            };
            total += entry.median_ms;
            stages.push((s.stage, entry.median_ms));
        }
        Ok((total, stages))
    }

    /// Predicted latency of `arch` in ms (the search's latency source). Only the keys are built
    /// (no stage names or descriptions unless an entry is missing): a few microseconds.
    pub fn predict(&self, arch: &Arch) -> LutResult<f64> {
        let Some(fit) = &self.fit else {
            return Err(LutError::Incomplete { have: self.entries.len(), want: self.configs });
        };
        if arch.resolution != self.resolution {
            return Err(LutError::Resolution { lut: self.resolution, arch: arch.resolution });
        }
        let layers = arch.layers();
        let (head_in, size) = arch.head_input_after(&layers);
        let mut total = 0.0;
        let mut key = String::with_capacity(96);
        for stage in 0..layers.len() + 2 {
            key.clear();
            match stage {
                0 => key.push_str(&stem_key(arch)),
                s if s <= layers.len() => write_layer_key(&mut key, &layers[s - 1], arch.activation),
                _ => key.push_str(&head_key(arch, head_in, size)),
            }
            match self.entries.get(key.as_str()) {
                Some(entry) => total += entry.median_ms,
                // The detailed path names the stage in its error.
                None => return self.predict_detailed(arch).map(|p| p.predicted_ms),
            }
        }
        Ok(fit.apply(total))
    }

    /// [`Lut::predict`] with the stage entries behind the prediction.
    pub fn predict_detailed(&self, arch: &Arch) -> LutResult<Prediction> {
        let Some(fit) = &self.fit else {
            return Err(LutError::Incomplete { have: self.entries.len(), want: self.configs });
        };
        let (layer_sum_ms, stages) = self.layer_sum(arch)?;
        Ok(Prediction { predicted_ms: fit.apply(layer_sum_ms), layer_sum_ms, stages })
    }
}

/// LUT key of the stem: its only variables are its width and the input size.
pub fn stem_key(arch: &Arch) -> String {
    format!("stem_c{}_r{}_{}", arch.stem_out(), arch.resolution, arch.activation.name())
}

/// LUT key of the head conv + global pool + classifier.
pub fn head_key(arch: &Arch, in_channels: u32, size: u32) -> String {
    format!("head_i{in_channels}_o{}_c{}_r{size}_{}", arch.head_channels, arch.num_classes, arch.activation.name())
}

/// LUT key of one layer: every field that changes its computation (op, kernel, stride, channels
/// at each stage, SE width, resolved residual, input size, activation). Two layers with the same
/// key run the same kernels on the same shapes.
pub fn layer_key(l: &Layer, act: Activation) -> String {
    let mut key = String::with_capacity(64);
    write_layer_key(&mut key, l, act);
    key
}

/// [`layer_key`] appended to `key` (predictions reuse one buffer instead of allocating per layer).
fn write_layer_key(key: &mut String, l: &Layer, act: Activation) {
    use std::fmt::Write;
    match l.op {
        ConvOp::Conv => key.push_str("conv"),
        ConvOp::SepConv => key.push_str("dconv"),
        ConvOp::MbConv => {
            let _ = write!(key, "mbconv{}", l.expand);
        }
    }
    let residual = match l.residual {
        Residual::None => "none",
        Residual::Identity => "id",
        Residual::Pool { project: false, .. } => "pool",
        Residual::Pool { project: true, .. } => "pool1x1",
    };
    let _ = write!(
        key,
        "_k{}_s{}_i{}_m{}_o{}_se{}_{residual}_r{}_{}",
        l.kernel,
        l.stride,
        l.in_channels,
        l.mid_channels,
        l.out_channels,
        l.se_channels,
        l.in_size,
        act.name()
    );
}

/// The LUT stages of `arch` in execution order: stem, every layer, head (+ classifier).
pub fn stage_keys(arch: &Arch) -> Vec<StageRef> {
    let costs = mnas_space::count(arch).layers;
    let description = |i: usize| costs.get(i).map(|c| c.description.clone()).unwrap_or_default();
    let layers = arch.layers();
    let mut out = Vec::with_capacity(layers.len() + 2);
    out.push(StageRef { stage: "stem".into(), description: description(0), key: stem_key(arch) });
    for (i, l) in layers.iter().enumerate() {
        out.push(StageRef {
            stage: format!("blocks.{}.{}", l.block, l.index),
            description: description(i + 1),
            key: layer_key(l, arch.activation),
        });
    }
    let (head_in, size) = arch.head_input_after(&layers);
    out.push(StageRef {
        stage: "head".into(),
        description: "conv k1 + avgpool + linear".into(),
        key: head_key(arch, head_in, size),
    });
    out
}

/// How well predictions rank and match measurements.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Accuracy {
    pub archs: usize,
    /// Share of predictions within +-10% of the measurement.
    pub within_10pct: f64,
    pub rmse_ms: f64,
    /// Mean absolute percentage error.
    pub mape: f64,
    /// Kendall tau-b of prediction vs measurement.
    pub tau_prediction: Option<f64>,
    /// Kendall tau-b of the raw layer sum vs measurement (the fit is monotone, so equal unless a < 0).
    pub tau_layer_sum: Option<f64>,
    /// Kendall tau-b of MACs vs measurement: the proxy the paper argues against.
    pub tau_macs: Option<f64>,
}

impl Accuracy {
    /// From paired (predicted, layer sum, MACs, measured) values.
    pub fn of(predicted: &[f64], layer_sum: &[f64], macs: &[f64], measured: &[f64]) -> Accuracy {
        let n = measured.len().min(predicted.len());
        let rel: Vec<f64> = (0..n).map(|i| (predicted[i] - measured[i]) / measured[i]).collect();
        let within = rel.iter().filter(|r| r.abs() <= 0.10).count();
        let nf = n.max(1) as f64;
        Accuracy {
            archs: n,
            within_10pct: within as f64 / nf,
            rmse_ms: ((0..n).map(|i| (predicted[i] - measured[i]).powi(2)).sum::<f64>() / nf).sqrt(),
            mape: rel.iter().map(|r| r.abs()).sum::<f64>() / nf,
            tau_prediction: mnas_stats::tau_b(predicted, measured),
            tau_layer_sum: mnas_stats::tau_b(layer_sum, measured),
            tau_macs: mnas_stats::tau_b(macs, measured),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fit whose intercept is negative (layers timed alone slower than inside the network)
    /// stays positive below its points: there it scales from the line at the smallest point.
    #[test]
    fn below_its_points_the_fit_scales_in_proportion() {
        let point = |sum: f64, measured: f64| FitPoint {
            arch: String::new(),
            layer_sum_ms: sum,
            measured_ms: measured,
            excluded: false,
        };
        let fit = OverheadFit::least_squares(vec![point(1.0, 0.5), point(2.0, 1.6), point(3.0, 2.7)], 0, 1).unwrap();
        assert!(fit.b_ms < 0.0 && fit.a * 0.2 + fit.b_ms < 0.0, "{fit:?}");
        assert!((fit.apply(0.2) - 0.5 * 0.2).abs() < 1e-12, "the line gives 0.5 at sum 1: ratio 0.5");
        assert!((fit.apply(2.5) - (fit.a * 2.5 + fit.b_ms)).abs() < 1e-12, "inside the points: the line");
    }

    /// Archs measured in a slow spell of the machine (1.6-1.9x) are left out, and the line
    /// through the others is the one without them; ordinary scatter of a few percent stays in.
    #[test]
    fn measurements_far_off_the_line_are_left_out_of_the_fit() {
        let points: Vec<FitPoint> = (0..40)
            .map(|i| {
                let sum = 3.0 + 0.3 * i as f64;
                // +-3 % scatter around 1.05 x sum + 0.4, and three archs read 1.6-1.9x slow.
                let scatter = [1.0, 1.03, 0.97, 1.01, 0.99][i % 5];
                let slow = match i {
                    7 => 1.6,
                    21 => 1.9,
                    33 => 1.75,
                    _ => 1.0,
                };
                let measured_ms = (1.05 * sum + 0.4) * scatter * slow;
                FitPoint { arch: format!("a{i}"), layer_sum_ms: sum, measured_ms, excluded: false }
            })
            .collect();
        let fit = OverheadFit::least_squares(points, 0, 1).unwrap();
        let excluded: Vec<&str> = fit.points.iter().filter(|p| p.excluded).map(|p| p.arch.as_str()).collect();
        assert_eq!(excluded, ["a7", "a21", "a33"], "{fit:?}");
        assert!((fit.a - 1.05).abs() < 0.03 && (fit.b_ms - 0.4).abs() < 0.3, "{fit:?}");
        let all_in = OverheadFit {
            points: fit.points.iter().map(|p| FitPoint { excluded: false, ..p.clone() }).collect(),
            ..fit
        };
        assert!(line_through(&all_in.points).0 > 1.1, "with them the slope is pulled up");
    }

    #[test]
    fn least_squares_recovers_a_line() {
        let points: Vec<FitPoint> = [10.0, 20.0, 35.0]
            .iter()
            .map(|&s| FitPoint { arch: String::new(), layer_sum_ms: s, measured_ms: 1.5 * s + 2.0, excluded: false })
            .collect();
        let fit = OverheadFit::least_squares(points, 0, 1).unwrap();
        assert!((fit.a - 1.5).abs() < 1e-9 && (fit.b_ms - 2.0).abs() < 1e-9 && fit.rmse_ms < 1e-9, "{fit:?}");
        assert!((fit.apply(100.0) - 152.0).abs() < 1e-9);
        let one = vec![FitPoint { arch: String::new(), layer_sum_ms: 1.0, measured_ms: 1.0, excluded: false }];
        assert!(OverheadFit::least_squares(one, 0, 1).is_err());
    }

    #[test]
    fn keys_separate_what_changes_the_computation() {
        let a1 = mnas_space::lookup("mnasnet-a1").unwrap();
        let keys = stage_keys(&a1);
        assert_eq!(keys.len(), a1.layers().len() + 2);
        assert_eq!(keys[0].key, "stem_c32_r224_relu");
        assert_eq!(keys.last().unwrap().key, "head_i320_o1280_c1000_r7_relu");
        // blocks.1.0 (stride 2, 16 -> 24) and blocks.1.1 (stride 1, 24 -> 24) differ.
        assert_eq!(keys[2].key, "mbconv6_k3_s2_i16_m96_o24_se0_none_r112_relu");
        assert_eq!(keys[3].key, "mbconv6_k3_s1_i24_m144_o24_se0_id_r56_relu");
    }

    #[test]
    fn accuracy_of_known_values() {
        let measured = [10.0, 20.0, 30.0, 40.0];
        let predicted = [10.5, 25.0, 29.0, 39.0];
        let acc = Accuracy::of(&predicted, &predicted, &[4.0, 3.0, 2.0, 1.0], &measured);
        assert_eq!(acc.archs, 4);
        assert!((acc.within_10pct - 0.75).abs() < 1e-12, "{acc:?}");
        assert!((acc.rmse_ms - ((0.25 + 25.0 + 1.0 + 1.0) / 4.0f64).sqrt()).abs() < 1e-12);
        assert_eq!(acc.tau_prediction, Some(1.0));
        assert_eq!(acc.tau_macs, Some(-1.0));
    }
}
