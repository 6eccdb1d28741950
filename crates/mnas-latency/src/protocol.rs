//! The wire format between `mnas latency --device` (the pool) and `mnas agent`.
//!
//! One frame = a 4-byte big-endian length, then that many bytes of JSON. The length is checked
//! against [`MAX_FRAME_BYTES`] before anything is allocated, so a garbage or hostile prefix
//! (a 2 GB length) costs nothing. Every frame carries [`VERSION`]; a peer speaking another
//! version gets an error, never a misread request. Requests carry architecture *data* (an
//! [`Arch`]), never code: an agent only ever builds networks from the search space.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use mnas_space::Arch;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::fingerprint::Fingerprint;
use crate::measure::{MeasureOptions, Measurement};

/// Protocol version; bumped on any incompatible change of the frames below.
pub const VERSION: u32 = 1;
/// Largest frame either side reads (1 MiB): an arch or a per-layer measurement is a few KiB.
pub const MAX_FRAME_BYTES: u32 = 1 << 20;

/// What a client asks an agent.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Measure `arch` with `options` on the agent's machine.
    Measure { token: String, arch: Arch, options: MeasureOptions },
    /// Is the agent there, and what device is it?
    Ping { token: String },
}

impl Request {
    pub fn token(&self) -> &str {
        match self {
            Request::Measure { token, .. } | Request::Ping { token } => token,
        }
    }
}

/// The token never reaches a log line.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Measure { arch, options, .. } => f
                .debug_struct("Measure")
                .field("arch", &arch.canonical())
                .field("options", options)
                .finish_non_exhaustive(),
            Request::Ping { .. } => f.write_str("Ping"),
        }
    }
}

/// What an agent answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// The measurement; its fingerprint is the agent's device.
    Measured(Box<Measurement>),
    /// The request was understood but refused or failed (bad token, invalid arch, ...).
    Error { message: String },
    /// The agent's device (threads 1, no cores: a ping pins nothing).
    Pong { fingerprint: Box<Fingerprint> },
}

/// A frame on the wire: the version, then the message.
#[derive(Debug, Serialize, Deserialize)]
struct Frame<T> {
    version: u32,
    message: T,
}

/// Just the version, read first so that another version is reported as such.
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// Why a frame could not be read or written.
#[derive(Debug, Error)]
pub enum ProtocolError {
    /// The peer closed the connection before the first byte of a frame: a clean end.
    #[error("connection closed")]
    Closed,
    #[error("timed out")]
    TimedOut,
    #[error("frame of {len} bytes is larger than the {max}-byte limit (not an mnas agent peer?)")]
    TooLarge { len: u64, max: u32 },
    #[error("empty frame")]
    Empty,
    #[error("malformed message: {0}")]
    Json(String),
    #[error("protocol version {got}, this side speaks {want}")]
    Version { got: u32, want: u32 },
    #[error("{0}")]
    Io(io::Error),
}

impl ProtocolError {
    fn io(e: io::Error) -> ProtocolError {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ProtocolError::TimedOut,
            _ => ProtocolError::Io(e),
        }
    }
}

/// Writes one frame carrying `message`.
pub fn write_frame<T: Serialize>(w: &mut impl Write, message: &T) -> Result<(), ProtocolError> {
    let body = serde_json::to_vec(&Frame { version: VERSION, message })
        .map_err(|e| ProtocolError::Json(format!("cannot encode: {e}")))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&l| l <= MAX_FRAME_BYTES)
        .ok_or(ProtocolError::TooLarge { len: body.len() as u64, max: MAX_FRAME_BYTES })?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).map_err(ProtocolError::io)?;
    w.flush().map_err(ProtocolError::io)
}

/// Reads one frame and decodes its message.
pub fn read_frame<T: for<'de> Deserialize<'de>>(r: &mut impl Read) -> Result<T, ProtocolError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Err(ProtocolError::Closed),
            Ok(0) => return Err(ProtocolError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtocolError::io(e)),
        }
    }
    let len = u32::from_be_bytes(prefix);
    if len > MAX_FRAME_BYTES {
        return Err(ProtocolError::TooLarge { len: len.into(), max: MAX_FRAME_BYTES });
    }
    if len == 0 {
        return Err(ProtocolError::Empty);
    }
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body).map_err(ProtocolError::io)?;
    let version: VersionOnly = serde_json::from_slice(&body).map_err(|e| ProtocolError::Json(e.to_string()))?;
    if version.version != VERSION {
        return Err(ProtocolError::Version { got: version.version, want: VERSION });
    }
    let frame: Frame<T> = serde_json::from_slice(&body).map_err(|e| ProtocolError::Json(e.to_string()))?;
    Ok(frame.message)
}

