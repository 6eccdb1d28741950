//! The search report: one self-contained HTML file (inline SVG and CSS; no scripts, no network)
//! that can be drawn at any moment of a search and compares several runs.
//!
//! Sections: (a) accuracy vs latency of every trial with each run's Pareto front and the target
//! latency (the paper's Fig. 6); (b) the latency histogram; (c) mean ± std reward per controller
//! step; (d) each run's Pareto front as a table. Failed trials are counted and listed, not plotted.

mod svg;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::error::{Result, SearchError};
use crate::pareto::pareto_front;
use crate::reward::Constraint;
use crate::store::{meta_keys, RunStore};
use crate::trial::{last_quarter_mean, Trial, TrialStatus};

use svg::{esc, Chart};

/// What the report says about a run besides its trials.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportMeta {
    /// Target latency T (ms), drawn as a dashed line.
    pub target_ms: Option<f64>,
    /// "ppo", "random", "evolution", or "unknown".
    pub strategy: String,
    /// The reward constraint in words.
    pub constraint: Option<String>,
    /// "running" or "finished".
    pub status: Option<String>,
    /// Where latency was measured.
    pub device: Option<String>,
    /// Controller steps whose state was saved.
    pub steps_done: Option<u64>,
    /// The run directory.
    pub source: Option<String>,
}

impl ReportMeta {
    /// Reads the [`meta_keys`] of a store, falling back to same-named fields of its config.
    pub fn from_store(store: &RunStore) -> Result<ReportMeta> {
        let config = store.config()?;
        let from_config = |key: &str| match config.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => {
                o.get("kind").and_then(|k| k.as_str()).map(str::to_string).or_else(|| Some(config[key].to_string()))
            }
            Some(serde_json::Value::Null) | None => None,
            Some(v) => Some(v.to_string()),
        };
        let get = |key: &str| -> Result<Option<String>> { Ok(store.meta(key)?.or_else(|| from_config(key))) };
        let target_ms = get(meta_keys::TARGET_MS)?.and_then(|s| s.trim().parse::<f64>().ok()).filter(|t| t.is_finite());
        Ok(ReportMeta {
            target_ms,
            strategy: get(meta_keys::STRATEGY)?.unwrap_or_else(|| "unknown".into()),
            constraint: match store.meta(meta_keys::CONSTRAINT)? {
                Some(c) => Some(c),
                None => config
                    .get("constraint")
                    .and_then(|c| serde_json::from_value::<Constraint>(c.clone()).ok())
                    .map(describe_constraint)
                    .or_else(|| from_config(meta_keys::CONSTRAINT)),
            },
            status: get(meta_keys::STATUS)?,
            device: get(meta_keys::DEVICE)?,
            steps_done: Some(store.steps_done()?),
            source: Some(store.dir().display().to_string()),
        })
    }
}

/// A constraint in words, with its exponents.
pub fn describe_constraint(c: Constraint) -> String {
    let (alpha, beta) = c.exponents();
    match c {
        Constraint::Soft => format!("soft (alpha = beta = {alpha})"),
        Constraint::Hard => format!("hard (alpha = {alpha}, beta = {beta})"),
        Constraint::Custom { .. } => format!("custom (alpha = {alpha}, beta = {beta})"),
    }
}

/// One run as the report shows it.
#[derive(Debug, Clone)]
pub struct ReportRun {
    /// Legend and table label (escaped in the page).
    pub label: String,
    pub trials: Vec<Trial>,
    pub meta: ReportMeta,
}

/// Tableau 10: distinguishable, and readable for the common colour-vision deficiencies.
const PALETTE: [&str; 10] =
    ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

