//! Trials on Redis Streams: the search dispatches each step's trials as specs to one queue that
//! every worker reads; workers train them and append results to the run's result log; the
//! search records each result once, keyed by (step, index), in its SQLite store, which stays the
//! source of truth. Delivery is at least once (a worker that dies leaves its trial to another
//! after the lease), recording exactly once.
//!
//! Keys: `mnas:trials` (queue, group `workers`), `mnas:trials:dead` (dead letters),
//! `mnas:results:<run id>` (result log of one run).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use mnas_broker::{append, range, read_after, Broker, Entry, Queue};
use mnas_search::search_loop::{AccuracyEvaluator, AccuracyResult, Scored, TrialKey};
use mnas_space::Arch;

use crate::error::{PipelineError, Result};
use crate::proxy::ProxySettings;

/// The version of the trial spec format; a worker refuses specs of another.
pub const SCHEMA: &str = "mnas-trial/1";
pub const TRIALS: &str = "mnas:trials";
pub const WORKERS: &str = "workers";
/// How long the search keeps trying to reach a broker that went away.
const RECONNECT_PATIENCE: Duration = Duration::from_secs(300);
/// Largest spec field a worker accepts: an arch or a recipe is a few KB.
pub const MAX_FIELD: usize = 64 * 1024;

pub fn results_key(run: &str) -> String {
    format!("mnas:results:{run}")
}

pub fn trial_queue() -> Queue {
    Queue::new(TRIALS, WORKERS)
}

/// What a worker is asked to train.
#[derive(Debug, Clone, PartialEq)]
pub struct TrialSpec {
    pub run: String,
    pub key: TrialKey,
    pub arch: Arch,
    pub proxy: ProxySettings,
    /// Content hash of the data the trial must train on (16 hex digits).
    pub data_hash: String,
}

impl TrialSpec {
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("schema", SCHEMA.into()),
            ("mnas_version", env!("CARGO_PKG_VERSION").into()),
            ("run", self.run.clone()),
            ("step", self.key.step.to_string()),
            ("index", self.key.index.to_string()),
            ("attempt", self.key.attempt.to_string()),
            ("arch", serde_json::to_string(&self.arch).expect("an arch serialises")),
            ("proxy", serde_json::to_string(&self.proxy).expect("settings serialise")),
            ("data_hash", self.data_hash.clone()),
        ]
    }

    /// The run and trial an entry names, when it names them (even if the rest is garbage).
    pub fn key_of(e: &Entry) -> Option<(String, TrialKey)> {
        let run = e.get("run")?.to_string();
        let step = e.get("step")?.parse().ok()?;
        let index = e.get("index")?.parse().ok()?;
        let attempt = e.get("attempt").and_then(|a| a.parse().ok()).unwrap_or(0);
        Some((run, TrialKey { step, index, attempt }))
    }

    /// Reads a spec, or says why it is not one this mnas can train.
    pub fn parse(e: &Entry) -> std::result::Result<TrialSpec, String> {
        if let Some((name, v)) = e.fields.iter().find(|(_, v)| v.len() > MAX_FIELD) {
            return Err(format!("field `{name}` holds {} bytes (at most {MAX_FIELD})", v.len()));
        }
        match e.get("schema") {
            Some(SCHEMA) => {}
            Some(other) => return Err(format!("spec schema `{other}`; this worker reads `{SCHEMA}`")),
            None => return Err("no schema field: not a trial spec".into()),
        }
        let version = e.get("mnas_version").unwrap_or("unknown");
        if version != env!("CARGO_PKG_VERSION") {
            return Err(format!("sent by mnas {version}; this worker is mnas {}", env!("CARGO_PKG_VERSION")));
        }
        let (run, key) = TrialSpec::key_of(e).ok_or("no run, step or index")?;
        let arch: Arch =
            serde_json::from_str(e.get("arch").ok_or("no arch")?).map_err(|err| format!("bad arch: {err}"))?;
        arch.validate().map_err(|err| format!("invalid arch: {err}"))?;
        let proxy: ProxySettings = serde_json::from_str(e.get("proxy").ok_or("no proxy recipe")?)
            .map_err(|err| format!("bad recipe: {err}"))?;
        proxy.validate().map_err(|err| err.to_string())?;
        let data_hash = e.get("data_hash").ok_or("no data hash")?.to_string();
        Ok(TrialSpec { run, key, arch, proxy, data_hash })
    }
}

/// How a trial ended, as a worker reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A worker took the trial (for live displays; not a result).
    Started,
    Ok {
        accuracy: f64,
        /// What the reward multiplies (see `Score::quality`).
        quality: f64,
        seconds: f64,
    },
    /// The model failed by itself (diverged, or workers died on it again and again).
    Failed(String),
    /// The worker could not or would not train it (other data, other version): try elsewhere.
    Refused(String),
}

/// One entry of a run's result log.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub key: TrialKey,
    pub worker: String,
    pub outcome: Outcome,
}

