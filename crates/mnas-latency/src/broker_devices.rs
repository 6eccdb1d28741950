//! Devices on the broker: agents that connect *out* to a Redis broker (phones and boards behind
//! NAT can), grouped by device class. A latency request goes to the class's queue
//! (`mnas:devices:<class>`, group `agents`); any agent of the class measures it and appends the
//! measurement, with its own fingerprint, to the requester's reply stream.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mnas_broker::{append, read_after, Broker, Connection, Entry, Queue};
use mnas_space::Arch;

use crate::agent::memory_estimate;
use crate::measure::{measure_on, LocalEngine, MeasureOptions, Measurement};
use crate::source::{LatencySource, SourceError};

pub const SCHEMA: &str = "mnas-latency/1";
const AGENTS: &str = "agents";
/// Largest request field an agent reads.
const MAX_FIELD: usize = 64 * 1024;

pub fn class_queue(class: &str) -> Queue {
    Queue::new(format!("mnas:devices:{class}"), AGENTS)
}

/// A device class name: letters, digits, `-`, `_`, `.` (it becomes part of a key).
pub fn check_class(class: &str) -> Result<(), String> {
    if class.is_empty() || class.len() > 64 || !class.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
        return Err(format!("device class `{class}`: use 1-64 letters, digits, `-`, `_` or `.`"));
    }
    Ok(())
}

/// What an agent did, for its display.
pub trait DeviceObserver {
    fn on_measured(&mut self, _arch: &str, _m: &Result<Measurement, String>) {}
    fn on_rejected(&mut self, _entry: &Entry, _reason: &str) {}
}

/// Agent options.
pub struct DeviceAgent<'a> {
    pub url: String,
    pub class: String,
    pub name: String,
    pub engine: &'a dyn LocalEngine,
    pub max_memory_bytes: u64,
    pub lease: Duration,
}

fn read_request(e: &Entry) -> Result<(String, String, Arch, MeasureOptions), String> {
    if let Some((k, v)) = e.fields.iter().find(|(_, v)| v.len() > MAX_FIELD) {
        return Err(format!("field `{k}` holds {} bytes (at most {MAX_FIELD})", v.len()));
    }
    match e.get("schema") {
        Some(SCHEMA) => {}
        Some(other) => return Err(format!("request schema `{other}`; this agent reads `{SCHEMA}`")),
        None => return Err("no schema field: not a latency request".into()),
    }
    let reply = e.get("reply").ok_or("no reply stream")?.to_string();
    if !reply.starts_with("mnas:replies:") {
        return Err(format!("reply stream `{reply}` is not an mnas reply stream"));
    }
    let id = e.get("request").ok_or("no request id")?.to_string();
    let arch: Arch = serde_json::from_str(e.get("arch").ok_or("no arch")?).map_err(|err| format!("bad arch: {err}"))?;
    arch.validate().map_err(|err| format!("invalid arch: {err}"))?;
    let options: MeasureOptions =
        serde_json::from_str(e.get("options").ok_or("no options")?).map_err(|err| format!("bad options: {err}"))?;
    options.validate().map_err(|err| err.to_string())?;
    Ok((reply, id, arch, options))
}

impl DeviceAgent<'_> {
    /// Serves the class's queue until `stop` is set, reconnecting after a broker restart.
    pub fn serve(&self, stop: &AtomicBool, observer: &mut dyn DeviceObserver) -> Result<(), mnas_broker::BrokerError> {
        check_class(&self.class).map_err(|m| mnas_broker::BrokerError::Url(self.class.clone(), m))?;
        let broker = Broker::connect(&self.url)?;
        let queue = class_queue(&self.class);
        while !stop.load(Ordering::SeqCst) {
            let mut con = match broker.connection().and_then(|mut c| queue.ensure(&broker, &mut c).map(|_| c)) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!("broker: {e}; reconnecting");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            };
            if let Err(e) = self.serve_connected(&broker, &mut con, &queue, stop, observer) {
                tracing::warn!("broker connection lost ({e}); reconnecting");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        Ok(())
    }

    fn serve_connected(
        &self,
        broker: &Broker,
        con: &mut Connection,
        queue: &Queue,
        stop: &AtomicBool,
        observer: &mut dyn DeviceObserver,
    ) -> Result<(), mnas_broker::BrokerError> {
        while !stop.load(Ordering::SeqCst) {
            let Some(entry) = queue.take(broker, con, &self.name, self.lease, Duration::from_secs(1))? else {
                continue;
            };
            let (reply, id, arch, options) = match read_request(&entry) {
                Ok(r) => r,
                Err(reason) => {
                    queue.dead_letter(broker, con, &entry, &reason)?;
                    observer.on_rejected(&entry, &reason);
                    continue;
                }
            };
            let need = memory_estimate(&arch, options.batch);
            let result = if need > self.max_memory_bytes {
                Err(format!(
                    "the network needs ~{} MiB, more than this agent's {} MiB",
                    need >> 20,
                    self.max_memory_bytes >> 20
                ))
            } else {
                measure_on(self.engine, &arch, &options, &|_| {}).map_err(|e| e.to_string())
            };
            observer.on_measured(&arch.canonical(), &result);
            let mut fields = vec![("request", id), ("agent", self.name.clone())];
            match &result {
                Ok(m) => {
                    fields.push(("status", "ok".into()));
                    fields.push(("measurement", serde_json::to_string(m).expect("a measurement serialises")));
                }
                Err(reason) => {
                    fields.push(("status", "failed".into()));
                    fields.push(("reason", reason.clone()));
                }
            }
            append(broker, con, &reply, &fields, 10_000)?;
            queue.ack(broker, con, &entry.id)?;
        }
        Ok(())
    }
}

