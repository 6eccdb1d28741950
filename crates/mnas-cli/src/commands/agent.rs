//! `mnas agent`: serve latency measurements of this machine to `mnas latency --device` elsewhere.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use std::sync::atomic::{AtomicBool, Ordering};

use mnas_latency::agent::{Agent, AgentConfig, DEFAULT_LISTEN};
use mnas_latency::broker_devices::{DeviceAgent, DeviceObserver};
use mnas_latency::{BuiltIn, Fingerprint, LocalEngine, Measurement, OrtEngine};

/// The environment variable the token may come from (keeps it out of `ps` and shell history).
pub const TOKEN_ENV: &str = "MNAS_AGENT_TOKEN";

/// The long help of `mnas agent`.
pub const LONG_ABOUT: &str = "Serve latency measurements of this machine to `mnas latency --device` elsewhere.

Run it on the device to measure on (a phone's Linux shell, a board, a server), then from the \
machine that searches:

  MNAS_AGENT_TOKEN=s3cret mnas agent --listen 0.0.0.0:7878            # on the device
  MNAS_AGENT_TOKEN=s3cret mnas latency --arch mnasnet-a1 --device tcp://DEVICE:7878

Clients send architecture descriptions (data, never code) and measurement options; the agent \
builds the network, measures it exactly as `mnas latency` does locally (pinned cores, one \
measurement at a time) and answers with the measurement and its device fingerprint. Every \
request must carry the token; a wrong token, a malformed request or a network too large for \
--max-memory-mb gets an error answer, and the agent keeps serving.

The agent listens on loopback (127.0.0.1:7878) unless --listen names another address; the \
traffic is not encrypted, so on an untrusted network tunnel it (ssh -L, adb forward). It prints \
`mnas agent listening on ADDR` once bound (--listen 127.0.0.1:0 picks a free port).

On a broker instead (devices behind NAT connect out; no token, the broker's password guards it):

  MNAS_BROKER_URL=redis://:PASSWORD@broker:6379 mnas agent --broker --device-class pixel7   # on each device
  mnas search --latency-device broker:pixel7 --broker-url ...                              # any agent of the class answers

Requests go to the class's stream (mnas:devices:<class>); each is measured by one agent, whose \
fingerprint the measurement carries. --engine ort measures with ONNX Runtime instead.";

/// Arguments of `mnas agent`.
#[derive(Args, Debug)]
pub struct AgentArgs {
    /// Address to listen on: HOST:PORT, or just PORT for 127.0.0.1:PORT.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Shared secret clients must send [default: $MNAS_AGENT_TOKEN]; the agent refuses to start without one.
    #[arg(long)]
    pub token: Option<String>,
    /// Seconds a client may take to send a request (and the agent to send an answer).
    #[arg(long, default_value_t = 30)]
    pub io_timeout: u64,
    /// Largest network (weights plus activations, float32) the agent agrees to build, in MiB.
    #[arg(long, default_value_t = 4096)]
    pub max_memory_mb: u64,
    /// Serve a device class on this broker instead of listening (redis://..., rediss://...,
    /// unix:///...; or MNAS_BROKER_URL).
    #[arg(long, env = "MNAS_BROKER_URL", hide_env_values = true, requires = "device_class")]
    pub broker: Option<String>,
    /// The device class this agent serves on the broker (e.g. pixel7, rpi4).
    #[arg(long)]
    pub device_class: Option<String>,
    /// Measure with ONNX Runtime (`ort`) instead of mnas's engine (broker agents).
    #[arg(long, value_name = "ort")]
    pub engine: Option<String>,
    /// libonnxruntime.so for --engine ort [default: $MNAS_ORT_LIB or a venv's wheel].
    #[arg(long, env = "MNAS_ORT_LIB")]
    pub ort_lib: Option<std::path::PathBuf>,
}

/// `--token`, else the environment; empty counts as missing.
pub fn token(given: Option<String>) -> Option<String> {
    given.or_else(|| std::env::var(TOKEN_ENV).ok()).filter(|t| !t.is_empty())
}

pub fn run(args: AgentArgs) -> Result<()> {
    if let Some(url) = &args.broker {
        return run_on_broker(&args, url);
    }
    if args.device_class.is_some() {
        bail!("--device-class names the class an agent serves on a broker: give --broker URL too");
    }
    let Some(token) = token(args.token) else {
        bail!("no token: pass --token T or set {TOKEN_ENV} (clients must send the same token)");
    };
    if args.io_timeout == 0 {
        bail!("--io-timeout must be at least 1 second");
    }
    let mut config = AgentConfig::new(token);
    config.io_timeout = Duration::from_secs(args.io_timeout);
    config.max_memory_bytes = args.max_memory_mb.saturating_mul(1 << 20);
    let agent = Agent::bind(&args.listen, config)?;
    let addr = agent.local_addr().context("cannot read the bound address")?;
    // Tests and scripts read the port from this line (with --listen HOST:0).
    println!("mnas agent listening on {addr}");
    // Cores are chosen per request (`--core`, `--threads`), so the line names the machine only.
    let fp = Fingerprint::current(1, Vec::new());
    println!(
        "device: {} ({}, {}), {} {}, mnas {} {}, {}/{}",
        fp.cpu_model, fp.cpu_id, fp.simd, fp.engine, fp.engine_version, fp.mnas_version, fp.profile, fp.os, fp.arch
    );
    std::io::stdout().flush().context("cannot write to stdout")?;
    agent.serve();
    Ok(())
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct DeviceLines;

impl DeviceObserver for DeviceLines {
    fn on_measured(&mut self, arch: &str, m: &Result<Measurement, String>) {
        match m {
            Ok(m) => eprintln!("measured {arch}: {:.2} ms", m.stats.median_ms),
            Err(e) => eprintln!("cannot measure {arch}: {e}"),
        }
    }

    fn on_rejected(&mut self, entry: &mnas_broker::Entry, reason: &str) {
        eprintln!("request {}: {reason}", entry.id);
    }
}

static BUILT_IN: BuiltIn = BuiltIn;

fn run_on_broker(args: &AgentArgs, url: &str) -> Result<()> {
    let class = args.device_class.clone().unwrap_or_default();
    let engine: &'static dyn LocalEngine = match args.engine.as_deref() {
        None => &BUILT_IN,
        Some("ort") => OrtEngine::load(args.ort_lib.as_deref())?,
        Some(other) => bail!("--engine must be `ort` (or absent for mnas's engine), got `{other}`"),
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "agent".into());
    let agent = DeviceAgent {
        url: url.to_string(),
        class: class.clone(),
        name: format!("{}-{}", host.trim(), std::process::id()),
        engine,
        max_memory_bytes: args.max_memory_mb.saturating_mul(1 << 20),
        lease: Duration::from_secs(600),
    };
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
    // Connect first, so that a wrong URL or password is one error line.
    mnas_broker::Broker::connect(url)?;
    println!("mnas agent serving device class {class} on {}", redact_url(url));
    std::io::stdout().flush().context("cannot write to stdout")?;
    agent.serve(&STOP, &mut DeviceLines)?;
    Ok(())
}

fn redact_url(url: &str) -> String {
    mnas_broker::Broker::connect(url).map(|b| b.label().to_string()).unwrap_or_else(|_| "the broker".into())
}
