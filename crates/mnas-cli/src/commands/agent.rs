//! `mnas agent`: serve latency measurements of this machine to `mnas latency --device` elsewhere.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use mnas_latency::agent::{Agent, AgentConfig, DEFAULT_LISTEN};
use mnas_latency::Fingerprint;

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
`mnas agent listening on ADDR` once bound (--listen 127.0.0.1:0 picks a free port).";

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
}

/// `--token`, else the environment; empty counts as missing.
pub fn token(given: Option<String>) -> Option<String> {
    given.or_else(|| std::env::var(TOKEN_ENV).ok()).filter(|t| !t.is_empty())
}

pub fn run(args: AgentArgs) -> Result<()> {
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