fn color(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

const CSS: &str = "
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; color: #222; margin: 24px auto; max-width: 1100px; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin-bottom: 6px; }
p.note { color: #555; margin: 4px 0 12px; } p.empty { background: #fff6e0; border: 1px solid #f0d9a0; padding: 8px 12px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border-bottom: 1px solid #e4e4e4; padding: 4px 10px; text-align: right; white-space: nowrap; }
th { background: #f5f5f5; } td.text, th.text { text-align: left; }
table.summary th { white-space: normal; vertical-align: bottom; } .scroll { overflow-x: auto; max-width: 100%; }
td.arch { text-align: left; font-family: ui-monospace, monospace; font-size: 12px; white-space: normal; }
.legend span { display: inline-block; margin-right: 18px; } .swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
svg { display: block; margin: 8px 0; font: 12px system-ui, sans-serif; }
svg .grid line { stroke: #eee; } svg .axis line, svg .axis rect { stroke: #888; } svg .axis text { fill: #444; }
svg .label { font-size: 13px; fill: #222; } svg text.target { fill: #444; }
details { margin: 6px 0; } summary { cursor: pointer; }
";

/// The report as one HTML document.
pub fn render_report(runs: &[ReportRun]) -> String {
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(h, "<title>mnas search report</title><style>{CSS}</style></head><body>");
    h.push_str("<h1>mnas search report</h1>");
    if runs.is_empty() {
        h.push_str("<p class=\"empty\">No runs were given to the report.</p></body></html>\n");
        return h;
    }
    let labels: Vec<String> = runs.iter().map(|r| esc(&r.label)).collect();
    let _ = write!(h, "<p class=\"note\">Runs: {}.</p>", labels.join(", "));
    h.push_str(&summary(runs));
    for r in runs.iter().filter(|r| r.trials.is_empty()) {
        let _ = write!(h, "<p class=\"empty\">Run {} has no trials yet.</p>", esc(&r.label));
    }
    h.push_str("<h2>Accuracy vs latency</h2>");
    h.push_str(
        "<p class=\"note\">Every successful trial (hover for details). The line joins each run's Pareto \
         front: no other model of the run is both more accurate and faster. Dashed: the target latency T.</p>",
    );
    h.push_str(&scatter(runs));
    h.push_str("<h2>Latency distribution</h2>");
    h.push_str(&histogram(runs));
    h.push_str("<h2>Reward per controller step</h2>");
    h.push_str(&reward_curve(runs));
    h.push_str("<h2>Pareto fronts</h2>");
    for (i, r) in runs.iter().enumerate() {
        h.push_str(&front_table(i, r));
    }
    h.push_str(&failed_lists(runs));
    h.push_str("</body></html>\n");
    h
}

/// Writes [`render_report`] to `out` through a temporary file in the same directory and a rename,
/// so a reader never sees half a page.
pub fn write_report(runs: &[ReportRun], out: &Path) -> Result<()> {
    let html = render_report(runs);
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "report.html".into());
    let tmp = out.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let fail = |e: std::io::Error| {
        SearchError::Io(std::io::Error::new(e.kind(), format!("cannot write {}: {e}", out.display())))
    };
    std::fs::write(&tmp, html).map_err(fail)?;
    std::fs::rename(&tmp, out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

fn ok_point(t: &Trial) -> Option<(f64, f64)> {
    match (t.status, t.accuracy, t.latency_ms) {
        (TrialStatus::Ok, Some(a), Some(l)) if a.is_finite() && l.is_finite() => Some((a * 100.0, l)),
        _ => None,
    }
}

/// The block list of a canonical arch string (`stem32|b1,b2|head1280|...`), space separated.
pub fn blocks_of(canonical: &str) -> String {
    canonical.split('|').nth(1).map(|b| b.replace(',', " ")).unwrap_or_else(|| canonical.to_string())
}

/// A number with at most 2 decimals and no trailing zeros: 9, 12.5, 18.73.
fn short(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn swatch(i: usize) -> String {
    format!("<span class=\"swatch\" style=\"background:{}\"></span>", color(i))
}

fn summary(runs: &[ReportRun]) -> String {
    let mut s = String::from(
        "<div class=\"scroll\"><table class=\"summary\"><tr><th class=\"text\">run</th><th class=\"text\">strategy</th>\
         <th class=\"text\">constraint</th><th>target T</th><th class=\"text\">status</th><th>steps</th>\
         <th>trials</th><th>ok</th><th>failed</th><th>reused</th><th>best reward</th><th>its accuracy</th>\
         <th>its latency</th><th>mean reward, last quarter</th><th>Pareto models</th></tr>",
    );
    for (i, r) in runs.iter().enumerate() {
        let ok = r.trials.iter().filter(|t| t.status == TrialStatus::Ok).count();
        let failed = r.trials.len() - ok;
        let reused = r.trials.iter().filter(|t| t.reused).count();
        let best = r.trials.iter().filter(|t| ok_point(t).is_some()).max_by(|a, b| a.reward.total_cmp(&b.reward));
        let opt = |v: &Option<String>| v.as_deref().map(esc).unwrap_or_else(|| "–".into());
        let _ = write!(
            s,
            "<tr><td class=\"text\">{}{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td><td>{}</td>\
             <td class=\"text\">{}</td><td>{}</td><td>{}</td><td>{ok}</td><td>{failed}</td><td>{reused}</td>",
            swatch(i),
            esc(&r.label),
            esc(&r.meta.strategy),
            opt(&r.meta.constraint),
            r.meta.target_ms.map(|t| format!("{t:.2} ms")).unwrap_or_else(|| "–".into()),
            opt(&r.meta.status),
            r.meta.steps_done.map(|n| n.to_string()).unwrap_or_else(|| "–".into()),
            r.trials.len(),
        );
        match best {
            Some(b) => {
                let _ = write!(
                    s,
                    "<td>{:.4}</td><td>{:.2}%</td><td>{:.2} ms</td>",
                    b.reward,
                    b.accuracy.unwrap_or(0.0) * 100.0,
                    b.latency_ms.unwrap_or(0.0)
                );
            }
            None => s.push_str("<td>–</td><td>–</td><td>–</td>"),
        }
        let tail = last_quarter_mean(&r.trials).map(|m| format!("{m:.4}")).unwrap_or_else(|| "–".into());
        let _ = write!(s, "<td>{tail}</td><td>{}</td></tr>", pareto_front(&r.trials).len());
    }
    s.push_str("</table></div>");
    let details: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let mut parts = Vec::new();
            if let Some(src) = &r.meta.source {
                parts.push(format!("directory <code>{}</code>", esc(src)));
            }
            if let Some(d) = &r.meta.device {
                parts.push(format!("latency on {}", esc(d)));
            }
            // A loss-scored run's rewards do not follow from the accuracies shown: say so.
            if r.trials.iter().any(Trial::scored_by_loss) {
                parts.push("scored by a proxy loss: the reward multiplies exp(-loss), not the accuracy shown".into());
            }
            (!parts.is_empty()).then(|| format!("{}: {}", esc(&r.label), parts.join(", ")))
        })
        .collect();
    if !details.is_empty() {
        let _ = write!(s, "<p class=\"note\">{}</p>", details.join("<br>"));
    }
    s
}

fn legend(runs: &[ReportRun], what: impl Fn(&ReportRun) -> String) -> String {
    let mut s = String::from("<div class=\"legend\">");
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(s, "<span>{}{} ({})</span>", swatch(i), esc(&r.label), what(r));
    }
    s.push_str("</div>");
    s
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

fn scatter(runs: &[ReportRun]) -> String {
    let points = || runs.iter().flat_map(|r| r.trials.iter().filter_map(ok_point));
    let Some((lat_lo, lat_hi)) = min_max(points().map(|p| p.1)) else {
        return "<p class=\"empty\">No successful trials yet: nothing to plot.</p>".into();
    };
    let Some((acc_lo, acc_hi)) = min_max(points().map(|p| p.0)) else { unreachable!("same points") };
    let targets: Vec<f64> = runs.iter().filter_map(|r| r.meta.target_ms).collect();
    let (x_lo, x_hi) = targets.iter().fold((lat_lo, lat_hi), |(lo, hi), &t| (lo.min(t), hi.max(t)));
    let chart = Chart::new(760.0, 460.0, (x_lo, x_hi), (acc_lo, acc_hi), (false, false));
    let mut s = chart.open("scatter", "Accuracy vs latency", "latency (ms)", "top-1 accuracy (%)");
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(s, "<g class=\"run\" fill=\"{}\" fill-opacity=\"0.55\">", color(i));
        for t in &r.trials {
            let Some((acc, lat)) = ok_point(t) else { continue };
            let (x, y) = chart.point(lat, acc);
            let _ = write!(
                s,
                "<circle class=\"trial\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3.5\"><title>{} step {} #{}: {acc:.2}% at {lat:.3} ms, reward {:.4}{}\n{}</title></circle>",
                esc(&r.label),
                t.step,
                t.index,
                t.reward,
                if t.reused { " (reused)" } else { "" },
                esc(&blocks_of(&t.arch))
            );
        }
        s.push_str("</g>");
    }
    for (i, r) in runs.iter().enumerate() {
        let front = pareto_front(&r.trials);
        if front.is_empty() {
            continue;
        }
        // A staircase: from each front model go right to the next one's latency, then up.
        let data: Vec<(f64, f64)> = front.iter().filter_map(|t| ok_point(t)).collect();
        let mut pts: Vec<(f64, f64)> = Vec::new();
        for (k, &(acc, lat)) in data.iter().enumerate() {
            if k > 0 {
                pts.push(chart.point(lat, data[k - 1].0));
            }
            pts.push(chart.point(lat, acc));
        }
        let list: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = write!(
            s,
            "<polyline class=\"front\" points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
            list.join(" "),
            color(i)
        );
        for t in &front {
            let (acc, lat) = ok_point(t).unwrap_or_default();
            let (x, y) = chart.point(lat, acc);
            let _ = write!(
                s,
                "<rect class=\"front-point\" x=\"{:.1}\" y=\"{:.1}\" width=\"8\" height=\"8\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"/>",
                x - 4.0,
                y - 4.0,
                color(i)
            );
        }
    }
    let mut drawn: Vec<f64> = Vec::new();
    for r in runs {
        let Some(t) = r.meta.target_ms else { continue };
        if drawn.iter().any(|d| (d - t).abs() <= 1e-9 * t.abs().max(1.0)) {
            continue;
        }
        drawn.push(t);
        let x = chart.x.px(t);
        let (top, bottom) = (chart.y.px(chart.y.hi), chart.y.px(chart.y.lo));
        let _ = write!(
            s,
            "<line class=\"target\" x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\" stroke=\"#333\" stroke-width=\"1.5\" stroke-dasharray=\"6 4\"/>\
             <text class=\"target\" x=\"{:.1}\" y=\"{:.1}\">T = {} ms</text>",
            x + 4.0,
            top + 14.0 + 14.0 * (drawn.len() - 1) as f64,
            short(t)
        );
    }
    s.push_str("</svg>");
    s.push_str(&legend(runs, |r| {
        let ok = r.trials.iter().filter(|t| ok_point(t).is_some()).count();
        format!("{ok} plotted")
    }));
    let failed: usize = runs.iter().map(|r| r.trials.iter().filter(|t| ok_point(t).is_none()).count()).sum();
    if failed > 0 {
        let _ = write!(
            s,
            "<p class=\"note failed-count\">{failed} failed trial{} not plotted (listed at the end).</p>",
            if failed == 1 { " is" } else { "s are" }
        );
    }
    s
}

fn histogram(runs: &[ReportRun]) -> String {
    let lat = |r: &ReportRun| -> Vec<f64> { r.trials.iter().filter_map(ok_point).map(|p| p.1).collect() };
    let per_run: Vec<Vec<f64>> = runs.iter().map(lat).collect();
    let Some((lo, hi)) = min_max(per_run.iter().flatten().copied()) else {
        return "<p class=\"empty\">No successful trials yet: no latencies to show.</p>".into();
    };
    let width = svg::nice_step(if hi > lo { hi - lo } else { lo.abs().max(1.0) }, 20);
    let start = (lo / width).floor() * width;
    let bins = (((hi - start) / width).floor() as usize + 1).max(1);
    let mut counts = vec![vec![0u64; bins]; runs.len()];
    for (r, values) in per_run.iter().enumerate() {
        for v in values {
            let b = (((v - start) / width).floor() as usize).min(bins - 1);
            counts[r][b] += 1;
        }
    }
    let top = counts.iter().flatten().copied().max().unwrap_or(1) as f64;
    let chart = Chart::new(760.0, 300.0, (start, start + bins as f64 * width), (0.0, top), (false, true));
    let mut s = chart.open("histogram", "Latency histogram", "latency (ms)", "trials");
    let bin_px = chart.x.px(start + width) - chart.x.px(start);
    let sub = bin_px / runs.len() as f64;
    for (r, row) in counts.iter().enumerate() {
        let _ = write!(s, "<g fill=\"{}\" fill-opacity=\"0.85\">", color(r));
        for (b, &n) in row.iter().enumerate().filter(|(_, &n)| n > 0) {
            let x = chart.x.px(start + b as f64 * width) + r as f64 * sub;
            let (y0, y1) = (chart.y.px(0.0), chart.y.px(n as f64));
            let lo_b = start + b as f64 * width;
            let _ = write!(
                s,
                "<rect class=\"bar\" x=\"{:.1}\" y=\"{y1:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}: {n} trial{} in [{lo_b:.*}, {:.*}) ms</title></rect>",
                x + 0.5,
                (sub - 1.0).max(0.5),
                y0 - y1,
                esc(&runs[r].label),
                if n == 1 { "" } else { "s" },
                svg::decimals(width),
                svg::decimals(width),
                lo_b + width,
            );
        }
        s.push_str("</g>");
    }
    s.push_str("</svg>");
    s.push_str(&legend(runs, |r| {
        let n = r.trials.iter().filter(|t| ok_point(t).is_some()).count();
        format!("{n} latencies")
    }));
    s
}

/// Mean and population standard deviation.
fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

fn reward_curve(runs: &[ReportRun]) -> String {
    // Failed trials count at their stored reward (FAILED_REWARD): that is what the strategy saw.
    let per_run: Vec<Vec<(u64, f64, f64, f64)>> = runs
        .iter()
        .map(|r| {
            let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
            for t in r.trials.iter().filter(|t| t.reward.is_finite()) {
                by_step.entry(t.step).or_default().push(t.reward);
            }
            let mut best = f64::NEG_INFINITY;
            by_step
                .into_iter()
                .map(|(step, v)| {
                    let (m, sd) = mean_std(&v);
                    best = v.iter().copied().fold(best, f64::max);
                    (step, m, sd, best)
                })
                .collect()
        })
        .collect();
    let all = || per_run.iter().flatten();
    let Some((s_lo, s_hi)) = min_max(all().map(|p| p.0 as f64)) else {
        return "<p class=\"empty\">No trials yet: no rewards to show.</p>".into();
    };
    let lows = all().map(|p| p.1 - p.2);
    let highs = all().map(|p| (p.1 + p.2).max(p.3));
    let (Some((y_lo, _)), Some((_, y_hi))) = (min_max(lows), min_max(highs)) else { unreachable!("non-empty") };
    let chart = Chart::new(760.0, 340.0, (s_lo, s_hi), (y_lo, y_hi), (true, false));
    let mut s = chart.open("reward", "Reward per controller step", "controller step", "reward");
    let pts = |v: &mut dyn Iterator<Item = (f64, f64)>| -> String {
        v.map(|(x, y)| {
            let (px, py) = chart.point(x, y);
            format!("{px:.1},{py:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ")
    };
    for (i, steps) in per_run.iter().enumerate().filter(|(_, s)| !s.is_empty()) {
        let c = color(i);
        let upper = pts(&mut steps.iter().map(|p| (p.0 as f64, p.1 + p.2)));
        let lower = pts(&mut steps.iter().rev().map(|p| (p.0 as f64, p.1 - p.2)));
        let _ = write!(
            s,
            "<polygon class=\"band\" points=\"{upper} {lower}\" fill=\"{c}\" fill-opacity=\"0.18\" stroke=\"none\"/>"
        );
        let mean = pts(&mut steps.iter().map(|p| (p.0 as f64, p.1)));
        let _ =
            write!(s, "<polyline class=\"mean\" points=\"{mean}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"2\"/>");
        let best = pts(&mut steps.iter().map(|p| (p.0 as f64, p.3)));
        let _ = write!(
            s,
            "<polyline class=\"best\" points=\"{best}\" fill=\"none\" stroke=\"{c}\" stroke-width=\"1.2\" stroke-dasharray=\"4 3\"/>"
        );
        for &(step, m, sd, _) in steps {
            let (x, y) = chart.point(step as f64, m);
            let _ = write!(
                s,
                "<circle class=\"step-mean\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{c}\"><title>{} step {step}: mean {m:.4} ± {sd:.4}</title></circle>",
                esc(&runs[i].label)
            );
        }
    }
    s.push_str("</svg>");
    s.push_str(&legend(runs, |r| {
        format!("{} steps", r.trials.iter().map(|t| t.step).collect::<std::collections::BTreeSet<_>>().len())
    }));
    s.push_str(
        "<p class=\"note\">Solid: mean reward of the step's trials (failed trials at their reward, 0); band: ± one \
         standard deviation; dashed: the best reward so far.</p>",
    );
    s
}

fn front_table(i: usize, r: &ReportRun) -> String {
    let mut s = String::new();
    let _ = write!(s, "<h3>{}{}</h3>", swatch(i), esc(&r.label));
    let front = pareto_front(&r.trials);
    if front.is_empty() {
        s.push_str("<p class=\"empty\">No successful trials: no Pareto front yet.</p>");
        return s;
    }
    s.push_str(
        "<table class=\"front\"><tr><th>step</th><th>index</th><th>accuracy</th><th>latency</th><th>reward</th>\
         <th>params</th><th>MACs</th><th class=\"text\">blocks</th></tr>",
    );
    for t in front {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{:.2}%</td><td>{:.3} ms</td><td>{:.4}</td><td>{}</td><td>{}</td><td class=\"arch\">{}</td></tr>",
            t.step,
            t.index,
            t.accuracy.unwrap_or(0.0) * 100.0,
            t.latency_ms.unwrap_or(0.0),
            t.reward,
            thousands(t.params),
            thousands(t.macs),
            esc(&blocks_of(&t.arch))
        );
    }
    s.push_str("</table>");
    s
}

fn failed_lists(runs: &[ReportRun]) -> String {
    let mut s = String::new();
    for r in runs {
        let failed: Vec<&Trial> = r.trials.iter().filter(|t| ok_point(t).is_none()).collect();
        if failed.is_empty() {
            continue;
        }
        if s.is_empty() {
            s.push_str("<h2>Failed trials</h2>");
        }
        let _ = write!(
            s,
            "<details><summary>{}: {} failed trial{}</summary><table class=\"failed\"><tr><th>step</th><th>index</th>\
             <th class=\"text\">reason</th><th class=\"text\">blocks</th></tr>",
            esc(&r.label),
            failed.len(),
            if failed.len() == 1 { "" } else { "s" }
        );
        for t in failed {
            let _ = write!(
                s,
                "<tr><td>{}</td><td>{}</td><td class=\"text\">{}</td><td class=\"arch\">{}</td></tr>",
                t.step,
                t.index,
                esc(t.reason.as_deref().unwrap_or("no reason recorded")),
                esc(&blocks_of(&t.arch))
            );
        }
        s.push_str("</table></details>");
    }
    s
}

#[cfg(test)]
mod tests;