/// Latency from any agent of a device class on the broker.
pub struct OnBrokerDevices {
    broker: Broker,
    class: String,
    options: MeasureOptions,
    reply: String,
    next: AtomicU64,
    con: Mutex<Option<(Connection, String)>>,
    pub timeout: Duration,
}

impl OnBrokerDevices {
    pub fn new(url: &str, class: &str, options: MeasureOptions) -> Result<OnBrokerDevices, mnas_broker::BrokerError> {
        check_class(class).map_err(|m| mnas_broker::BrokerError::Url(class.into(), m))?;
        let broker = Broker::connect(url)?;
        let mut con = broker.connection()?;
        class_queue(class).ensure(&broker, &mut con)?;
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let reply = format!("mnas:replies:{:x}-{}", nanos, std::process::id());
        Ok(OnBrokerDevices {
            broker,
            class: class.into(),
            options,
            reply,
            next: AtomicU64::new(0),
            con: Mutex::new(Some((con, "0-0".into()))),
            timeout: Duration::from_secs(600),
        })
    }

    fn ask(&self, arch: &Arch) -> Result<Measurement, SourceError> {
        let unavailable = |e: mnas_broker::BrokerError| SourceError::Unavailable(e.to_string());
        let mut guard = self.con.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some((self.broker.connection().map_err(unavailable)?, "$".into()));
        }
        let (con, after) = guard.as_mut().expect("connected above");
        let id = self.next.fetch_add(1, Ordering::SeqCst).to_string();
        let fields = vec![
            ("schema", SCHEMA.to_string()),
            ("reply", self.reply.clone()),
            ("request", id.clone()),
            ("arch", serde_json::to_string(arch).expect("an arch serialises")),
            ("options", serde_json::to_string(&self.options).expect("options serialise")),
        ];
        let queued = class_queue(&self.class).push(&self.broker, con, &fields, 100_000);
        if let Err(e) = queued {
            *guard = None;
            return Err(unavailable(e));
        }
        let deadline = Instant::now() + self.timeout;
        while Instant::now() < deadline {
            let entries = match read_after(&self.broker, con, &self.reply, after, Duration::from_secs(2)) {
                Ok(e) => e,
                Err(e) => {
                    *guard = None;
                    return Err(unavailable(e));
                }
            };
            for e in entries {
                *after = e.id.clone();
                if e.get("request") != Some(id.as_str()) {
                    continue;
                }
                return match e.get("status") {
                    Some("ok") => serde_json::from_str(e.get("measurement").unwrap_or_default())
                        .map_err(|err| SourceError::Unavailable(format!("agent answered garbage: {err}"))),
                    _ => Err(SourceError::Model(e.get("reason").unwrap_or("the agent failed").to_string())),
                };
            }
        }
        Err(SourceError::Unavailable(format!(
            "no agent of device class `{}` answered within {} s",
            self.class,
            self.timeout.as_secs()
        )))
    }
}

impl LatencySource for OnBrokerDevices {
    fn latency(&self, arch: &Arch) -> Result<Measurement, SourceError> {
        self.ask(arch)
    }

    fn describe(&self) -> String {
        format!("device class `{}` on {} ({} runs per model)", self.class, self.broker.label(), self.options.runs)
    }

    fn uses_this_machine(&self) -> bool {
        false
    }
}
