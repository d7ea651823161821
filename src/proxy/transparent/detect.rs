//! Protocol detection on an intercepted connection: an HTTP/1.x request line, the HTTP/2
//! connection preface, or anything else (opaque).
//!
//! Read-and-replay rather than `MSG_PEEK`: the first bytes are read into a small buffer and
//! handed back in front of the stream by [`Prefixed`], which the HTTP server (any
//! `AsyncRead + AsyncWrite`) or the byte copy then reads as if nothing had been taken. That
//! works the same on a plain socket and inside the inbound mTLS tunnel, where peeking the
//! socket would show ciphertext.
//!
//! HTTP/1 is recognised by a whole request line's shape (`TOKEN SP TARGET SP HTTP/1.`), as
//! Linkerd parses one, not by a method name alone: a binary or text protocol whose first word
//! happens to be `GET` is still opaque unless the line ends like HTTP's. The decision is taken
//! as early as the bytes allow; a request line longer than [`MAX_LINE`] that still looks like
//! one is left to the HTTP server (which answers 414). Nothing within the detect timeout, or
//! the client's end of stream, means opaque with whatever arrived (Linkerd: the server speaks
//! first, as MySQL's and SMTP's do; `opaque_ports` skips the wait for those).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::proxy::h2::PREFACE;
use crate::telemetry::intercept::Protocol;
use crate::wire::headers::is_tchar;

/// The longest method token we wait for.
const MAX_METHOD: usize = 24;
/// Bytes read at most before deciding; a request line still open here is taken for HTTP/1.
pub const MAX_LINE: usize = 8 * 1024;

/// What the bytes so far say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Decided.
    Is(Protocol),
    /// Consistent with HTTP so far: read more.
    NeedMore,
}

/// Reads from `stream` until the protocol is known, `timeout` passes or the client ends its
/// side. Returns the protocol and the bytes read (to be replayed with [`Prefixed`]).
pub async fn detect<S>(stream: &mut S, timeout: Duration) -> io::Result<(Protocol, Vec<u8>)>
where
    S: AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(256);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if buf.len() >= MAX_LINE {
            return Ok((Protocol::Http1, buf));
        }
        // Grows to MAX_LINE at most: each read asks for what is left of it, in steps.
        let want = (buf.len().max(256)).min(MAX_LINE - buf.len());
        let start = buf.len();
        buf.resize(start + want, 0);
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf[start..])).await;
        let n = match read {
            Err(_) => {
                buf.truncate(start);
                return Ok((Protocol::Opaque, buf));
            }
            Ok(Err(error)) => return Err(error),
            Ok(Ok(n)) => n,
        };
        buf.truncate(start + n);
        if n == 0 {
            return Ok((Protocol::Opaque, buf));
        }
        if let Verdict::Is(protocol) = classify(&buf) {
            return Ok((protocol, buf));
        }
    }
}

/// What `bytes` (the connection's first bytes) are.
fn classify(bytes: &[u8]) -> Verdict {
    if bytes.len() >= PREFACE.len() && bytes.starts_with(PREFACE) {
        return Verdict::Is(Protocol::H2);
    }
    if PREFACE.starts_with(bytes) {
        return Verdict::NeedMore;
    }
    request_line(bytes)
}

/// `TOKEN SP TARGET SP HTTP/1.D`, decided as soon as a byte breaks it or the version digit is
/// there.
fn request_line(bytes: &[u8]) -> Verdict {
    const OPAQUE: Verdict = Verdict::Is(Protocol::Opaque);
    let method = bytes.iter().take_while(|b| is_tchar(**b)).count();
    if method > MAX_METHOD || (method == 0 && !bytes.is_empty()) {
        return OPAQUE;
    }
    let rest = &bytes[method..];
    let Some((&first, rest)) = rest.split_first() else {
        return Verdict::NeedMore;
    };
    if first != b' ' {
        return OPAQUE;
    }
    let target = rest.iter().take_while(|b| b.is_ascii_graphic()).count();
    let rest = &rest[target..];
    let Some((&first, rest)) = rest.split_first() else {
        return Verdict::NeedMore;
    };
    if target == 0 || first != b' ' {
        return OPAQUE;
    }
    const VERSION: &[u8] = b"HTTP/1.";
    let shared = rest.len().min(VERSION.len());
    if rest[..shared] != VERSION[..shared] {
        return OPAQUE;
    }
    match rest.get(VERSION.len()) {
        None => Verdict::NeedMore,
        Some(digit) if digit.is_ascii_digit() => Verdict::Is(Protocol::Http1),
        Some(_) => OPAQUE,
    }
}

