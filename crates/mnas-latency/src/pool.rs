//! The client side of remote latency: a pool of `mnas agent`s that measurements are spread over.
//!
//! Each request goes to an idle agent (one in flight per agent). An agent that cannot be reached,
//! times out, or answers garbage is marked bad, retried later with exponential backoff, and the
//! request goes to another agent. An agent that *answers* an error (wrong token, invalid arch)
//! has spoken: that error is returned as is, since another agent would say the same.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mnas_space::Arch;
use thiserror::Error;

use crate::error::LatencyError;
use crate::fingerprint::Fingerprint;
use crate::measure::{MeasureOptions, Measurement};
use crate::protocol::{read_frame, write_frame, DeadlineStream, ProtocolError, Request, Response};
use crate::store::Key;

/// How the pool talks to its agents.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub connect_timeout: Duration,
    /// Longest wait for one measurement's answer; `None` derives it from the options
    /// ([`request_timeout_for`]).
    pub request_timeout: Option<Duration>,
    /// Extra rounds over all agents after every agent failed once.
    pub retries: usize,
    /// First wait before a failed agent is tried again; doubles with each failure, up to 60 s.
    pub backoff: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            connect_timeout: Duration::from_secs(5),
            request_timeout: None,
            retries: 1,
            backoff: Duration::from_secs(1),
        }
    }
}

const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A generous bound on one measurement: 30 s plus 1 s per image forward (warm-up, every timed run
/// of every attempt, the per-layer runs). A phone runs MnasNet-A1 in ~0.1 s per image.
pub fn request_timeout_for(opts: &MeasureOptions) -> Duration {
    let passes = opts.warmup + opts.runs * (opts.retries + 1) + if opts.per_layer { opts.runs } else { 0 };
    let secs = 30u64.saturating_add((passes as u64).saturating_mul(opts.batch as u64));
    Duration::from_secs(secs.min(7 * 24 * 3600))
}

/// Why a remote measurement did not happen.
#[derive(Debug, Error)]
pub enum RemoteError {
    #[error("invalid agent address `{0}`: expected tcp://HOST:PORT or HOST:PORT")]
    Address(String),
    #[error("no agent address given")]
    NoAgents,
    /// The request was refused before it left (bad options).
    #[error(transparent)]
    Invalid(#[from] LatencyError),
    /// An agent answered with an error.
    #[error("agent {agent}: {message}")]
    Rejected { agent: String, message: String },
    /// Every agent failed (each with its last reason).
    #[error("no agent answered: {}", failures.iter().map(|f| format!("{}: {}", f.agent, f.reason)).collect::<Vec<_>>().join("; "))]
    Unreachable { failures: Vec<AgentFailure> },
}

/// One agent that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFailure {
    pub agent: String,
    pub reason: String,
}

/// A measurement and the agent that took it.
#[derive(Debug, Clone)]
pub struct Remote {
    pub agent: String,
    pub measurement: Measurement,
}

struct Endpoint {
    /// As the user wrote it (for messages).
    label: String,
    /// `HOST:PORT`.
    addr: String,
}

#[derive(Default)]
struct Slot {
    busy: bool,
    failures: u32,
    bad_until: Option<Instant>,
}

/// A set of agents measured through as one device.
pub struct AgentPool {
    endpoints: Vec<Endpoint>,
    token: String,
    options: PoolOptions,
    slots: Mutex<Vec<Slot>>,
    freed: Condvar,
}

impl std::fmt::Debug for AgentPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentPool").field("agents", &self.agents()).field("options", &self.options).finish()
    }
}

/// `tcp://HOST:PORT` or `HOST:PORT` -> `HOST:PORT`.
fn parse_address(spec: &str) -> Result<String, RemoteError> {
    let bad = || RemoteError::Address(spec.to_string());
    let rest = match spec.split_once("://") {
        Some(("tcp", rest)) => rest,
        Some(_) => return Err(bad()),
        None => spec,
    };
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(rest.to_string())
}

/// What one exchange with one agent gave.
enum Outcome {
    Answer(Box<Response>),
    /// Unreachable, timed out, closed, garbage: the agent is at fault, try another.
    Failed(String),
}

