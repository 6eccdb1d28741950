//! External engines: latency measured by a command the user gives (`--engine cmd:'TEMPLATE'`).
//!
//! The network is exported to ONNX (random weights; they do not change latency) in a fresh temp
//! directory, `{model}` in the template becomes that file's shell-quoted path, and the command
//! runs under `sh -c` in its own process group, killed as a group when it exceeds the timeout.
//! Its output is searched for the average latency in the formats of the common benchmark tools
//! (see [`parse_latency`]). The measurement's engine is `cmd:<template>`, so figures from two
//! commands never share a store key.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mnas_export::{write_onnx, Batch, ExportError, ExportOptions};
use mnas_model::backend::Cpu;
use mnas_model::{MnasNet, ModelError};
use mnas_space::{Arch, SpaceError};
use thiserror::Error;

use crate::fingerprint::Fingerprint;
use crate::measure::{MeasureOptions, Measurement};
use crate::stats::Stats;
use crate::store::Key;
use mnas_space::timestamp::utc_now;

/// What `--engine` values start with.
pub const PREFIX: &str = "cmd:";
/// `engine_version` of external measurements: the template itself identifies the engine.
pub const EXTERNAL_VERSION: &str = "external";
/// Bytes of each output stream kept (the end of it): enough for any benchmark's summary.
const KEEP_BYTES: usize = 256 * 1024;

/// The formats [`parse_latency`] accepts, for `--help`.
pub const ACCEPTED_FORMATS: &str = "\
- onnxruntime_perf_test: `Average inference time cost: X ms` (newer builds: `... cost total: X ms`)
- TFLite benchmark_model: `Inference timings in us: ... Inference (avg): X`, else the last `count=... avg=X` line \
(microseconds)
- generic: `latency_ms: X`, else the last `X ms` in the output
The last match wins, so a tool that reports warm-up and timed runs is read at its final figure.";

/// Why an external measurement failed.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("--engine must look like cmd:'COMMAND {{model}}', got `{0}`")]
    Spec(String),
    #[error("cannot measure: {0}")]
    Arch(#[from] SpaceError),
    #[error("cannot build the model: {0}")]
    Model(#[from] ModelError),
    #[error("cannot export the model: {0}")]
    Export(#[from] ExportError),
    #[error("cannot prepare a temp directory {path}: {source}")]
    TempDir { path: PathBuf, source: std::io::Error },
    #[error("cannot start `sh -c {command}`: {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("the engine command failed ({status}); output ends: {tail}")]
    Failed { status: String, tail: String },
    #[error("the engine command did not finish within {secs} s and was killed; output ends: {tail}")]
    TimedOut { secs: u64, tail: String },
    #[error(
        "no latency found in the engine command's output (formats: see `mnas latency --help`); output ends: {tail}"
    )]
    NoLatency { tail: String },
}

/// A user's engine command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCommand {
    /// The template after `cmd:`.
    pub template: String,
    pub timeout: Duration,
}

/// What a finished command printed.
#[derive(Debug, Clone)]
pub struct CommandOutput {
    pub status: ExitStatus,
    /// stdout, then stderr (the end of each, [`KEEP_BYTES`] at most).
    pub text: String,
}

impl EngineCommand {
    /// Parses `cmd:TEMPLATE`; the template must use `{model}`.
    pub fn parse(spec: &str, timeout: Duration) -> Result<EngineCommand, EngineError> {
        let template = spec.strip_prefix(PREFIX).map(str::trim).filter(|t| t.contains("{model}"));
        match template {
            Some(t) => Ok(EngineCommand { template: t.to_string(), timeout }),
            None => Err(EngineError::Spec(spec.to_string())),
        }
    }

    /// `cmd:<template>`: the engine every measurement of this command carries.
    pub fn engine(&self) -> String {
        format!("{PREFIX}{}", self.template)
    }

    /// This machine, with the command as its engine. Cores are empty: the command, not mnas,
    /// decides where it runs.
    pub fn fingerprint(&self, threads: usize) -> Fingerprint {
        let mut fp = Fingerprint::current(threads, Vec::new());
        fp.engine = self.engine();
        fp.engine_version = EXTERNAL_VERSION.into();
        fp
    }

