//! The measuring side of remote latency: `mnas agent` on the device answers [`Request`]s.
//!
//! One thread per connection, but one measurement at a time: a measurement pins cores, and two at
//! once would time each other. Everything a client sends is data that is validated before use
//! (token, protocol version, arch, options, size of the network); a bad request gets an error
//! response and the connection is closed, and the agent keeps serving everyone else.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mnas_space::Arch;
use thiserror::Error;

use crate::fingerprint::Fingerprint;
use crate::measure::{self, MeasureOptions};
use crate::protocol::{read_frame, tokens_match, write_frame, DeadlineStream, ProtocolError, Request, Response};

/// Default listen address: loopback only, so nothing is exposed unless asked for.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";

/// How an agent serves.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Clients must send exactly this token.
    pub token: String,
    /// Longest a client may take to send a request, and the agent to send an answer.
    pub io_timeout: Duration,
    /// Connections served at once; more are answered "busy" and closed.
    pub max_connections: usize,
    /// Largest network (weights plus the biggest activation, float32, whole batch) the agent
    /// builds: an allocation failure would abort the agent, so it refuses first.
    pub max_memory_bytes: u64,
}

impl AgentConfig {
    pub fn new(token: impl Into<String>) -> AgentConfig {
        AgentConfig {
            token: token.into(),
            io_timeout: Duration::from_secs(30),
            max_connections: 32,
            max_memory_bytes: 4 << 30,
        }
    }
}

/// Why an agent cannot start.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error("the agent needs a non-empty token (clients must send the same one)")]
    NoToken,
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
}

/// A bound agent, ready to [`Agent::serve`].
pub struct Agent {
    listener: TcpListener,
    shared: Arc<Shared>,
}

struct Shared {
    config: AgentConfig,
    /// Held while measuring: measurements pin cores and must not overlap.
    measuring: Mutex<()>,
    connections: AtomicUsize,
}

/// `7878` or `:7878` mean loopback port 7878; anything else is taken as written.
pub fn listen_address(spec: &str) -> String {
    let port = spec.strip_prefix(':').unwrap_or(spec);
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        format!("127.0.0.1:{port}")
    } else {
        spec.to_string()
    }
}

impl Agent {
    /// Binds `addr` (see [`listen_address`]); warns when that is not a loopback address.
    pub fn bind(addr: &str, config: AgentConfig) -> Result<Agent, AgentError> {
        if config.token.is_empty() {
            return Err(AgentError::NoToken);
        }
        let addr = listen_address(addr);
        let bind_err = |source| AgentError::Bind { addr: addr.clone(), source };
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs().map_err(bind_err)?.collect();
        let listener = TcpListener::bind(&addrs[..]).map_err(bind_err)?;
        let local = listener.local_addr().map_err(bind_err)?;
        if !local.ip().is_loopback() {
            tracing::warn!(
                %local,
                "the agent listens on a non-loopback address: anyone who can reach it and knows the token can \
                 make this machine measure; the traffic is not encrypted"
            );
        }
        let shared = Arc::new(Shared { config, measuring: Mutex::new(()), connections: AtomicUsize::new(0) });
        Ok(Agent { listener, shared })
    }

    /// The address actually bound (the real port when asked for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the process ends: one thread per connection.
    pub fn serve(self) {
        for conn in self.listener.incoming() {
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    // Out of file descriptors and the like: do not spin.
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let peer = stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
            let shared = Arc::clone(&self.shared);
            let open = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
            if open > shared.config.max_connections {
                shared.connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!(%peer, open, "too many connections; refusing");
                let msg = format!("agent busy: {} connections already open", shared.config.max_connections);
                let _ = write_frame(
                    &mut DeadlineStream::new(&stream, shared.config.io_timeout),
                    &Response::Error { message: msg },
                );
                continue;
            }
            let spawned = std::thread::Builder::new().name(format!("agent-{peer}")).spawn({
                let shared = Arc::clone(&shared);
                move || {
                    tracing::info!(%peer, "connection");
                    shared.handle(&stream, &peer);
                    shared.connections.fetch_sub(1, Ordering::SeqCst);
                    tracing::info!(%peer, "connection closed");
                }
            });
            if let Err(e) = spawned {
                shared.connections.fetch_sub(1, Ordering::SeqCst);
                tracing::warn!("cannot start a connection thread: {e}");
            }
        }
    }
}