impl Report {
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("step", self.key.step.to_string()),
            ("index", self.key.index.to_string()),
            ("attempt", self.key.attempt.to_string()),
            ("worker", self.worker.clone()),
        ];
        match &self.outcome {
            Outcome::Started => f.push(("status", "started".into())),
            Outcome::Ok { accuracy, quality, seconds } => {
                f.push(("status", "ok".into()));
                f.push(("accuracy", format!("{accuracy:.9}")));
                f.push(("quality", format!("{quality:.9}")));
                f.push(("seconds", format!("{seconds:.3}")));
            }
            Outcome::Failed(r) => {
                f.push(("status", "failed".into()));
                f.push(("reason", r.clone()));
            }
            Outcome::Refused(r) => {
                f.push(("status", "refused".into()));
                f.push(("reason", r.clone()));
            }
        }
        f
    }

    pub fn parse(e: &Entry) -> Option<Report> {
        let key = TrialKey {
            step: e.get("step")?.parse().ok()?,
            index: e.get("index")?.parse().ok()?,
            attempt: e.get("attempt")?.parse().ok()?,
        };
        let reason = || e.get("reason").unwrap_or("no reason given").to_string();
        let outcome = match e.get("status")? {
            "started" => Outcome::Started,
            "ok" => {
                let accuracy = e.get("accuracy")?.parse().ok()?;
                // Reports of workers from before loss scores carry accuracy alone.
                let quality = match e.get("quality") {
                    Some(q) => q.parse().ok()?,
                    None => accuracy,
                };
                Outcome::Ok { accuracy, quality, seconds: e.get("seconds")?.parse().ok()? }
            }
            "failed" => Outcome::Failed(reason()),
            "refused" => Outcome::Refused(reason()),
            _ => return None,
        };
        Some(Report { key, worker: e.get("worker").unwrap_or("?").to_string(), outcome })
    }
}

/// Appends a report to a run's result log.
pub fn report(broker: &Broker, con: &mut mnas_broker::Connection, run: &str, r: &Report) -> Result<()> {
    append(broker, con, &results_key(run), &r.fields(), 1_000_000)?;
    Ok(())
}

/// Who trains what right now, for a live display.
pub trait WorkerWatch: Send {
    fn started(&mut self, key: TrialKey, worker: &str);
}

/// The search's side: dispatches trials and waits for their results.
pub struct BrokerTrainer {
    pub broker: Broker,
    pub run: String,
    pub proxy: ProxySettings,
    pub data_hash: String,
    /// Longest wait for one step's results without hearing from any worker.
    pub patience: Duration,
    pub watch: std::sync::Mutex<Option<Box<dyn WorkerWatch>>>,
    /// Per finished trial: seconds from dispatch to its result here, and seconds the worker spent
    /// on it (the difference is the broker's overhead when a worker was free at dispatch).
    pub round_trips: std::sync::Mutex<Vec<(f64, f64)>>,
}

