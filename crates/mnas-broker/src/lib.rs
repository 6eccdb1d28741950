//! mnas-broker: work queues on Redis Streams with consumer groups, shared by the search (which
//! dispatches trials), workers (which train them) and device agents (which measure latency).
//!
//! Delivery is at least once: an entry stays pending in its group until a consumer acknowledges
//! it; a consumer that dies leaves its entries pending, and another takes them over once they
//! have been idle longer than a lease (XAUTOCLAIM). A live consumer keeps its lease by claiming
//! its own entry again (XCLAIM ... JUSTID resets the idle time). Recording exactly once is the
//! receiver's job (results carry their key). Entries that cannot be served go to a dead-letter
//! stream with the reason.

pub mod test_server;

use std::collections::BTreeMap;
use std::time::Duration;

pub use redis::Connection;
use redis::Value;

/// Redis 6.2 brought XAUTOCLAIM.
const MIN_VERSION: (u32, u32) = (6, 2);

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker URL `{0}`: {1}")]
    Url(String, String),
    #[error("cannot reach the broker at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} does not speak Redis ({reason})")]
    NotRedis { url: String, reason: String },
    #[error("the broker at {url} refused the credentials ({reason}): give the password (and user) in the URL or MNAS_BROKER_URL")]
    Auth { url: String, reason: String },
    #[error("the broker at {url} runs Redis {version}; mnas needs 6.2 or newer (XAUTOCLAIM)")]
    TooOld { url: String, version: String },
    #[error("broker key `{key}` holds something other than a stream: another program uses this key")]
    WrongType { key: String },
    #[error("broker: {0}")]
    Command(String),
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// A broker URL as a user may print it: the password replaced (`user:pass@` and `?pass=`).
fn redact(url: &str) -> String {
    let url = match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    };
    match url.split_once('?') {
        Some((base, query)) => {
            let q: Vec<String> =
                query
                    .split('&')
                    .map(|kv| {
                        if kv.starts_with("pass=") || kv.starts_with("password=") {
                            "pass=***".into()
                        } else {
                            kv.into()
                        }
                    })
                    .collect();
            format!("{base}?{}", q.join("&"))
        }
        None => url,
    }
}

/// A connected broker.
#[derive(Clone)]
pub struct Broker {
    client: redis::Client,
    label: String,
    pub version: String,
}

fn classify(label: &str, e: redis::RedisError) -> BrokerError {
    // The client's parse errors span lines (one per unexpected byte): one line for an error message.
    let text = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    let code = e.code().unwrap_or_default().to_string();
    let auth = matches!(e.kind(), redis::ErrorKind::AuthenticationFailed);
    if auth || code == "WRONGPASS" || code == "NOAUTH" || text.contains("WRONGPASS") || text.contains("NOAUTH") {
        return BrokerError::Auth { url: label.into(), reason: text };
    }
    if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() {
        if text.contains("Connection refused") || text.contains("No such file") || e.is_connection_refusal() {
            return BrokerError::Unreachable { url: label.into(), reason: text };
        }
        if e.is_timeout() {
            return BrokerError::Unreachable { url: label.into(), reason: text };
        }
    }
    if code == "WRONGTYPE" {
        return BrokerError::WrongType { key: String::new() };
    }
    match e.kind() {
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType => {
            BrokerError::NotRedis { url: label.into(), reason: text }
        }
        _ if e.is_io_error() => BrokerError::NotRedis { url: label.into(), reason: text },
        _ => BrokerError::Command(text),
    }
}

/// `7.0.15` -> (7, 0).
fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

impl Broker {
    /// Connects to `url` (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS,
    /// `unix:///path/to/socket[?pass=...]`) and checks it is a Redis new enough for mnas.
    pub fn connect(url: &str) -> Result<Broker> {
        let label = redact(url);
        let scheme_ok = ["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|s| url.starts_with(s));
        if !scheme_ok {
            return Err(BrokerError::Url(
                label,
                "expected redis://HOST:PORT, rediss://HOST:PORT or unix:///PATH".into(),
            ));
        }
        let client = redis::Client::open(url).map_err(|e| BrokerError::Url(label.clone(), e.to_string()))?;
        let mut con = client.get_connection_with_timeout(Duration::from_secs(5)).map_err(|e| classify(&label, e))?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut con).map_err(|e| classify(&label, e))?;
        let version =
            info.lines().find_map(|l| l.strip_prefix("redis_version:")).map(|v| v.trim().to_string()).ok_or_else(
                || BrokerError::NotRedis { url: label.clone(), reason: "INFO names no redis_version".into() },
            )?;
        if major_minor(&version) < MIN_VERSION {
            return Err(BrokerError::TooOld { url: label, version });
        }
        Ok(Broker { client, label, version })
    }

