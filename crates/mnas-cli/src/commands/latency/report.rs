//! What the latency commands share: where the store lives by default, and how a measurement is
//! printed.

use std::path::PathBuf;

use mnas_latency::{MeasureOptions, Measurement};

use crate::table::{render, thousands};

/// `$XDG_CACHE_HOME/mnas/latency.sqlite`, else `$HOME/.cache/mnas/latency.sqlite`.
pub fn default_store() -> Option<PathBuf> {
    let nonempty = |v: &str| std::env::var_os(v).filter(|s| !s.is_empty()).map(PathBuf::from);
    let cache = nonempty("XDG_CACHE_HOME").or_else(|| nonempty("HOME").map(|h| h.join(".cache")))?;
    Some(cache.join("mnas").join("latency.sqlite"))
}

pub(crate) fn print_report(m: &Measurement, cached: bool, store: Option<&str>, opts: &MeasureOptions) {
    let name = m.name.as_deref().unwrap_or("custom arch");
    let threads = if m.threads == 1 { "1 thread".to_string() } else { format!("{} threads", m.threads) };
    println!(
        "{name} at {r}x{r}, batch {}, {threads}: median {:.2} ms (p10 {:.2}, p90 {:.2}, CV {:.3}){}",
        m.batch,
        m.stats.median_ms,
        m.stats.p10_ms,
        m.stats.p90_ms,
        m.stats.cv,
        if cached { " (cached)" } else { "" },
        r = m.resolution,
    );
    let attempts = if m.attempts == 1 { String::new() } else { format!(", {} attempts", m.attempts) };
    let pace = m.pace_ms.map_or(String::new(), |p| format!("; pace {p:.3} ms"));
    if m.stable {
        println!(
            "runs: {} timed after {} warm-up{attempts}; min {:.2} ms, mean {:.2} ms{pace}",
            m.stats.runs, m.warmup, m.stats.min_ms, m.stats.mean_ms
        );
    } else {
        println!(
            "runs: {} timed after {} warm-up{attempts}; min {:.2} ms, mean {:.2} ms{pace}; UNSTABLE: CV {:.3} stayed \
             above {:.3} (a busy machine?); the median is the best estimate",
            m.stats.runs, m.warmup, m.stats.min_ms, m.stats.mean_ms, m.stats.cv, opts.max_cv
        );
    }
    println!("device: {}", m.fingerprint.summary());
    println!("fingerprint: {}, measured {}", m.fingerprint.key(), m.measured_at);
    match store {
        Some(path) if cached => println!("store: {path} (cached; --refresh measures again)"),
        Some(path) => println!("store: {path} (stored)"),
        None => println!("store: not used (--no-store)"),
    }
    if let Some(layers) = &m.per_layer {
        let total: f64 = layers.iter().map(|l| l.median_ms).sum();
        let rows: Vec<Vec<String>> = layers
            .iter()
            .map(|l| {
                let gmacs = if l.median_ms > 0.0 { l.macs as f64 / (l.median_ms * 1e6) } else { 0.0 };
                vec![
                    l.name.clone(),
                    l.description.clone(),
                    format!("{:.3}", l.median_ms),
                    format!("{:.1}%", 100.0 * l.median_ms / total.max(f64::MIN_POSITIVE)),
                    thousands(l.macs),
                    format!("{gmacs:.1}"),
                ]
            })
            .collect();
        println!();
        print!("{}", render(&["layer", "op", "ms", "share", "MACs", "GMAC/s"], &rows));
        println!("sum of layer medians: {total:.2} ms");
    }
}