    /// The store key a measurement of `arch` with `opts` through this command gets.
    pub fn key(&self, arch: &Arch, opts: &MeasureOptions) -> Key {
        Key::on(&self.fingerprint(opts.threads), arch, opts)
    }

    /// Exports `arch`, runs the command on it, and reads the latency it reports.
    pub fn measure(&self, arch: &Arch, opts: &MeasureOptions) -> Result<Measurement, EngineError> {
        arch.validate()?;
        let dir = TempDir::new()?;
        let model = dir.path.join("model.onnx");
        let device = Default::default();
        let net = MnasNet::<Cpu>::seeded(arch, &device, opts.seed)?;
        let batch = u32::try_from(opts.batch).unwrap_or(u32::MAX);
        write_onnx(&net, &ExportOptions { batch: Batch::Fixed(batch), resolution: None }, &model)?;
        drop(net);
        let command = render(&self.template, &model, arch, opts);
        tracing::info!(%command, "running the engine command");
        let out = run_command(&command, self.timeout)?;
        if !out.status.success() {
            return Err(EngineError::Failed { status: out.status.to_string(), tail: tail(&out.text) });
        }
        let (ms, format) = parse_latency(&out.text).ok_or_else(|| EngineError::NoLatency { tail: tail(&out.text) })?;
        tracing::info!(ms, format, "engine reported");
        Ok(Measurement {
            arch: arch.canonical(),
            name: arch.name.clone(),
            resolution: arch.resolution,
            batch: opts.batch,
            threads: opts.threads,
            // One reported figure: no spread is known, so every statistic is that figure.
            stats: Stats { median_ms: ms, p10_ms: ms, p90_ms: ms, mean_ms: ms, min_ms: ms, cv: 0.0, runs: 1 },
            warmup: 0,
            attempts: 1,
            stable: true,
            fingerprint: self.fingerprint(opts.threads),
            measured_at: utc_now(),
            per_layer: None,
            pace_ms: None,
        })
    }
}

/// Single-quotes `s` for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The template with `{model}` (shell-quoted path), `{resolution}`, `{batch}`, `{threads}`,
/// `{runs}` and `{warmup}` filled in.
pub fn render(template: &str, model: &Path, arch: &Arch, opts: &MeasureOptions) -> String {
    template
        .replace("{model}", &shell_quote(&model.to_string_lossy()))
        .replace("{resolution}", &arch.resolution.to_string())
        .replace("{batch}", &opts.batch.to_string())
        .replace("{threads}", &opts.threads.to_string())
        .replace("{runs}", &opts.runs.to_string())
        .replace("{warmup}", &opts.warmup.to_string())
}

/// Runs `sh -c command` with no stdin, killing its whole process group after `timeout`.
pub fn run_command(command: &str, timeout: Duration) -> Result<CommandOutput, EngineError> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // Its own process group, so that a timeout kills what the shell started too.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|source| EngineError::Spawn { command: command.into(), source })?;
    let readers =
        [child.stdout.take().map(|s| collect(Box::new(s))), child.stderr.take().map(|s| collect(Box::new(s)))];
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(EngineError::Spawn { command: command.into(), source: e }),
        }
    };
    if status.is_none() {
        kill_group(&mut child);
    }
    // A background process that outlives the shell may hold the pipes open: wait a little, then
    // keep what was read.
    let grace = Instant::now() + Duration::from_secs(2);
    let text: Vec<String> = readers
        .into_iter()
        .map(|r| r.and_then(|rx| rx.recv_timeout(grace.saturating_duration_since(Instant::now())).ok()))
        .map(|bytes| String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
        .collect();
    let text = text.join("\n");
    match status {
        Some(status) => Ok(CommandOutput { status, text }),
        None => Err(EngineError::TimedOut { secs: timeout.as_secs(), tail: tail(&text) }),
    }
}

fn kill_group(child: &mut std::process::Child) {
    #[cfg(unix)]
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the process group we created for the child.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Reads a stream to its end on a thread, keeping the last [`KEEP_BYTES`].
fn collect(mut stream: Box<dyn Read + Send>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * KEEP_BYTES {
                kept.drain(..kept.len() - KEEP_BYTES);
            }
        }
        if kept.len() > KEEP_BYTES {
            kept.drain(..kept.len() - KEEP_BYTES);
        }
        let _ = tx.send(kept);
    });
    rx
}