    /// The URL with the password hidden.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// A new connection (one per thread: a blocking read holds its connection).
    pub fn connection(&self) -> Result<Connection> {
        let con =
            self.client.get_connection_with_timeout(Duration::from_secs(5)).map_err(|e| classify(&self.label, e))?;
        // Blocking reads wait up to their BLOCK time; this bounds everything else.
        con.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| classify(&self.label, e))?;
        con.set_write_timeout(Some(Duration::from_secs(30))).map_err(|e| classify(&self.label, e))?;
        Ok(con)
    }

    fn err(&self, key: &str, e: redis::RedisError) -> BrokerError {
        match classify(&self.label, e) {
            BrokerError::WrongType { .. } => BrokerError::WrongType { key: key.to_string() },
            other => other,
        }
    }
}

/// One stream entry: its id, its fields as text, and how often it was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: String,
    pub fields: BTreeMap<String, String>,
    pub deliveries: u64,
}

impl Entry {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

/// `[id, [field, value, ...]]` entries of XRANGE / XREAD replies.
fn entries(v: &Value) -> Vec<Entry> {
    let Value::Array(items) = v else { return Vec::new() };
    items
        .iter()
        .filter_map(|item| {
            let Value::Array(pair) = item else { return None };
            let id = text(pair.first()?)?;
            let mut fields = BTreeMap::new();
            if let Some(Value::Array(kv)) = pair.get(1) {
                for chunk in kv.chunks(2) {
                    if let (Some(k), Some(v)) = (chunk.first().and_then(text), chunk.get(1).and_then(text)) {
                        fields.insert(k, v);
                    }
                }
            }
            Some(Entry { id, fields, deliveries: 1 })
        })
        .collect()
}

/// The entries of the (single) stream in an XREAD / XREADGROUP reply.
fn read_reply(v: &Value) -> Vec<Entry> {
    match v {
        Value::Array(streams) => streams
            .iter()
            .flat_map(|s| match s {
                Value::Array(pair) => pair.get(1).map(entries).unwrap_or_default(),
                _ => Vec::new(),
            })
            .collect(),
        Value::Map(streams) => streams.iter().flat_map(|(_, v)| entries(v)).collect(),
        _ => Vec::new(),
    }
}

/// A work queue: a stream read by one consumer group.
#[derive(Debug, Clone)]
pub struct Queue {
    pub stream: String,
    pub group: String,
}

impl Queue {
    pub fn new(stream: impl Into<String>, group: impl Into<String>) -> Queue {
        Queue { stream: stream.into(), group: group.into() }
    }

    /// The dead-letter stream of this queue.
    pub fn dead_letters(&self) -> String {
        format!("{}:dead", self.stream)
    }

    /// Creates the stream and the group if they do not exist yet.
    pub fn ensure(&self, broker: &Broker, con: &mut Connection) -> Result<()> {
        let r: redis::RedisResult<Value> =
            redis::cmd("XGROUP").arg("CREATE").arg(&self.stream).arg(&self.group).arg("0").arg("MKSTREAM").query(con);
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(broker.err(&self.stream, e)),
        }
    }

    /// Appends an entry (the stream is capped near `max_len` entries); returns its id.
    pub fn push(
        &self,
        broker: &Broker,
        con: &mut Connection,
        fields: &[(&str, String)],
        max_len: usize,
    ) -> Result<String> {
        append(broker, con, &self.stream, fields, max_len)
    }

    /// The next entry for `consumer`: first one whose consumer went silent for longer than
    /// `lease` (taken over), else a new one, waiting up to `block`.
    pub fn take(
        &self,
        broker: &Broker,
        con: &mut Connection,
        consumer: &str,
        lease: Duration,
        block: Duration,
    ) -> Result<Option<Entry>> {
        let claimed: Value = redis::cmd("XAUTOCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(consumer)
            .arg(lease.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(1)
            .query(con)
            .map_err(|e| broker.err(&self.stream, e))?;
        if let Value::Array(parts) = &claimed {
            if let Some(mut e) = parts.get(1).map(entries).and_then(|v| v.into_iter().next()) {
                e.deliveries = self.deliveries(broker, con, &e.id)?;
                tracing::info!(stream = %self.stream, id = %e.id, deliveries = e.deliveries, "took over an entry");
                return Ok(Some(e));
            }
        }
        let read: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.group)
            .arg(consumer)
            .arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block.as_millis().max(1) as u64)
            .arg("STREAMS")
            .arg(&self.stream)
            .arg(">")
            .query(con)
            .map_err(|e| broker.err(&self.stream, e))?;
        Ok(read_reply(&read).into_iter().next())
    }