impl Shared {
    /// Answers requests on one connection until it closes or misbehaves.
    fn handle(&self, stream: &TcpStream, peer: &str) {
        let timeout = self.config.io_timeout;
        loop {
            let request = read_frame::<Request>(&mut DeadlineStream::new(stream, timeout));
            let (response, keep_open) = match request {
                Ok(req) => self.answer(req, peer),
                Err(ProtocolError::Closed) => return,
                Err(e) => {
                    tracing::warn!(%peer, "bad request: {e}");
                    (Response::Error { message: format!("bad request: {e}") }, false)
                }
            };
            if let Err(e) = write_frame(&mut DeadlineStream::new(stream, timeout), &response) {
                tracing::warn!(%peer, "cannot answer: {e}");
                return;
            }
            if !keep_open {
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    }

    /// The response to one well-formed request, and whether the connection may stay open.
    fn answer(&self, request: Request, peer: &str) -> (Response, bool) {
        if !tokens_match(request.token(), &self.config.token) {
            tracing::warn!(%peer, "wrong token");
            return (Response::Error { message: "wrong token".into() }, false);
        }
        match request {
            Request::Ping { .. } => {
                (Response::Pong { fingerprint: Box::new(Fingerprint::current(1, Vec::new())) }, true)
            }
            Request::Measure { arch, options, .. } => {
                tracing::info!(%peer, arch = %arch.canonical(), ?options, "measure request");
                let response = match self.measure(&arch, &options) {
                    Ok(m) => {
                        tracing::info!(%peer, median_ms = m.stats.median_ms, "measured");
                        Response::Measured(Box::new(m))
                    }
                    Err(message) => {
                        tracing::warn!(%peer, "measurement refused or failed: {message}");
                        Response::Error { message }
                    }
                };
                (response, true)
            }
        }
    }

    fn measure(&self, arch: &Arch, options: &MeasureOptions) -> Result<crate::measure::Measurement, String> {
        options.validate().map_err(|e| e.to_string())?;
        arch.validate().map_err(|e| format!("invalid arch: {e}"))?;
        let need = memory_estimate(arch, options.batch);
        if need > self.config.max_memory_bytes {
            return Err(format!(
                "network too large for this agent: about {} MiB at batch {}, limit {} MiB",
                need >> 20,
                options.batch,
                self.config.max_memory_bytes >> 20
            ));
        }
        // A poisoned lock only means an earlier measurement panicked; the lock itself is fine.
        let _one_at_a_time = self.measuring.lock().unwrap_or_else(|p| p.into_inner());
        tracing::info!(arch = %arch.canonical(), "measuring");
        match catch_unwind(AssertUnwindSafe(|| measure::measure(arch, options, &|_| {}))) {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("the measurement panicked (see the agent's log)".into()),
        }
    }
}

/// Bytes a measurement of `arch` at `batch` needs, roughly: the weights, plus twice the largest
/// activation tensor (input and output of one layer alive together), float32.
pub fn memory_estimate(arch: &Arch, batch: usize) -> u64 {
    let r = u64::from(arch.resolution);
    let s = u64::from(arch.stem_out_size());
    let mut largest = (3 * r * r).max(u64::from(arch.stem_out()) * s * s);
    let mut last = s;
    for l in arch.layers() {
        let (i, o) = (u64::from(l.in_size), u64::from(l.out_size));
        let expanded = u64::from(l.mid_channels) * i * i;
        largest = largest.max(u64::from(l.in_channels) * i * i).max(expanded).max(u64::from(l.out_channels) * o * o);
        last = o;
    }
    largest = largest.max(u64::from(arch.head_channels) * last * last);
    let weights = mnas_space::count(arch).params;
    4 * (weights + 2 * largest * batch as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_default_to_loopback() {
        assert_eq!(listen_address("7878"), "127.0.0.1:7878");
        assert_eq!(listen_address(":0"), "127.0.0.1:0");
        assert_eq!(listen_address("0.0.0.0:9000"), "0.0.0.0:9000");
        assert_eq!(listen_address("[::1]:9000"), "[::1]:9000");
    }

    #[test]
    fn refuses_an_empty_token() {
        assert!(matches!(Agent::bind("127.0.0.1:0", AgentConfig::new("")), Err(AgentError::NoToken)));
    }

    #[test]
    fn memory_estimate_grows_with_resolution_and_batch() {
        let a1 = mnas_space::lookup("mnasnet-a1").unwrap();
        let base = memory_estimate(&a1, 1);
        // A1 at 224: 3.9M weights and a 96x112x112 expansion, about 24 MB in all.
        assert!((15 << 20..40 << 20).contains(&base), "{base}");
        let mut huge = a1.clone();
        huge.resolution = 4096;
        assert!(memory_estimate(&huge, 4096) > 4 << 40);
        assert!(memory_estimate(&a1, 8) > 3 * base);
    }
}