/// A stream with bytes already read from it put back in front: reads return `prefix` first,
/// then the stream's own bytes; writes go straight to the stream. The prefix's buffer is
/// freed once it has been read.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    read: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `inner`, with `prefix` to be read first.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            read: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.read < this.prefix.len() {
            let left = &this.prefix[this.read..];
            let n = left.len().min(buf.remaining());
            buf.put_slice(&left[..n]);
            this.read += n;
            if this.read == this.prefix.len() {
                this.prefix = Vec::new();
                this.read = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn request_lines_prefaces_and_other_bytes() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\n"),
            Verdict::Is(Protocol::Http1)
        );
        assert_eq!(
            classify(b"OPTIONS * HTTP/1.0\r\n"),
            Verdict::Is(Protocol::Http1)
        );
        assert_eq!(classify(PREFACE), Verdict::Is(Protocol::H2));
        assert_eq!(classify(b"PRI * HTTP/2"), Verdict::NeedMore);
        assert_eq!(classify(b"GET"), Verdict::NeedMore);
        assert_eq!(classify(b"GET /a"), Verdict::NeedMore);
        assert_eq!(classify(b"GET /a HT"), Verdict::NeedMore);
        assert_eq!(classify(b"GET /a HTTP/1."), Verdict::NeedMore);
        // Looks like a method, but the line is not HTTP's.
        assert_eq!(classify(b"GET /a FOO"), Verdict::Is(Protocol::Opaque));
        assert_eq!(
            classify(b"SET key value\r\n"),
            Verdict::Is(Protocol::Opaque)
        );
        assert_eq!(
            classify(b"\x16\x03\x01\x02\x00"),
            Verdict::Is(Protocol::Opaque)
        );
        assert_eq!(
            classify(b"\x00\x00\x00\x05ping"),
            Verdict::Is(Protocol::Opaque)
        );
        assert_eq!(classify(b"GET  / HTTP/1.1"), Verdict::Is(Protocol::Opaque));
    }

    /// Feeds `chunks` one write at a time (with the writer waiting between them, so each
    /// arrives in a read of its own) and detects.
    async fn detect_chunks(chunks: &[&[u8]], timeout: Duration) -> (Protocol, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        let owned: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let writer = tokio::spawn(async move {
            for chunk in owned {
                client.write_all(&chunk).await.expect("write");
                client.flush().await.expect("flush");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client
        });
        let detected = detect(&mut server, timeout).await.expect("detect");
        drop(writer.await);
        detected
    }

    #[tokio::test]
    async fn a_preface_split_over_reads_is_h2_and_is_replayed_whole() {
        let (protocol, prefix) = detect_chunks(
            &[b"PRI * HT", b"TP/2.0\r\n\r", b"\nSM\r\n\r\nrest"],
            DEADLINE,
        )
        .await;
        assert_eq!(protocol, Protocol::H2);
        assert_eq!(&prefix[..PREFACE.len()], PREFACE);
        let (protocol, prefix) =
            detect_chunks(&[b"G", b"ET /x HTT", b"P/1.1\r\nHost: a\r\n\r\n"], DEADLINE).await;
        assert_eq!(protocol, Protocol::Http1);
        assert!(prefix.starts_with(b"GET /x HTTP/1.1"));
    }

    const DEADLINE: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn silence_until_the_timeout_is_opaque() {
        let (_client, mut server) = tokio::io::duplex(1024);
        let started = std::time::Instant::now();
        let (protocol, prefix) = detect(&mut server, Duration::from_millis(100))
            .await
            .expect("detect");
        assert_eq!(protocol, Protocol::Opaque);
        assert!(prefix.is_empty());
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(started.elapsed() < DEADLINE);
    }

    #[tokio::test]
    async fn a_partial_request_line_at_the_timeout_or_eof_is_opaque_with_its_bytes() {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET /slow").await.expect("write");
        let (protocol, prefix) = detect(&mut server, Duration::from_millis(100))
            .await
            .expect("detect");
        assert_eq!(
            (protocol, prefix.as_slice()),
            (Protocol::Opaque, &b"GET /slow"[..])
        );
        client.write_all(b"x").await.expect("write");
        drop(client);
        let (protocol, prefix) = detect(&mut server, DEADLINE).await.expect("detect");
        assert_eq!((protocol, prefix.as_slice()), (Protocol::Opaque, &b"x"[..]));
    }

    #[tokio::test]
    async fn prefixed_replays_then_reads_the_stream() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b" world").await.expect("write");
        drop(client);
        let mut stream = Prefixed::new(b"hello".to_vec(), server);
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.expect("read");
        assert_eq!(all, b"hello world");
    }
}
