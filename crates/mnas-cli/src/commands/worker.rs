//! `mnas worker`: trains the trials of searches that dispatch to a broker.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use mnas_broker::Entry;
use mnas_pipeline::distributed::{Outcome, TrialSpec};
use mnas_pipeline::worker::{serve, WorkerObserver, WorkerOptions};

pub const LONG_ABOUT: &str = "Train the trials of searches started with `mnas search --broker URL`.\n\n\
The worker takes trial specs from the broker (Redis Streams, consumer group `workers`), checks each against \
what it has (mnas version, spec schema, and the content hash of its data: --data, or the embedded subset), \
trains it on the proxy, reports the result and acknowledges the spec. While it trains it renews its lease; \
if it dies, another worker takes the trial over once --lease has passed. A spec delivered more than \
--max-deliveries times is reported as a failed trial; an entry that is not a readable spec goes to \
mnas:trials:dead with the reason. SIGTERM or Ctrl-C: the current trial is finished and reported, then the \
worker exits.\n\n\
Example:\n  MNAS_BROKER_URL=redis://:PASSWORD@broker:6379 mnas worker --data ../shared/data/cifar10-jpg.tar.gz";

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// The broker: redis://[user:password@]HOST:PORT, rediss://... (TLS), or unix:///PATH[?pass=...].
    #[arg(long, env = "MNAS_BROKER_URL", hide_env_values = true)]
    pub broker: String,
    /// This worker's name among the workers [default: <hostname>-<pid>].
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds a trial may go without this worker's heartbeat before another takes it over.
    #[arg(long, default_value_t = 60.0)]
    pub lease: f64,
    /// Deliveries after which a trial counts as failed (workers kept dying on it).
    #[arg(long, default_value_t = 3)]
    pub max_deliveries: u64,
    /// The data set this worker trains on (the search's, same held-out fraction and split seed)
    /// [default: the embedded CIFAR-10 subset].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Training threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Exit after this many trials.
    #[arg(long)]
    pub max_trials: Option<usize>,
    /// Exit after this many seconds without work.
    #[arg(long)]
    pub idle_exit: Option<f64>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGTERM and SIGINT finish the current trial, then stop.
fn install_stop_handler() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

struct Lines;

impl WorkerObserver for Lines {
    fn on_start(&mut self, spec: &TrialSpec, deliveries: u64) {
        let again = if deliveries > 1 { format!(" (delivery {deliveries})") } else { String::new() };
        eprintln!("run {} trial {}.{}: training{again}", spec.run, spec.key.step, spec.key.index);
    }

    fn on_done(&mut self, spec: &TrialSpec, outcome: &Outcome) {
        let what = match outcome {
            Outcome::Ok { accuracy, seconds, .. } => format!("held-out {:.2} % in {seconds:.1} s", 100.0 * accuracy),
            Outcome::Failed(r) => format!("failed: {r}"),
            Outcome::Refused(r) => format!("refused: {r}"),
            Outcome::Started => "started".into(),
        };
        eprintln!("run {} trial {}.{}: {what}", spec.run, spec.key.step, spec.key.index);
    }

    fn on_rejected(&mut self, entry: &Entry, reason: &str) {
        eprintln!("entry {}: {reason}", entry.id);
    }
}

pub fn run(args: WorkerArgs) -> Result<()> {
    if !(args.lease.is_finite() && args.lease > 0.0) {
        bail!("--lease must be a positive number of seconds, got {}", args.lease);
    }
    if args.max_deliveries == 0 {
        bail!("--max-deliveries must be at least 1");
    }
    if let Some(t) = args.threads {
        if t == 0 {
            bail!("--threads must be at least 1");
        }
        mnas_engine::set_threads(t);
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "worker".into());
    let name = args.name.clone().unwrap_or_else(|| format!("{}-{}", host.trim(), std::process::id()));
    let opts = WorkerOptions {
        url: args.broker.clone(),
        name: name.clone(),
        lease: Duration::from_secs_f64(args.lease),
        max_deliveries: args.max_deliveries,
        data: args.data.as_ref().map(|p| p.display().to_string()),
        max_trials: args.max_trials,
        idle_exit: args.idle_exit.map(Duration::from_secs_f64),
    };
    install_stop_handler();
    eprintln!("worker {name}: waiting for trials");
    let summary = serve(&opts, &STOP, &mut Lines).context("worker")?;
    println!(
        "worker {name}: {} trials trained, {} refused, {} dead-lettered",
        summary.trained, summary.refused, summary.dead_lettered
    );
    Ok(())
}
