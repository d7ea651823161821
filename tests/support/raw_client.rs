//! A raw-bytes HTTP/1.x client: sends exactly the bytes a test gives (malformed, ambiguous,
//! pipelined) and parses the answer minimally, with a deadline on every read.
//!
//! Blocking std sockets on purpose: usable from any test, and the servers it talks to run on
//! their own threads.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::DEADLINE;

/// How long [`raw_request`] watches for the server closing the connection after a response.
/// A server that closes does so right after writing, so a passing check returns at once; only
/// keep-alive answers pay the full wait (use [`RawConn`] to avoid it).
pub const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One parsed response.
#[derive(Debug, Clone, Default)]
pub struct RawResponse {
    /// 0 when the connection ended before a complete status line and header section.
    pub status: u16,
    pub reason: String,
    /// In order, names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// De-chunked when the response was chunked.
    pub body: Vec<u8>,
    /// Whether the body was complete according to its framing (`content-length`, chunked).
    pub complete: bool,
    /// Whether the server closed (or reset) the connection after or during this response.
    pub closed: bool,
}

impl RawResponse {
    /// The first value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Connects, sends `bytes`, reads one response and reports whether the server then closed the
/// connection (watching for [`CLOSE_GRACE`]). Panics if no response is complete by [`DEADLINE`].
pub fn raw_request(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    let mut conn = RawConn::connect(addr);
    // A server may reject and close before reading everything; what it answered still counts.
    let _ = conn.send(bytes);
    let mut resp = conn.read_response();
    if !resp.closed {
        resp.closed = conn.wait_closed(CLOSE_GRACE);
    }
    resp
}

/// A raw connection for several requests (keep-alive, pipelining, interim responses).
pub struct RawConn {
    stream: TcpStream,
    /// Bytes read but not yet consumed by a parsed response.
    buf: Vec<u8>,
    eof: bool,
    deadline: Duration,
}

impl RawConn {
    /// Panics if the connect fails: the helpers only talk to servers the test started.
    pub fn connect(addr: SocketAddr) -> Self {
        // Plain `connect`, not `connect_timeout`: the latter reports an RST that arrives just
        // after the handshake as a connect error, and servers that reset at once are a case
        // tests need to see as "connected, then reset". Loopback connects never hang.
        let stream = TcpStream::connect(addr).expect("raw connect");
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            buf: Vec::new(),
            eof: false,
            deadline: DEADLINE,
        }
    }

    /// Overrides how long `read_response` waits for a complete response.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Writes all of `bytes`.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Closes the write side (the server sees EOF).
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    /// Reads the next response (a `1xx` interim one included).
    pub fn read_response(&mut self) -> RawResponse {
        self.read(false)
    }

    /// Reads the next response as the answer to a HEAD request (no body whatever it says).
    pub fn read_head_response(&mut self) -> RawResponse {
        self.read(true)
    }

    /// Whether the server closes the connection within `grace`; bytes arriving meanwhile are
    /// kept for the next `read_response`.
    pub fn wait_closed(&mut self, grace: Duration) -> bool {
        let end = Instant::now() + grace;
        while !self.eof {
            if !self.fill(end) {
                break;
            }
        }
        self.eof
    }

    fn read(&mut self, head_only: bool) -> RawResponse {
        let end = Instant::now() + self.deadline;
        let head_len = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            if self.eof {
                return RawResponse {
                    closed: true,
                    ..RawResponse::default()
                };
            }
            self.fill_or_panic(end);
        };
        let head: Vec<u8> = self.buf.drain(..head_len).collect();
        let mut resp = parse_head(&head);
        let no_body = head_only || resp.status < 200 || resp.status == 204 || resp.status == 304;
        let chunked = resp
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let length = resp
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok());
        resp.complete = if no_body {
            true
        } else if chunked {
            self.read_chunked(&mut resp.body, end)
        } else if let Some(n) = length {
            self.read_exact_or_eof(n, &mut resp.body, end)
        } else {
            while !self.eof {
                self.fill_or_panic(end);
            }
            resp.body = std::mem::take(&mut self.buf);
            true
        };
        resp.closed = self.eof && self.buf.is_empty();
        resp
    }

    /// Appends up to `n` bytes to `out`; false if the connection ended first.
    fn read_exact_or_eof(&mut self, n: usize, out: &mut Vec<u8>, end: Instant) -> bool {
        while self.buf.len() < n && !self.eof {
            self.fill_or_panic(end);
        }
        let take = n.min(self.buf.len());
        out.extend(self.buf.drain(..take));
        take == n
    }

    fn read_line(&mut self, end: Instant) -> Option<String> {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..i + 2).collect();
                return Some(String::from_utf8_lossy(&line[..i]).into_owned());
            }
            if self.eof {
                return None;
            }
            self.fill_or_panic(end);
        }
    }

    fn read_chunked(&mut self, out: &mut Vec<u8>, end: Instant) -> bool {
        loop {
            let Some(line) = self.read_line(end) else {
                return false;
            };
            let size_text = line.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size_text, 16) else {
                return false;
            };
            if size == 0 {
                // Trailer section: header lines until an empty one.
                loop {
                    match self.read_line(end) {
                        Some(l) if l.is_empty() => return true,
                        Some(_) => {}
                        None => return false,
                    }
                }
            }
            if !self.read_exact_or_eof(size, out, end) {
                return false;
            }
            let mut crlf = Vec::new();
            if !self.read_exact_or_eof(2, &mut crlf, end) || crlf != b"\r\n" {
                return false;
            }
        }
    }

    fn fill_or_panic(&mut self, end: Instant) {
        if !self.fill(end) {
            panic!(
                "raw_client: no complete response by the deadline; buffered so far: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Reads once; false if `end` passed first. EOF and resets set `eof`.
    fn fill(&mut self, end: Instant) -> bool {
        let now = Instant::now();
        if now >= end {
            return false;
        }
        let _ = self.stream.set_read_timeout(Some(end - now));
        let mut tmp = [0u8; 16 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(0) => self.eof = true,
            Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => self.eof = true,
        }
        true
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(head: &[u8]) -> RawResponse {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let _version = parts.next();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let reason = parts.next().unwrap_or("").to_string();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    RawResponse {
        status,
        reason,
        headers,
        ..RawResponse::default()
    }
}
