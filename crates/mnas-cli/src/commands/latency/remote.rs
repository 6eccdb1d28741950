//! `mnas latency --device` and `--engine`: latency measured somewhere other than mnas's own engine
//! in this process — on `mnas agent`s over TCP, or by an external benchmark command.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget};
use mnas_latency::broker_devices::OnBrokerDevices;
use mnas_latency::engine::{EngineCommand, ACCEPTED_FORMATS};
use mnas_latency::pool::{key_on, AgentPool, PoolOptions};
use mnas_latency::LatencySource;
use mnas_latency::{MeasureOptions, Measurement, OrtEngine, Store};
use mnas_space::Arch;

use super::report::{default_store, print_report};
use crate::commands::agent::{token, TOKEN_ENV};

/// Default limit on an external command's run.
const ENGINE_TIMEOUT: Duration = Duration::from_secs(600);

/// Where to measure, when not in this process (flattened into `mnas latency`'s arguments).
#[derive(Args, Debug, Default, Clone)]
pub struct ElsewhereArgs {
    /// Measure on `mnas agent`s instead of here: tcp://HOST:PORT, comma-separated for a pool
    /// (archs go to idle agents; a dead agent's work goes to another). Results are stored under
    /// the agent's device fingerprint.
    #[arg(long, value_delimiter = ',', value_name = "tcp://HOST:PORT", conflicts_with = "engine")]
    pub device: Vec<String>,
    /// The agents' token [default: $MNAS_AGENT_TOKEN, which keeps it out of `ps`].
    #[arg(long, requires = "device")]
    pub token: Option<String>,
    /// The broker of `--device broker:CLASS` (or MNAS_BROKER_URL).
    #[arg(long, env = "MNAS_BROKER_URL", hide_env_values = true)]
    pub broker: Option<String>,
    /// Measure with ONNX Runtime in this process (`ort`), or with an external command:
    /// cmd:'TEMPLATE' ({model} is the exported ONNX file).
    #[arg(long, value_name = "ort|cmd:TEMPLATE", long_help = engine_help())]
    pub engine: Option<String>,
    /// libonnxruntime.so for --engine ort [default: $MNAS_ORT_LIB, else the onnxruntime wheel of
    /// $VIRTUAL_ENV or ./.venv].
    #[arg(long, value_name = "PATH", env = "MNAS_ORT_LIB")]
    pub ort_lib: Option<PathBuf>,
    /// Seconds to wait for a remote measurement [default: 30 + 1 per image forward] or for the
    /// --engine command [default: 600]; on timeout the command is killed.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
}

/// The long help of `--engine`, with the output formats it reads.
fn engine_help() -> String {
    format!(
        "Measure with another engine than mnas's own.\n\n\
         ort: ONNX Runtime in this process, on mnas's ONNX export of the model (built in memory), pinned \
         like the built-in engine (1 intra-op thread per --threads), with the same statistics and store; the \
         fingerprint names the ORT version. The library is libonnxruntime.so from --ort-lib, $MNAS_ORT_LIB, \
         or the `onnxruntime` pip wheel of $VIRTUAL_ENV or ./.venv (onnxruntime/capi/libonnxruntime.so.1.*); \
         ONNX Runtime 1.17 or newer.\n\n\
         cmd:'TEMPLATE': an external command.\n\n\
         The model is exported to ONNX (random weights, BN folded) in a temp directory and the template runs \
         with `sh -c` after substituting {{model}} (the file's path, shell-quoted), {{resolution}}, {{batch}}, \
         {{threads}}, {{runs}} and {{warmup}}. Example:\n  \
         --engine \"cmd:python3 bench/reference/ort_latency.py {{model}} --runs {{runs}}\"\n\n\
         The command must exit 0 and report the average latency on stdout or stderr in one of:\n{ACCEPTED_FORMATS}\n\n\
         Results are stored under the engine `cmd:<template>`, so two commands never share figures. The \
         host's CPU is recorded, but a command that runs elsewhere (adb shell ...) is identified by its \
         template only. No spread is known: p10 = median = p90 = the reported figure."
    )
}

impl ElsewhereArgs {
    /// Whether the measurement happens elsewhere (then [`run`] handles it): agents or a command.
    pub fn is_set(&self) -> bool {
        !self.device.is_empty() || self.engine.as_deref().is_some_and(|e| e != ORT)
    }

    /// ONNX Runtime in this process, when `--engine ort` asks for it.
    pub fn ort(&self) -> Result<Option<&'static OrtEngine>> {
        match self.engine.as_deref() {
            Some(ORT) => Ok(Some(OrtEngine::load(self.ort_lib.as_deref())?)),
            _ => Ok(None),
        }
    }
}

/// The `--engine` value that selects ONNX Runtime in process.
pub const ORT: &str = "ort";

/// How `mnas latency` asked for the store.
pub struct StoreArgs {
    pub store: Option<PathBuf>,
    pub no_store: bool,
    pub refresh: bool,
    pub json: bool,
}