impl AgentPool {
    pub fn new(addrs: Vec<String>, token: impl Into<String>, options: PoolOptions) -> Result<AgentPool, RemoteError> {
        if addrs.is_empty() {
            return Err(RemoteError::NoAgents);
        }
        let endpoints = addrs
            .into_iter()
            .map(|label| Ok(Endpoint { addr: parse_address(label.trim())?, label: label.trim().to_string() }))
            .collect::<Result<Vec<_>, RemoteError>>()?;
        let slots = Mutex::new(endpoints.iter().map(|_| Slot::default()).collect());
        Ok(AgentPool { endpoints, token: token.into(), options, slots, freed: Condvar::new() })
    }

    /// The agents, as given.
    pub fn agents(&self) -> Vec<&str> {
        self.endpoints.iter().map(|e| e.label.as_str()).collect()
    }

    /// Measures `arch` on some agent of the pool.
    pub fn measure(&self, arch: &Arch, opts: &MeasureOptions) -> Result<Measurement, RemoteError> {
        self.measure_remote(arch, opts).map(|r| r.measurement)
    }

    /// [`AgentPool::measure`], also naming the agent that measured.
    pub fn measure_remote(&self, arch: &Arch, opts: &MeasureOptions) -> Result<Remote, RemoteError> {
        opts.validate()?;
        arch.validate().map_err(LatencyError::from)?;
        let timeout = self.options.request_timeout.unwrap_or_else(|| request_timeout_for(opts));
        let request = Request::Measure { token: self.token.clone(), arch: arch.clone(), options: opts.clone() };
        let mut failed: Vec<Option<String>> = vec![None; self.endpoints.len()];
        let mut round = 0;
        loop {
            let Some(i) = self.acquire(&failed) else {
                if round >= self.options.retries {
                    return Err(self.unreachable(failed));
                }
                round += 1;
                let wait = backoff(self.options.backoff, round as u32);
                tracing::info!(round, ?wait, "every agent failed; trying them again");
                std::thread::sleep(wait);
                failed.iter_mut().for_each(|f| *f = None);
                continue;
            };
            let agent = self.endpoints[i].label.clone();
            tracing::info!(%agent, arch = %arch.canonical(), "dispatching measurement");
            let outcome = match self.exchange(i, &request, timeout) {
                Outcome::Answer(answer) => match *answer {
                    Response::Measured(m) => check_measurement(&m, arch, opts).map(|()| Ok(*m)),
                    Response::Error { message } => Ok(Err(message)),
                    Response::Pong { .. } => Err("answered a measurement with a pong".into()),
                },
                Outcome::Failed(reason) => Err(reason),
            };
            self.release(i, outcome.is_ok());
            match outcome {
                Ok(Ok(measurement)) => return Ok(Remote { agent, measurement }),
                Ok(Err(message)) => return Err(RemoteError::Rejected { agent, message }),
                Err(reason) => {
                    // Info, not warn: when every agent fails, the error lists each reason once.
                    tracing::info!(%agent, "agent failed ({reason}); re-dispatching");
                    failed[i] = Some(reason);
                }
            }
        }
    }