/// The last lines of `text`, on one line (`|` between lines), for error messages.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    if lines.is_empty() {
        return "(no output)".into();
    }
    let last = &lines[lines.len().saturating_sub(8)..];
    let joined = last.join(" | ");
    let chars: Vec<char> = joined.chars().collect();
    if chars.len() > 600 {
        format!("...{}", chars[chars.len() - 600..].iter().collect::<String>())
    } else {
        joined
    }
}

/// The number at the start of `s` (after spaces), and what follows it.
fn number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim_start();
    let end = s
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || ((c == 'e' || c == 'E') && i > 0) || (c == '-' && i == 0)))
        .map_or(s.len(), |(i, _)| i);
    let v: f64 = s[..end].parse().ok()?;
    (v.is_finite() && v > 0.0).then_some((v, &s[end..]))
}

/// The value after the last `key` in `text`.
fn after_last<'a>(text: &'a str, key: &str) -> Option<(f64, &'a str)> {
    text.rmatch_indices(key).find_map(|(i, _)| number(&text[i + key.len()..]))
}

/// Milliseconds from a unit word (`ms` when absent).
fn to_ms(v: f64, rest: &str) -> f64 {
    let unit = rest.trim_start();
    if unit.starts_with("us") || unit.starts_with("µs") {
        v / 1e3
    } else if unit.starts_with("ns") {
        v / 1e6
    } else if unit.starts_with("ms") {
        v
    } else if unit.starts_with('s') {
        v * 1e3
    } else {
        v
    }
}

/// The average latency (ms) a benchmark printed, and which format it was found in.
pub fn parse_latency(text: &str) -> Option<(f64, &'static str)> {
    // Newer onnxruntime_perf_test builds say "Average inference time cost total: X ms".
    let ort = text.rmatch_indices("Average inference time cost").find_map(|(i, key)| {
        let rest = text[i + key.len()..].trim_start();
        let rest = rest.strip_prefix("total").unwrap_or(rest).trim_start().strip_prefix(':')?;
        number(rest)
    });
    if let Some((v, rest)) = ort {
        return Some((to_ms(v, rest), "onnxruntime_perf_test"));
    }
    if let Some(line) = text.lines().rev().find(|l| l.contains("Inference timings in us")) {
        if let Some((v, _)) = after_last(line, "Inference (avg):").or_else(|| after_last(line, "avg=")) {
            return Some((v / 1e3, "benchmark_model"));
        }
    }
    if let Some(line) = text.lines().rev().find(|l| l.contains("count=") && l.contains("avg=")) {
        if let Some((v, _)) = after_last(line, "avg=") {
            return Some((v / 1e3, "benchmark_model"));
        }
    }
    let last_key = ["latency_ms:", "latency_ms="].into_iter().filter_map(|k| text.rfind(k).map(|i| (i, k))).max();
    if let Some((i, key)) = last_key {
        if let Some((v, _)) = number(&text[i + key.len()..]) {
            return Some((v, "latency_ms"));
        }
    }
    // Generic: the last number directly followed by the word `ms`.
    text.rmatch_indices("ms").find_map(|(i, _)| {
        let word_ends = text[i + 2..].chars().next().is_none_or(|c| !c.is_alphanumeric());
        let before = text[..i].trim_end();
        let start = before.rfind(|c: char| !(c.is_ascii_digit() || c == '.')).map_or(0, |j| j + 1);
        let digits = &before[start..];
        let v: f64 = digits.parse().ok()?;
        (word_ends && !digits.is_empty() && v.is_finite() && v > 0.0).then_some((v, "ms"))
    })
}