impl BrokerTrainer {
    pub fn new(url: &str, run: &str, proxy: ProxySettings, data_hash: u64) -> Result<BrokerTrainer> {
        let broker = Broker::connect(url)?;
        let mut con = broker.connection()?;
        trial_queue().ensure(&broker, &mut con)?;
        Ok(BrokerTrainer {
            broker,
            run: run.to_string(),
            proxy,
            data_hash: format!("{data_hash:016x}"),
            patience: Duration::from_secs(6 * 3600),
            watch: std::sync::Mutex::new(None),
            round_trips: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Results already in the log for this run (after a crash of the search), by key.
    fn finished(&self, con: &mut mnas_broker::Connection) -> Result<(HashMap<TrialKey, Outcome>, String)> {
        let entries = range(&self.broker, con, &results_key(&self.run))?;
        let last = entries.last().map(|e| e.id.clone()).unwrap_or_else(|| "0-0".into());
        let mut done = HashMap::new();
        for r in entries.iter().filter_map(Report::parse) {
            if r.outcome != Outcome::Started {
                done.entry(r.key).or_insert(r.outcome);
            }
        }
        Ok((done, last))
    }

    /// Specs of this run already in the queue (dispatched before a crash): not sent twice.
    fn dispatched(&self, con: &mut mnas_broker::Connection) -> Result<Vec<TrialKey>> {
        Ok(trial_queue()
            .range(&self.broker, con)?
            .iter()
            .filter_map(TrialSpec::key_of)
            .filter(|(run, _)| *run == self.run)
            .map(|(_, k)| k)
            .collect())
    }

    fn outcome_to_result(o: Outcome) -> Option<AccuracyResult> {
        match o {
            Outcome::Started => None,
            Outcome::Ok { accuracy, quality, .. } => Some(AccuracyResult::Ok(Scored { accuracy, quality })),
            Outcome::Failed(r) => Some(AccuracyResult::Failed(r)),
            Outcome::Refused(r) => Some(AccuracyResult::Unavailable(format!("refused: {r}"))),
        }
    }

    fn run_all(&self, trials: &[(TrialKey, Arch)], done: &mut dyn FnMut(TrialKey, AccuracyResult)) -> Result<()> {
        let mut con = self.broker.connection()?;
        let (finished, mut after) = self.finished(&mut con)?;
        let in_queue = self.dispatched(&mut con)?;
        let mut waiting: BTreeMap<TrialKey, Instant> = BTreeMap::new();
        for (key, arch) in trials {
            if let Some(result) = finished.get(key).cloned().and_then(Self::outcome_to_result) {
                tracing::info!(
                    step = key.step,
                    index = key.index,
                    "result of a trial finished while the search was down"
                );
                done(*key, result);
                continue;
            }
            if !in_queue.contains(key) {
                let spec = TrialSpec {
                    run: self.run.clone(),
                    key: *key,
                    arch: arch.clone(),
                    proxy: self.proxy.clone(),
                    data_hash: self.data_hash.clone(),
                };
                trial_queue().push(&self.broker, &mut con, &spec.fields(), 100_000)?;
            }
            waiting.insert(*key, Instant::now());
        }
        let mut heard = Instant::now();
        let mut lost: Option<Instant> = None;
        while !waiting.is_empty() {
            if heard.elapsed() > self.patience {
                for key in std::mem::take(&mut waiting).into_keys() {
                    done(
                        key,
                        AccuracyResult::Unavailable(format!("no worker answered within {} s", self.patience.as_secs())),
                    );
                }
                break;
            }
            // The broker may restart (its append-only file keeps the streams): reconnect and
            // read on from the last result seen.
            let entries =
                match read_after(&self.broker, &mut con, &results_key(&self.run), &after, Duration::from_secs(5)) {
                    Ok(e) => {
                        lost = None;
                        e
                    }
                    Err(e) => {
                        if lost.get_or_insert_with(Instant::now).elapsed() > RECONNECT_PATIENCE {
                            return Err(e.into());
                        }
                        tracing::warn!("broker connection lost ({e}); reconnecting");
                        std::thread::sleep(Duration::from_millis(500));
                        if let Ok(c) = self.broker.connection() {
                            con = c;
                        }
                        continue;
                    }
                };
            for e in entries {
                after = e.id.clone();
                heard = Instant::now();
                let Some(r) = Report::parse(&e) else { continue };
                if r.outcome == Outcome::Started {
                    if waiting.contains_key(&r.key) {
                        if let Some(w) = self.watch.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                            w.started(r.key, &r.worker);
                        }
                    }
                    continue;
                }
                // At least once: a result for a trial already recorded is ignored.
                if let Some(sent) = waiting.remove(&r.key) {
                    if let Outcome::Ok { seconds, .. } = r.outcome {
                        self.round_trips
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((sent.elapsed().as_secs_f64(), seconds));
                    }
                    if let Some(result) = Self::outcome_to_result(r.outcome) {
                        done(r.key, result);
                    }
                }
            }
        }
        Ok(())
    }
}

impl AccuracyEvaluator for BrokerTrainer {
    fn accuracy(&self, key: TrialKey, arch: &Arch) -> AccuracyResult {
        let mut result = AccuracyResult::Unavailable("no result".into());
        self.accuracy_all(&[(key, arch.clone())], &mut |_, r| result = r);
        result
    }

    fn accuracy_all(&self, trials: &[(TrialKey, Arch)], done: &mut dyn FnMut(TrialKey, AccuracyResult)) {
        let mut answered: Vec<TrialKey> = Vec::new();
        let outcome = self.run_all(trials, &mut |k, r| {
            answered.push(k);
            done(k, r)
        });
        if let Err(e) = outcome {
            // The broker went away mid-step: the trials without a result are unavailable (the
            // search retries them once, then leaves them out of the update).
            for (key, _) in trials.iter().filter(|(k, _)| !answered.contains(k)) {
                done(*key, AccuracyResult::Unavailable(format!("broker: {e}")));
            }
        }
    }

    fn trains_here(&self) -> bool {
        false
    }
}

impl From<mnas_broker::BrokerError> for PipelineError {
    fn from(e: mnas_broker::BrokerError) -> Self {
        PipelineError::Broker(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&'static str, String)]) -> Entry {
        Entry {
            id: "1-0".into(),
            fields: fields.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
            deliveries: 1,
        }
    }

    #[test]
    fn a_report_carries_accuracy_and_quality_and_reads_old_reports() {
        let key = TrialKey { step: 3, index: 1, attempt: 0 };
        let report =
            Report { key, worker: "w1".into(), outcome: Outcome::Ok { accuracy: 0.25, quality: 0.17, seconds: 9.5 } };
        assert_eq!(Report::parse(&entry(&report.fields())), Some(report.clone()));
        // A worker from before loss scores sends accuracy alone: its quality is the accuracy.
        let old: Vec<_> = report.fields().into_iter().filter(|(k, _)| *k != "quality").collect();
        let parsed = Report::parse(&entry(&old)).expect("an old report parses");
        assert_eq!(parsed.outcome, Outcome::Ok { accuracy: 0.25, quality: 0.25, seconds: 9.5 });
        // A quality that is not a number is not a report.
        let bad: Vec<_> = report
            .fields()
            .into_iter()
            .map(|(k, v)| if k == "quality" { (k, "high".into()) } else { (k, v) })
            .collect();
        assert_eq!(Report::parse(&entry(&bad)), None);
    }
}