    /// Measures every arch, in parallel across the agents (one in flight per agent); the results
    /// are in the order of `archs`.
    pub fn measure_many(&self, archs: &[Arch], opts: &MeasureOptions) -> Vec<Result<Measurement, RemoteError>> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<Measurement, RemoteError>>>> =
            Mutex::new((0..archs.len()).map(|_| None).collect());
        let workers = self.endpoints.len().min(archs.len());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(arch) = archs.get(i) else { break };
                    let r = self.measure(arch, opts);
                    lock(&results)[i] = Some(r);
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        results.into_iter().map(|r| r.unwrap_or(Err(RemoteError::NoAgents))).collect()
    }

    /// Every agent's device (or why it did not answer), asked in parallel.
    pub fn fingerprints(&self) -> Vec<(String, Result<Fingerprint, RemoteError>)> {
        // A ping is quick work: never wait longer for it than for a measurement.
        let quick = self.options.connect_timeout + Duration::from_secs(10);
        let timeout = self.options.request_timeout.map_or(quick, |t| t.min(quick));
        let request = Request::Ping { token: self.token.clone() };
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..self.endpoints.len())
                .map(|i| {
                    let request = &request;
                    s.spawn(move || {
                        let agent = self.endpoints[i].label.clone();
                        let r = match self.exchange(i, request, timeout) {
                            Outcome::Answer(answer) => match *answer {
                                Response::Pong { fingerprint } => Ok(*fingerprint),
                                Response::Error { message } => {
                                    Err(RemoteError::Rejected { agent: agent.clone(), message })
                                }
                                Response::Measured(_) => {
                                    Err(self.unreachable_one(&agent, "answered a ping with a measurement"))
                                }
                            },
                            Outcome::Failed(reason) => Err(self.unreachable_one(&agent, &reason)),
                        };
                        (agent, r)
                    })
                })
                .collect();
            handles
                .into_iter()
                .enumerate()
                .map(|(i, h)| {
                    h.join().unwrap_or_else(|_| {
                        let agent = self.endpoints[i].label.clone();
                        let e = self.unreachable_one(&agent, "ping thread panicked");
                        (agent, Err(e))
                    })
                })
                .collect()
        })
    }

    fn unreachable_one(&self, agent: &str, reason: &str) -> RemoteError {
        RemoteError::Unreachable { failures: vec![AgentFailure { agent: agent.into(), reason: reason.into() }] }
    }

    fn unreachable(&self, failed: Vec<Option<String>>) -> RemoteError {
        let failures = self
            .endpoints
            .iter()
            .zip(failed)
            .map(|(e, reason)| AgentFailure {
                agent: e.label.clone(),
                reason: reason.unwrap_or_else(|| "not tried (busy or backing off)".into()),
            })
            .collect();
        RemoteError::Unreachable { failures }
    }

    /// Takes an idle agent that has not failed this request: a healthy one if any; else waits
    /// while some are busy; else one still backing off (a bad agent beats none). `None` when
    /// every agent failed this request.
    fn acquire(&self, failed: &[Option<String>]) -> Option<usize> {
        let mut slots = lock(&self.slots);
        loop {
            let now = Instant::now();
            let open = |i: &usize| failed[*i].is_none();
            let healthy = (0..slots.len())
                .filter(open)
                .filter(|&i| !slots[i].busy && slots[i].bad_until.is_none_or(|t| t <= now))
                .min_by_key(|&i| slots[i].failures);
            let chosen = healthy.or_else(|| {
                if (0..slots.len()).filter(open).any(|i| slots[i].busy) {
                    return None;
                }
                (0..slots.len()).filter(open).filter(|&i| !slots[i].busy).min_by_key(|&i| slots[i].bad_until)
            });
            if let Some(i) = chosen {
                slots[i].busy = true;
                return Some(i);
            }
            if !(0..slots.len()).filter(open).any(|i| slots[i].busy) {
                return None;
            }
            // Busy agents free up when their request ends (bounded by its timeout).
            slots = self
                .freed
                .wait_timeout(slots, Duration::from_millis(200))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }

    fn release(&self, i: usize, healthy: bool) {
        let mut slots = lock(&self.slots);
        let slot = &mut slots[i];
        slot.busy = false;
        if healthy {
            slot.failures = 0;
            slot.bad_until = None;
        } else {
            slot.failures += 1;
            slot.bad_until = Some(Instant::now() + backoff(self.options.backoff, slot.failures));
        }
        drop(slots);
        self.freed.notify_all();
    }

    /// Sends `request` to agent `i` and reads its answer, all within `timeout`.
    fn exchange(&self, i: usize, request: &Request, timeout: Duration) -> Outcome {
        let endpoint = &self.endpoints[i];
        let stream = match connect(&endpoint.addr, self.options.connect_timeout) {
            Ok(s) => s,
            Err(reason) => return Outcome::Failed(reason),
        };
        let _ = stream.set_nodelay(true);
        let mut io = DeadlineStream::new(&stream, timeout);
        let result = write_frame(&mut io, request).and_then(|()| read_frame::<Response>(&mut io));
        match result {
            Ok(response) => Outcome::Answer(Box::new(response)),
            Err(ProtocolError::TimedOut) => Outcome::Failed(format!("timed out after {}", seconds(timeout))),
            Err(ProtocolError::Closed) => Outcome::Failed("closed the connection without answering".into()),
            Err(e) => Outcome::Failed(format!("bad answer: {}", describe_protocol(e))),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn backoff(base: Duration, failures: u32) -> Duration {
    base.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

/// Connects to the first address of `addr` that accepts within `timeout`.
fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(|e| format!("cannot resolve: {e}"))?.collect();
    let mut last = format!("{addr} resolves to no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = describe_io(&e, timeout),
        }
    }
    Err(last)
}

fn describe_io(e: &std::io::Error, timeout: Duration) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        TimedOut | WouldBlock => format!("timed out after {}", seconds(timeout)),
        ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
            "connection lost (agent killed or restarted?)".into()
        }
        _ => e.to_string(),
    }
}