    /// How often entry `id` was delivered (0 when it is not pending).
    pub fn deliveries(&self, broker: &Broker, con: &mut Connection, id: &str) -> Result<u64> {
        let v: Value = redis::cmd("XPENDING")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(id)
            .arg(id)
            .arg(1)
            .query(con)
            .map_err(|e| broker.err(&self.stream, e))?;
        if let Value::Array(rows) = v {
            if let Some(Value::Array(row)) = rows.first() {
                if let Some(Value::Int(n)) = row.get(3) {
                    return Ok(*n as u64);
                }
            }
        }
        Ok(0)
    }

    /// Renews `consumer`'s lease on entry `id` (its idle time restarts). False when the entry
    /// is no longer pending for it (taken over, or acknowledged).
    pub fn heartbeat(&self, broker: &Broker, con: &mut Connection, consumer: &str, id: &str) -> Result<bool> {
        let v: Value = redis::cmd("XCLAIM")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(consumer)
            .arg(0)
            .arg(id)
            .arg("JUSTID")
            .query(con)
            .map_err(|e| broker.err(&self.stream, e))?;
        Ok(matches!(v, Value::Array(ref ids) if !ids.is_empty()))
    }

    pub fn ack(&self, broker: &Broker, con: &mut Connection, id: &str) -> Result<()> {
        redis::cmd("XACK")
            .arg(&self.stream)
            .arg(&self.group)
            .arg(id)
            .query::<Value>(con)
            .map(|_| ())
            .map_err(|e| broker.err(&self.stream, e))
    }

    /// Moves an entry to the dead-letter stream with the reason, and acknowledges it.
    pub fn dead_letter(&self, broker: &Broker, con: &mut Connection, entry: &Entry, reason: &str) -> Result<()> {
        let mut fields: Vec<(&str, String)> = vec![
            ("reason", reason.to_string()),
            ("entry", entry.id.clone()),
            ("deliveries", entry.deliveries.to_string()),
        ];
        // Keep what the entry said, cut to a size that never blows up the dead-letter stream.
        let summary: String = entry.fields.iter().map(|(k, v)| format!("{k}={v}; ")).collect();
        fields.push(("fields", summary.chars().take(4096).collect()));
        append(broker, con, &self.dead_letters(), &fields, 10_000)?;
        tracing::warn!(stream = %self.stream, id = %entry.id, %reason, "dead-lettered");
        self.ack(broker, con, &entry.id)
    }

    /// Entries of the queue (all, pending or not) in id order.
    pub fn range(&self, broker: &Broker, con: &mut Connection) -> Result<Vec<Entry>> {
        range(broker, con, &self.stream)
    }
}

/// Appends to any stream, capped near `max_len` entries.
pub fn append(
    broker: &Broker,
    con: &mut Connection,
    stream: &str,
    fields: &[(&str, String)],
    max_len: usize,
) -> Result<String> {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream).arg("MAXLEN").arg("~").arg(max_len).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(v);
    }
    cmd.query::<String>(con).map_err(|e| broker.err(stream, e))
}

/// Entries of `stream` after `after` (exclusive), waiting up to `block` for the first.
pub fn read_after(
    broker: &Broker,
    con: &mut Connection,
    stream: &str,
    after: &str,
    block: Duration,
) -> Result<Vec<Entry>> {
    let v: Value = redis::cmd("XREAD")
        .arg("COUNT")
        .arg(256)
        .arg("BLOCK")
        .arg(block.as_millis().max(1) as u64)
        .arg("STREAMS")
        .arg(stream)
        .arg(after)
        .query(con)
        .map_err(|e| broker.err(stream, e))?;
    Ok(read_reply(&v))
}

/// Every entry of `stream`, in pages.
pub fn range(broker: &Broker, con: &mut Connection, stream: &str) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut start = "-".to_string();
    loop {
        let v: Value = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query(con)
            .map_err(|e| broker.err(stream, e))?;
        let page = entries(&v);
        let Some(last) = page.last().map(|e| e.id.clone()) else { break };
        let full = page.len() == 1000;
        out.extend(page);
        if !full {
            break;
        }
        start = format!("({last}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_redacted_and_checked() {
        assert_eq!(redact("redis://:secret@10.0.0.1:6379/0"), "redis://***@10.0.0.1:6379/0");
        assert_eq!(redact("redis://user:secret@h:1"), "redis://***@h:1");
        assert_eq!(redact("unix:///tmp/r.sock"), "unix:///tmp/r.sock");
        assert_eq!(redact("unix:///tmp/r.sock?db=1&pass=x"), "unix:///tmp/r.sock?db=1&pass=***");
        for bad in ["http://h:1", "h:6379", "", "redis//h"] {
            match Broker::connect(bad) {
                Err(BrokerError::Url(_, _)) => {}
                Err(e) => panic!("{bad}: {e}"),
                Ok(_) => panic!("{bad}: connected"),
            }
        }
        assert_eq!(major_minor("7.0.15"), (7, 0));
        assert!(major_minor("6.0.9") < MIN_VERSION && major_minor("6.2.0") >= MIN_VERSION);
    }
}