/// A TCP stream whose reads and writes all end by one deadline: a per-call socket timeout alone
/// lets a peer that trickles one byte at a time hold a connection forever.
pub struct DeadlineStream<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl<'a> DeadlineStream<'a> {
    pub fn new(stream: &'a TcpStream, timeout: Duration) -> DeadlineStream<'a> {
        DeadlineStream { stream, deadline: Instant::now() + timeout }
    }

    fn remaining(&self) -> io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(io::ErrorKind::TimedOut.into())
        } else {
            Ok(left)
        }
    }
}

impl Read for DeadlineStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.set_read_timeout(Some(self.remaining()?))?;
        (&mut &*self.stream).read(buf)
    }
}

impl Write for DeadlineStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.set_write_timeout(Some(self.remaining()?))?;
        (&mut &*self.stream).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&mut &*self.stream).flush()
    }
}

/// Compares two tokens in time that depends only on their lengths, not on where they differ.
pub fn tokens_match(given: &str, expected: &str) -> bool {
    let (a, b) = (given.as_bytes(), expected.as_bytes());
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn encoded<T: Serialize>(message: &T) -> Vec<u8> {
        let mut buf = Vec::new();
        write_frame(&mut buf, message).unwrap();
        buf
    }

    #[test]
    fn request_round_trips() {
        let arch = mnas_space::lookup("mnasnet-small").unwrap();
        let req = Request::Measure { token: "t".into(), arch, options: MeasureOptions::default() };
        let bytes = encoded(&req);
        assert_eq!(u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize, bytes.len() - 4);
        let back: Request = read_frame(&mut Cursor::new(bytes)).unwrap();
        assert_eq!(back, req);
        assert!(!format!("{back:?}").contains("\"t\""), "the token must not be printed");
    }

    #[test]
    fn a_huge_length_is_refused_before_reading_the_body() {
        // 2 GB announced, 3 bytes present: the error must be "too large", not an allocation or a
        // read of the missing body.
        let mut r = Cursor::new(vec![0x80, 0, 0, 0, b'{', b'}', b'x']);
        let e = read_frame::<Request>(&mut r).unwrap_err();
        assert!(matches!(e, ProtocolError::TooLarge { len: 0x8000_0000, .. }), "{e}");
        assert_eq!(r.position(), 4, "nothing past the prefix was read");
    }

    #[test]
    fn bad_frames_are_named() {
        let read = |bytes: Vec<u8>| read_frame::<Request>(&mut Cursor::new(bytes)).unwrap_err();
        assert!(matches!(read(vec![]), ProtocolError::Closed));
        assert!(matches!(read(vec![0, 0]), ProtocolError::Io(_)));
        assert!(matches!(read(vec![0, 0, 0, 0]), ProtocolError::Empty));
        assert!(matches!(read(vec![0, 0, 0, 9, b'x']), ProtocolError::Io(_)));
        let mut junk = vec![0, 0, 0, 5];
        junk.extend_from_slice(b"hello");
        assert!(matches!(read(junk), ProtocolError::Json(_)));
        let other = serde_json::to_vec(&serde_json::json!({"version": 99, "message": {"type": "ping"}})).unwrap();
        let mut frame = (other.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&other);
        assert!(matches!(read(frame), ProtocolError::Version { got: 99, want: VERSION }));
        let unknown = encoded(&serde_json::json!({"type": "run_shell", "cmd": "rm -rf /"}));
        assert!(matches!(read(unknown), ProtocolError::Json(_)));
    }

    #[test]
    fn tokens_compare_exactly() {
        assert!(tokens_match("secret", "secret"));
        for other in ["", "secre", "secreT", "secrets", "xecret"] {
            assert!(!tokens_match(other, "secret"), "{other}");
        }
        assert!(!tokens_match("secret", ""));
    }
}