/// Measures `arch` on the agents or with the engine command, through the store.
pub fn run(args: &ElsewhereArgs, arch: &Arch, opts: &MeasureOptions, store_args: &StoreArgs) -> Result<()> {
    if args.timeout == Some(0) {
        bail!("--timeout must be at least 1 second");
    }
    let store = if store_args.no_store {
        None
    } else {
        let Some(path) = store_args.store.clone().or_else(default_store) else {
            bail!("no cache directory (neither XDG_CACHE_HOME nor HOME is set): pass --store PATH or --no-store");
        };
        Some(Store::open(&path)?)
    };
    let store_path = store.as_ref().map(|s| s.path().display().to_string());
    if let Some(spec) = &args.engine {
        if opts.per_layer {
            bail!("--per-layer times mnas's own engine; it is not available with --engine");
        }
        let timeout = args.timeout.map_or(ENGINE_TIMEOUT, Duration::from_secs);
        let command = EngineCommand::parse(spec, timeout)?;
        let cached = match &store {
            Some(s) if !store_args.refresh => s.get(&command.key(arch, opts))?,
            _ => None,
        };
        let (m, was_cached) = match cached {
            Some(m) => (m, true),
            None => {
                let spinner = spinner("running the engine command");
                let m = command.measure(arch, opts);
                spinner.finish_and_clear();
                let m = m?;
                if let Some(s) = &store {
                    s.put(&m)?;
                }
                (m, false)
            }
        };
        return report(&m, was_cached, store_path.as_deref(), None, opts, store_args.json);
    }

    if let Some(class) = args.device.first().and_then(|d| d.strip_prefix("broker:")) {
        let Some(url) = &args.broker else {
            bail!("--device broker:{class} needs the broker: pass --broker URL or set MNAS_BROKER_URL");
        };
        let mut source = OnBrokerDevices::new(url, class, opts.clone())?;
        if let Some(t) = args.timeout {
            source.timeout = Duration::from_secs(t);
        }
        let spinner = spinner("waiting for an agent of the class");
        let m = source.latency(arch);
        spinner.finish_and_clear();
        let m = m.map_err(|e| anyhow!("device class {class}: {e}"))?;
        if let Some(s) = &store {
            s.put(&m)?;
        }
        return report(&m, false, store_path.as_deref(), None, opts, store_args.json);
    }
    let Some(token) = token(args.token.clone()) else {
        bail!("--device needs the agents' token: pass --token T or set {TOKEN_ENV}");
    };
    let options = PoolOptions { request_timeout: args.timeout.map(Duration::from_secs), ..PoolOptions::default() };
    let pool = AgentPool::new(args.device.clone(), token, options)?;
    let cached = match &store {
        Some(s) if !store_args.refresh && !opts.per_layer => lookup(s, &pool, arch, opts)?,
        _ => None,
    };
    let (m, agent, was_cached) = match cached {
        Some((m, agent)) => (m, agent, true),
        None => {
            let spinner = spinner("measuring on the agent");
            let remote = pool.measure_remote(arch, opts);
            spinner.finish_and_clear();
            let remote = remote?;
            if let Some(s) = &store {
                s.put(&remote.measurement)?;
            }
            (remote.measurement, remote.agent, false)
        }
    };
    report(&m, was_cached, store_path.as_deref(), Some(&agent), opts, store_args.json)
}

/// A stored measurement under the device of any agent that answers a ping, with enough runs and
/// a spread within the accepted one (an unstable result is measured again, never served). Its
/// pace is not compared with the agent's pace now: that would take a round trip per lookup.
fn lookup(
    store: &Store,
    pool: &AgentPool,
    arch: &Arch,
    opts: &MeasureOptions,
) -> Result<Option<(Measurement, String)>> {
    for (agent, fingerprint) in pool.fingerprints() {
        match fingerprint {
            Ok(fp) => {
                if let Some(m) = store.get(&key_on(&fp, arch, opts))?.filter(|m| m.stats.runs >= opts.runs && m.stable)
                {
                    tracing::info!(%agent, "latency from the store");
                    return Ok(Some((m, agent)));
                }
            }
            // The measurement below reports it (or another agent serves).
            Err(e) => tracing::info!(%agent, "no fingerprint: {e}"),
        }
    }
    Ok(None)
}

/// A spinner on stderr when it is a terminal (remote and external runs report no progress).
fn spinner(message: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn report(
    m: &Measurement,
    cached: bool,
    store: Option<&str>,
    agent: Option<&str>,
    opts: &MeasureOptions,
    json: bool,
) -> Result<()> {
    if json {
        let out = serde_json::json!({
            "measurement": m,
            "fingerprint_key": m.fingerprint.key(),
            "cached": cached,
            "store": store,
            "agent": agent,
        });
        println!("{}", serde_json::to_string_pretty(&out).map_err(|e| anyhow!(e))?);
        return Ok(());
    }
    match agent {
        Some(agent) => {
            print_report(m, cached, store, opts);
            println!("agent: {agent}");
        }
        None => print_engine_report(m, cached, store),
    }
    Ok(())
}

/// An external command reports one figure: no spread, no runs of ours.
fn print_engine_report(m: &Measurement, cached: bool, store: Option<&str>) {
    let name = m.name.as_deref().unwrap_or("custom arch");
    println!(
        "{name} at {r}x{r}, batch {}: {:.3} ms as reported by the engine command{}",
        m.batch,
        m.stats.median_ms,
        if cached { " (cached)" } else { "" },
        r = m.resolution
    );
    println!("engine: {}", m.fingerprint.engine);
    // The command, not mnas, chose cores and threads: only the host itself is known.
    let fp = &m.fingerprint;
    println!("host: {} ({}, {}), mnas {}, {}/{}", fp.cpu_model, fp.cpu_id, fp.simd, fp.mnas_version, fp.os, fp.arch);
    println!("fingerprint: {}, measured {}", m.fingerprint.key(), m.measured_at);
    match store {
        Some(path) if cached => println!("store: {path} (cached; --refresh measures again)"),
        Some(path) => println!("store: {path} (stored)"),
        None => println!("store: not used (--no-store)"),
    }
}
