//! `mnas worker`: takes trial specs from the broker's queue, checks them against what this
//! machine has (mnas version, spec schema, the data's content hash), trains them on the proxy,
//! reports the result to the run's log and acknowledges the spec. While it trains it renews its
//! lease, so a live trial is never taken over; a worker that dies leaves its trial to another
//! once the lease runs out. A spec delivered more than `max_deliveries` times (workers keep dying
//! on it) is a failed trial, not retried forever; an entry that is not a spec this worker can
//! read goes to the dead letters with the reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mnas_broker::{Broker, Entry};
use mnas_engine::train::RunStatus;

use crate::distributed::{report, trial_queue, Outcome, Report, TrialSpec};
use crate::error::Result;
use crate::proxy::{ProxySettings, ProxyTrainer};

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub url: String,
    /// This worker's name in the consumer group (unique per running worker).
    pub name: String,
    /// How long a trial may go without a heartbeat before another worker takes it over.
    pub lease: Duration,
    /// Deliveries after which a spec is a failed trial (poison).
    pub max_deliveries: u64,
    /// The data this worker trains on (`None`: the embedded subset); a spec for other data is
    /// refused.
    pub data: Option<String>,
    /// Stop after this many trials (benchmarks, tests).
    pub max_trials: Option<usize>,
    /// Stop after this long without work.
    pub idle_exit: Option<Duration>,
}

/// What a worker did, for its display.
pub trait WorkerObserver {
    fn on_start(&mut self, _spec: &TrialSpec, _deliveries: u64) {}
    fn on_done(&mut self, _spec: &TrialSpec, _outcome: &Outcome) {}
    fn on_rejected(&mut self, _entry: &Entry, _reason: &str) {}
}

/// Counts of a worker's life.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerSummary {
    pub trained: usize,
    pub refused: usize,
    pub dead_lettered: usize,
}

/// Trainers by the recipe's data-side settings (a data set is loaded once per worker).
fn data_key(s: &ProxySettings) -> String {
    format!("{:?}|{}|{}|{:?}|{}|{}", s.data, s.val_fraction, s.split_seed, s.resolution, s.images, s.val_images)
}

