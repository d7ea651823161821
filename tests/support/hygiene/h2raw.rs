//! Hand-made HTTP/2 frames for requests the `h2` client refuses to send (connection-specific
//! headers, missing pseudo-headers) and for floods. HPACK: literal fields without indexing and
//! without Huffman coding (RFC 7541 6.2.2), so no encoder state is needed.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One frame: 9-byte header, then `payload`.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 5.1); `first` holds the pattern bits.
fn int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields.
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The usual pseudo-headers of a GET to `authority`/`path`.
pub fn get(authority: &'static str, path: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", authority),
        (":path", path),
    ]
}

/// A raw HTTP/2 connection: preface and an empty SETTINGS sent.
pub struct RawH2 {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// A frame as received.
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl RawH2 {
    pub fn connect(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.write_all(PREFACE).expect("preface");
        stream
            .write_all(&frame(SETTINGS, 0, 0, &[]))
            .expect("settings");
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends a complete request head (HEADERS with END_HEADERS and END_STREAM).
    pub fn request(&mut self, stream: u32, fields: &[(&str, &str)]) {
        let f = frame(HEADERS, END_HEADERS | END_STREAM, stream, &block(fields));
        self.send(&f).expect("send headers");
    }

    /// The next frame, or `None` at EOF/reset or when `deadline` passes.
    pub fn next(&mut self, deadline: Duration) -> Option<Frame> {
        let end = Instant::now() + deadline;
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let f: Vec<u8> = self.buf.drain(..9 + len).collect();
                    return Some(Frame {
                        kind: f[3],
                        flags: f[4],
                        stream: u32::from_be_bytes([f[5], f[6], f[7], f[8]]) & 0x7fff_ffff,
                        payload: f[9..].to_vec(),
                    });
                }
            }
            let now = Instant::now();
            if now >= end {
                return None;
            }
            self.stream.set_read_timeout(Some(end - now)).ok()?;
            let mut tmp = [0u8; 16384];
            match self.stream.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return None
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// Reads frames until one on `stream` ends it (HEADERS with END_STREAM, DATA with
    /// END_STREAM, RST_STREAM) or the connection ends; returns the `:status` if a response
    /// head came, and whether the stream was reset.
    pub fn outcome(&mut self, stream: u32, deadline: Duration) -> StreamOutcome {
        let mut out = StreamOutcome::default();
        let started = Instant::now();
        while let Some(f) = self.next(deadline) {
            if f.kind == GOAWAY {
                out.goaway = true;
            }
            if f.stream != stream {
                continue;
            }
            match f.kind {
                HEADERS => {
                    // A fresh decoder per response: our server answers with literal or static
                    // table entries for :status; look for the static-table indexes 8..=14.
                    if let Some(&b) = f.payload.first() {
                        out.status = match b & 0x7f {
                            8 => Some(200),
                            9 => Some(204),
                            10 => Some(206),
                            11 => Some(304),
                            12 => Some(400),
                            13 => Some(404),
                            14 => Some(500),
                            _ => out.status.or(Some(0)),
                        };
                    }
                    if f.flags & END_STREAM != 0 {
                        return out;
                    }
                }
                RST_STREAM => {
                    out.reset = true;
                    return out;
                }
                _ if f.flags & END_STREAM != 0 => return out,
                _ => {}
            }
        }
        // `next` gives up at the deadline too: a silent server is not a closing one.
        out.closed = started.elapsed() < deadline;
        out
    }
}

/// How a raw stream ended.
#[derive(Debug, Default)]
pub struct StreamOutcome {
    /// `Some(0)`: a response head whose status is not a static-table entry.
    pub status: Option<u16>,
    pub reset: bool,
    pub goaway: bool,
    pub closed: bool,
}