fn describe_protocol(e: ProtocolError) -> String {
    match e {
        ProtocolError::Io(io) => describe_io(&io, Duration::ZERO),
        other => other.to_string(),
    }
}

fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// An answer to another question, or numbers no measurement gives, is garbage.
fn check_measurement(m: &Measurement, arch: &Arch, opts: &MeasureOptions) -> Result<(), String> {
    if m.arch != arch.canonical() || m.batch != opts.batch || m.threads != opts.threads {
        return Err(format!("answered for another request ({} batch {} threads {})", m.arch, m.batch, m.threads));
    }
    if !(m.stats.median_ms.is_finite() && m.stats.median_ms > 0.0) {
        return Err(format!("answered an impossible latency {} ms", m.stats.median_ms));
    }
    Ok(())
}

/// The store key of a measurement of `arch` with `opts` on the device `fingerprint` describes
/// (an agent's [`Response::Pong`]).
pub fn key_on(fingerprint: &Fingerprint, arch: &Arch, opts: &MeasureOptions) -> Key {
    Key::on(fingerprint, arch, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(parse_address("tcp://10.0.0.2:7878").unwrap(), "10.0.0.2:7878");
        assert_eq!(parse_address("localhost:1").unwrap(), "localhost:1");
        assert_eq!(parse_address("tcp://[::1]:7878").unwrap(), "[::1]:7878");
        for bad in ["http://x:1", "tcp://x", "x:port", ":7878", "tcp://x:99999", "x:1/path"] {
            assert!(matches!(parse_address(bad), Err(RemoteError::Address(_))), "{bad}");
        }
        assert!(matches!(AgentPool::new(vec![], "t", PoolOptions::default()), Err(RemoteError::NoAgents)));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Duration::from_secs(1);
        assert_eq!(backoff(b, 1), b);
        assert_eq!(backoff(b, 3), 4 * b);
        assert_eq!(backoff(b, 40), MAX_BACKOFF);
    }

    #[test]
    fn derived_timeout_grows_with_the_work() {
        let small = request_timeout_for(&MeasureOptions { runs: 5, warmup: 1, ..Default::default() });
        let big = request_timeout_for(&MeasureOptions { runs: 500, ..Default::default() });
        assert!(small >= Duration::from_secs(30) && big > small + Duration::from_secs(500), "{small:?} {big:?}");
    }

    #[test]
    fn a_dead_pool_fails_fast_with_every_reason() {
        // Bind then drop: the port is closed, so connecting is refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let opts = PoolOptions { backoff: Duration::from_millis(10), ..Default::default() };
        let pool = AgentPool::new(vec![format!("tcp://127.0.0.1:{port}")], "t", opts).unwrap();
        let arch = mnas_space::lookup("mnasnet-small").unwrap();
        let start = Instant::now();
        let e = pool.measure(&arch, &MeasureOptions::default()).unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(e, format!("no agent answered: tcp://127.0.0.1:{port}: connection refused"));
        let bad = MeasureOptions { runs: 0, ..Default::default() };
        assert!(pool.measure(&arch, &bad).unwrap_err().to_string().contains("runs"));
    }

    #[test]
    fn keys_use_the_remote_fingerprint() {
        let arch = mnas_space::lookup("mnasnet-small").unwrap();
        let opts = MeasureOptions { threads: 2, ..Default::default() };
        let mut remote = Fingerprint::current(1, vec![]);
        remote.cpu_model = "Cortex-A76".into();
        let key = key_on(&remote, &arch, &opts);
        assert_ne!(key.fingerprint, crate::cached::key_for(&arch, &opts).fingerprint);
        let mut measured = remote.clone();
        measured.threads = 2;
        measured.cores = vec![4, 5];
        assert_eq!(key.fingerprint, measured.key(), "a ping's fingerprint keys like the measurement's");
    }
}