/// A directory removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Result<TempDir, EngineError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "mnas-engine-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(|source| EngineError::TempDir { path: path.clone(), source })?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::debug!(path = %self.path.display(), "cannot remove temp dir: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_onnxruntime_perf_test() {
        let out = "Session creation time cost: 0.05 s\nTotal inference time cost: 1.2 s\n\
                   Total inference requests: 100\nAverage inference time cost: 12.345 ms\n\
                   Total inference run time: 1.25 s\n";
        assert_eq!(parse_latency(out), Some((12.345, "onnxruntime_perf_test")));
        let newer = "First inference time cost: 196 ms\nAverage inference time cost total: 98.961997 ms\n";
        assert_eq!(parse_latency(newer), Some((98.961997, "onnxruntime_perf_test")));
    }

    #[test]
    fn parses_tflite_benchmark_model() {
        let out = "Running benchmark for at least 1 iterations and at least 0.5 seconds\n\
                   count=11 first=50421 curr=44656 min=44510 max=50421 avg=45196 std=1665\n\n\
                   Running benchmark for at least 50 iterations and at least 1 seconds\n\
                   count=50 first=44780 curr=44574 min=44318 max=45423 avg=44681.2 std=244\n\n\
                   Inference timings in us: Init: 18342, First inference: 50421, Warmup (avg): 45196, \
                   Inference (avg): 44681.2\n";
        let (ms, format) = parse_latency(out).unwrap();
        assert!((ms - 44.6812).abs() < 1e-9 && format == "benchmark_model", "{ms} {format}");
        // Without the summary line, the last count line (the timed runs, not the warm-up) counts.
        let counts_only = out.split("\n\nInference").next().unwrap();
        assert!((parse_latency(counts_only).unwrap().0 - 44.6812).abs() < 1e-9);
        let old = "Inference timings in us: Init: 1, no stats avg=2500 std=3\n";
        assert_eq!(parse_latency(old), Some((2.5, "benchmark_model")));
    }

    #[test]
    fn parses_generic_output() {
        assert_eq!(parse_latency("warming up\nlatency_ms: 3.25\n"), Some((3.25, "latency_ms")));
        assert_eq!(parse_latency("latency_ms: 9\nlatency_ms=4.5\n"), Some((4.5, "latency_ms")));
        assert_eq!(parse_latency("first 10 ms then 7.5ms\n"), Some((7.5, "ms")));
        for nothing in ["", "done\n", "took msec", "latency_ms: nan", "0 ms", "items 12"] {
            assert_eq!(parse_latency(nothing), None, "{nothing:?}");
        }
    }

    #[test]
    fn renders_templates_with_quoted_paths() {
        let arch = mnas_space::lookup("mnasnet-small").unwrap();
        let opts = MeasureOptions { threads: 2, runs: 7, ..Default::default() };
        let cmd = render(
            "bench {model} -r {resolution} -t {threads} -n {runs} ${HOME}",
            Path::new("/t/it's.onnx"),
            &arch,
            &opts,
        );
        assert_eq!(cmd, r"bench '/t/it'\''s.onnx' -r 224 -t 2 -n 7 ${HOME}");
        assert!(matches!(EngineCommand::parse("cmd:bench", Duration::ZERO), Err(EngineError::Spec(_))));
        assert!(matches!(EngineCommand::parse("bench {model}", Duration::ZERO), Err(EngineError::Spec(_))));
        let e = EngineCommand::parse("cmd: bench {model} ", Duration::ZERO).unwrap();
        assert_eq!(e.engine(), "cmd:bench {model}");
    }

    #[test]
    fn commands_report_status_output_and_timeouts() {
        let out = run_command("echo out; echo err >&2; exit 3", Duration::from_secs(10)).unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert!(out.text.contains("out") && out.text.contains("err"), "{}", out.text);
        let start = Instant::now();
        // The shell's child (sleep) must die with it, or the pipes would stay open.
        let e = run_command("echo started; sleep 30", Duration::from_millis(300)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
        assert!(matches!(&e, EngineError::TimedOut { tail, .. } if tail.contains("started")), "{e}");
    }

    #[test]
    fn different_commands_never_share_a_key() {
        let arch = mnas_space::lookup("mnasnet-small").unwrap();
        let opts = MeasureOptions::default();
        let a = EngineCommand::parse("cmd:a {model}", Duration::ZERO).unwrap();
        let b = EngineCommand::parse("cmd:b {model}", Duration::ZERO).unwrap();
        assert_ne!(a.key(&arch, &opts), b.key(&arch, &opts));
        assert_ne!(a.key(&arch, &opts).fingerprint, crate::cached::key_for(&arch, &opts).fingerprint);
    }
}