/// Serves until `stop` is set (SIGTERM: the current trial is finished first), `max_trials` are
/// done, or no work came for `idle_exit`.
pub fn serve(opts: &WorkerOptions, stop: &AtomicBool, observer: &mut dyn WorkerObserver) -> Result<WorkerSummary> {
    let broker = Broker::connect(&opts.url)?;
    let mut summary = WorkerSummary::default();
    let mut trainers: HashMap<String, ProxyTrainer> = HashMap::new();
    let mut lost_since: Option<Instant> = None;
    while !stop.load(Ordering::SeqCst) {
        // The broker may restart (an append-only file keeps its streams): reconnect and go on.
        match serve_connected(&broker, opts, stop, observer, &mut trainers, &mut summary) {
            Ok(()) => return Ok(summary),
            Err(e) => {
                let since = *lost_since.get_or_insert_with(Instant::now);
                if since.elapsed() > RECONNECT_PATIENCE {
                    return Err(e);
                }
                tracing::warn!("broker connection lost ({e}); reconnecting");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        if summary.trained > 0 {
            lost_since = None;
        }
    }
    Ok(summary)
}

/// How long a worker keeps trying to reach a broker that went away.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(300);

/// Serves on one connection until stopped (`Ok`) or the connection fails (`Err`).
fn serve_connected(
    broker: &Broker,
    opts: &WorkerOptions,
    stop: &AtomicBool,
    observer: &mut dyn WorkerObserver,
    trainers: &mut HashMap<String, ProxyTrainer>,
    summary: &mut WorkerSummary,
) -> Result<()> {
    let mut con = broker.connection()?;
    let queue = trial_queue();
    queue.ensure(broker, &mut con)?;
    let mut idle_since = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        if opts.max_trials.is_some_and(|n| summary.trained >= n) {
            break;
        }
        if opts.idle_exit.is_some_and(|d| idle_since.elapsed() > d) {
            break;
        }
        let Some(entry) = queue.take(broker, &mut con, &opts.name, opts.lease, Duration::from_secs(1))? else {
            continue;
        };
        idle_since = Instant::now();
        let key = TrialSpec::key_of(&entry);
        if entry.deliveries > opts.max_deliveries {
            let reason = format!("poison: delivered {} times, workers kept dying while training it", entry.deliveries);
            if let Some((run, k)) = &key {
                let r = Report { key: *k, worker: opts.name.clone(), outcome: Outcome::Failed(reason.clone()) };
                report(broker, &mut con, run, &r)?;
            }
            queue.dead_letter(broker, &mut con, &entry, &reason)?;
            observer.on_rejected(&entry, &reason);
            summary.dead_lettered += 1;
            continue;
        }
        let spec = match TrialSpec::parse(&entry) {
            Ok(s) => s,
            Err(reason) => {
                if let Some((run, k)) = &key {
                    let r = Report { key: *k, worker: opts.name.clone(), outcome: Outcome::Refused(reason.clone()) };
                    report(broker, &mut con, run, &r)?;
                }
                queue.dead_letter(broker, &mut con, &entry, &reason)?;
                observer.on_rejected(&entry, &reason);
                summary.dead_lettered += 1;
                continue;
            }
        };
        let settings = ProxySettings { data: opts.data.clone(), ..spec.proxy.clone() };
        let dk = data_key(&settings);
        if !trainers.contains_key(&dk) {
            match ProxyTrainer::new(settings) {
                Ok(t) => {
                    trainers.insert(dk.clone(), t);
                }
                Err(e) => {
                    refuse(
                        broker,
                        &mut con,
                        &opts.name,
                        &spec,
                        &entry,
                        &format!("cannot load the data: {e}"),
                        observer,
                    )?;
                    summary.refused += 1;
                    continue;
                }
            }
        }
        let trainer = trainers.get_mut(&dk).expect("inserted above");
        let have = format!("{:016x}", trainer.data_hash);
        if have != spec.data_hash {
            let reason = format!(
                "this worker's data ({}, content {have}) is not the run's (content {}): give the worker the search's \
                 data set with the same held-out fraction and split seed",
                trainer.data.name, spec.data_hash
            );
            refuse(broker, &mut con, &opts.name, &spec, &entry, &reason, observer)?;
            summary.refused += 1;
            continue;
        }
        trainer.settings = spec.proxy.clone();
        observer.on_start(&spec, entry.deliveries);
        report(
            broker,
            &mut con,
            &spec.run,
            &Report { key: spec.key, worker: opts.name.clone(), outcome: Outcome::Started },
        )?;
        let outcome = train_with_heartbeat(broker, opts, &entry.id, trainer, &spec)?;
        // A result that cannot be reported now (the broker restarting) is reported once it is
        // back: the spec stays pending until then, so nothing is lost.
        let done = Report { key: spec.key, worker: opts.name.clone(), outcome: outcome.clone() };
        let waited = Instant::now();
        loop {
            let sent = broker.connection().map_err(crate::PipelineError::from).and_then(|mut c| {
                report(broker, &mut c, &spec.run, &done)?;
                queue.ack(broker, &mut c, &entry.id)?;
                Ok(c)
            });
            match sent {
                Ok(c) => {
                    con = c;
                    break;
                }
                Err(e) if waited.elapsed() < RECONNECT_PATIENCE => {
                    tracing::warn!("cannot report trial {}.{} yet ({e}); retrying", spec.key.step, spec.key.index);
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
        observer.on_done(&spec, &outcome);
        summary.trained += 1;
    }
    Ok(())
}

fn refuse(
    broker: &Broker,
    con: &mut mnas_broker::Connection,
    name: &str,
    spec: &TrialSpec,
    entry: &Entry,
    reason: &str,
    observer: &mut dyn WorkerObserver,
) -> Result<()> {
    report(
        broker,
        con,
        &spec.run,
        &Report { key: spec.key, worker: name.into(), outcome: Outcome::Refused(reason.into()) },
    )?;
    trial_queue().ack(broker, con, &entry.id)?;
    observer.on_rejected(entry, reason);
    Ok(())
}

/// Trains `spec` while a second connection renews the lease every third of it.
fn train_with_heartbeat(
    broker: &Broker,
    opts: &WorkerOptions,
    id: &str,
    trainer: &ProxyTrainer,
    spec: &TrialSpec,
) -> Result<Outcome> {
    let done = Arc::new(AtomicBool::new(false));
    let mut beat_con = broker.connection()?;
    let beat_every = (opts.lease / 3).max(Duration::from_millis(50));
    let started = Instant::now();
    let result = std::thread::scope(|scope| {
        let flag = done.clone();
        scope.spawn(move || {
            let queue = trial_queue();
            let mut last = Instant::now();
            while !flag.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
                if last.elapsed() >= beat_every {
                    if let Err(e) = queue.heartbeat(broker, &mut beat_con, &opts.name, id) {
                        tracing::warn!("heartbeat failed: {e}");
                    }
                    last = Instant::now();
                }
            }
        });
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| trainer.run(&spec.arch, &mut |_| true)));
        done.store(true, Ordering::SeqCst);
        r
    });
    let seconds = started.elapsed().as_secs_f64();
    Ok(match result {
        Ok(Ok(r)) => match r.status {
            RunStatus::Completed => {
                let scored = trainer.settings.score.scored(&r);
                Outcome::Ok { accuracy: scored.accuracy, quality: scored.quality, seconds }
            }
            RunStatus::Diverged { reason } => Outcome::Failed(reason),
        },
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
        Err(payload) => Outcome::Failed(format!("training panicked: {}", crate::panic_reason(payload))),
    })
}
