//! Our own downstream HTTP/1.1 server session: one task per connection, no hyper.
//!
//! Why not hyper's `server::conn::http1`: every request head was parsed twice (the strict
//! check of `hygiene::head`, then hyper's own codec on the bytes `GuardedIo` released), and
//! hyper's dispatcher moved the request body through a channel to the service. Here the
//! strict check *is* the parser ([`hygiene::head::parse`](super::hygiene::head::parse) builds
//! the `http::Request` from the same httparse pass, its fields slices of the head's bytes),
//! the request body is read off the socket by whoever polls it ([`RequestBody`], in the
//! request's own task), and the response is written here ([`encode`]: hyper's framing rules),
//! its head and first body piece in one write when the body has data at once.
//!
//! What hyper's server did and this keeps: keep-alive and pipelining (requests answered one at
//! a time, in order; a bad head after good ones is refused after their answers), HTTP/1.0
//! (closed after its answer unless the response says `keep-alive`, which ours never do),
//! `Expect: 100-continue` (the interim answer when the body is first read), upgrades (the 101
//! written, then the socket with what it buffered goes to the tunnel: [`crate::wire::upgrade`]),
//! graceful shutdown (a connection waiting for a head closes; one serving a request answers
//! it with `connection: close`), `date`, HEAD/1xx/204/304 without body, `connection: close`
//! on a connection's last answer. `GuardedIo` still owns every timer (first byte, header,
//! body, keep-alive), the refusals, the slow-reader watch and parking: a session ends when
//! the connection parks, and the socket waits in `server::serve` holding no buffer.
//!
//! A request body left unread when its answer is written (the handler answered early) is
//! discarded if it has all arrived; otherwise the connection closes after the answer, as the
//! rest of it may still be on its way.
//!
//! Re-measure: `python3 benches/load/breakdown.py --switchyard target/release/switchyard`
//! against a build of the previous commit (the "hyper HTTP/1 codec" and "hyper (other)" rows
//! are the ones this module emptied on the HTTP/1.1 side).

mod body;
pub(crate) mod encode;

use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

pub use body::RequestBody;

use self::body::Source;
use self::encode::{Exchange, Framing};
use super::body::ProxyBody;
use super::hygiene::head::Framing as RequestFraming;
use super::hygiene::io::NextHead;
use super::hygiene::{GuardedIo, Limits};
use super::request_body::DownstreamBody;
use super::woken::Woken;
use crate::wire::shutdown::stopped;
use crate::wire::upgrade;

/// Body pieces up to this size are copied behind the head (or chunk line) and go out in one
/// plain write; larger ones are written vectored, without a copy.
const COPY_MAX: usize = 4096;

/// Serves HTTP/1 requests on `io` with `service` until the connection ends, parks or upgrades.
/// Returns the socket if the session ended because it parked (and we are not draining).
pub(crate) async fn serve<S, F, Fut>(
    io: GuardedIo<S>,
    limits: &Limits,
    shutdown: &mut watch::Receiver<bool>,
    mut service: F,
) -> Option<GuardedIo<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnMut(Request<DownstreamBody>) -> Fut,
    Fut: Future<Output = Response<ProxyBody>>,
{
    let slot = Arc::new(Slot(Mutex::new(Some(io))));
    let source: Arc<dyn Source> = Arc::clone(&slot) as Arc<dyn Source>;
    let mut wbuf = Vec::new();
    // The last response's header map, emptied for the next request (hyper does the same).
    let mut spare = None;
    // One wait on the shutdown signal for the whole session, polled only when it signals.
    let mut signal = shutdown.clone();
    let mut stop = pin!(Woken::new(stopped(&mut signal)));
    loop {
        let next = tokio::select! {
            biased;
            next = poll_fn(|cx| slot.poll_with(|io| io.poll_head(cx, &mut spare))) => next,
            () = stop.as_mut() => break,
        };
        let (head, request) = match next {
            Ok(NextHead::Request(head, request)) => (head, request),
            Ok(NextHead::End) => break,
            Err(error) => {
                tracing::debug!(%error, "connection ended with an error");
                break;
            }
        };
        let exchange = Exchange::new(request.method(), head.minor);
        // RFC 9110 10.1.1: an HTTP/1.0 client cannot be waiting for a 100.
        let expect_continue = head.expect_continue && head.minor == 1;
        let body = match head.framing {
            RequestFraming::None | RequestFraming::Length(0) => DownstreamBody::Empty,
            RequestFraming::Length(n) => DownstreamBody::Http1(RequestBody::new(
                Arc::clone(&source),
                Some(n),
                expect_continue,
            )),
            RequestFraming::Chunked => {
                DownstreamBody::Http1(RequestBody::new(Arc::clone(&source), None, expect_continue))
            }
        };
        let mut request = request.map(|()| body);
        let upgrade = head.upgrade.then(|| {
            let (pending, on_upgrade) = upgrade::pending();
            request.extensions_mut().insert(on_upgrade);
            pending
        });
        let response = service(request).await;
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let mut keep_alive = !head.close && !*shutdown.borrow();
        match write_response(&slot, &mut wbuf, response, exchange, &mut keep_alive).await {
            Ok(headers) => spare = Some(headers),
            Err(error) => {
                tracing::debug!(%error, "connection ended with an error");
                break;
            }
        }
        if switching {
            let (Some(pending), Some(mut io)) = (upgrade, slot.take()) else {
                break;
            };
            io.switch_protocols();
            pending.fulfill(Box::new(io));
            return None;
        }
        if !keep_alive {
            slot.close_reading();
            break;
        }
        let had_body = !matches!(
            head.framing,
            RequestFraming::None | RequestFraming::Length(0)
        );
        if had_body && !slot.discard_body().await {
            break;
        }
    }
    let mut io = slot.take()?;
    if io.is_parked() && !*shutdown.borrow() {
        return Some(io);
    }
    // Writes a refusal of ours (such as a 408 for a head that never ended), bounded like any
    // write to a client that may not read, then closes.
    let _ = tokio::time::timeout(limits.body_read_timeout, io.shutdown()).await;
    None
}

/// Writes one response: its head, then its body in the head's framing; returns its header map
/// for the next request. An error means the connection cannot carry anything more (the client
/// is gone, or the body failed or did not match its length).
async fn write_response<S>(
    slot: &Slot<S>,
    wbuf: &mut Vec<u8>,
    response: Response<ProxyBody>,
    exchange: Exchange,
    keep_alive: &mut bool,
) -> io::Result<HeaderMap>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut parts, mut body) = response.into_parts();
    let sent = |parts: http::response::Parts| {
        let mut headers = parts.headers;
        headers.clear();
        headers
    };
    let hint = (!body.is_end_stream()).then(|| body.size_hint());
    wbuf.clear();
    let framing = encode::head(wbuf, &mut parts, hint, exchange, keep_alive);
    let mut left = match framing {
        Framing::Length(0) => {
            // Nothing of the body goes out (HEAD, 204, 304, 1xx, empty): hyper drops it too.
            // Dropped before the last write, here and below: the body holds the request's
            // guards (in flight, the access-log record), which must be released by the time the
            // client has the whole answer.
            drop(body);
            slot.write_all(&[wbuf]).await?;
            slot.flush().await?;
            return Ok(sent(parts));
        }
        Framing::Length(n) => Some(n),
        Framing::Chunked | Framing::Close => None,
    };
    let chunked = framing == Framing::Chunked;
    loop {
        // Data ready now goes out with what is buffered (the head) in one write; otherwise
        // the head goes out first, so the client sees it while the body streams.
        let frame = match poll_fn(|cx| Poll::Ready(Pin::new(&mut body).poll_frame(cx))).await {
            Poll::Ready(frame) => frame,
            Poll::Pending => {
                if !wbuf.is_empty() {
                    slot.write_all(&[wbuf]).await?;
                    wbuf.clear();
                }
                slot.flush().await?;
                poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            }
        };
        let data = match frame {
            None => {
                if left.is_some_and(|n| n > 0) {
                    return Err(io::Error::other(
                        "response body ended before its content-length",
                    ));
                }
                if chunked {
                    wbuf.extend_from_slice(b"0\r\n\r\n");
                }
                drop(body);
                slot.write_all(&[wbuf]).await?;
                slot.flush().await?;
                return Ok(sent(parts));
            }
            Some(Err(error)) => return Err(io::Error::other(error)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) if !data.is_empty() => data,
                // Trailers are not sent on HTTP/1 (nothing asks for them: gRPC needs HTTP/2).
                _ => continue,
            },
        };
        if let Some(n) = left.as_mut() {
            if data.len() as u64 > *n {
                return Err(io::Error::other(
                    "response body longer than its content-length",
                ));
            }
            *n -= data.len() as u64;
        }
        let done = left == Some(0) || body.is_end_stream();
        let tail: &[u8] = match (chunked, done) {
            (true, true) => b"\r\n0\r\n\r\n",
            (true, false) => b"\r\n",
            (false, _) => b"",
        };
        if chunked {
            encode::chunk_size(wbuf, data.len());
        }
        if done {
            drop(body);
            write_piece(slot, wbuf, &data, tail).await?;
            slot.flush().await?;
            return Ok(sent(parts));
        }
        write_piece(slot, wbuf, &data, tail).await?;
    }
}

/// Writes what `wbuf` holds, then `data`, then `tail`: small data copied behind `wbuf` into
/// one write, large data vectored.
async fn write_piece<S>(
    slot: &Slot<S>,
    wbuf: &mut Vec<u8>,
    data: &Bytes,
    tail: &[u8],
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if data.len() <= COPY_MAX {
        wbuf.extend_from_slice(data);
        wbuf.extend_from_slice(tail);
        slot.write_all(&[wbuf]).await?;
    } else {
        slot.write_all(&[wbuf, data, tail]).await?;
    }
    wbuf.clear();
    Ok(())
}

/// The connection's socket, shared by the session (writes) and the request body (reads); see
/// `body`'s module doc. `None` once the session gave it away (upgrade) or ended.
struct Slot<S>(Mutex<Option<GuardedIo<S>>>);

impl<S> Slot<S> {
    fn poll_with<R>(
        &self,
        f: impl FnOnce(&mut GuardedIo<S>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let Ok(mut guard) = self.0.try_lock() else {
            return Poll::Ready(Err(io::Error::other("connection in use")));
        };
        match guard.as_mut() {
            Some(io) => f(io),
            None => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn take(&self) -> Option<GuardedIo<S>> {
        self.0.try_lock().ok().and_then(|mut guard| guard.take())
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Slot<S> {
    /// Writes all of `parts`, in order (vectored where the socket supports it).
    async fn write_all(&self, parts: &[&[u8]]) -> io::Result<()> {
        let mut index = 0;
        let mut offset = 0;
        poll_fn(|cx| loop {
            while index < parts.len() && offset == parts[index].len() {
                index += 1;
                offset = 0;
            }
            let Some(first) = parts.get(index) else {
                return Poll::Ready(Ok(()));
            };
            let mut slices = [io::IoSlice::new(&[]); 3];
            slices[0] = io::IoSlice::new(&first[offset..]);
            let mut count = 1;
            for part in parts.iter().skip(index + 1).take(slices.len() - 1) {
                slices[count] = io::IoSlice::new(part);
                count += 1;
            }
            let written = ready!(
                self.poll_with(|io| { Pin::new(io).poll_write_vectored(cx, &slices[..count]) })
            )?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let mut written = written;
            while written > 0 && index < parts.len() {
                let room = parts[index].len() - offset;
                if written >= room {
                    written -= room;
                    index += 1;
                    offset = 0;
                } else {
                    offset += written;
                    written = 0;
                }
            }
        })
        .await
    }

    async fn flush(&self) -> io::Result<()> {
        poll_fn(|cx| self.poll_with(|io| Pin::new(io).poll_flush(cx))).await
    }

    /// The answer was the connection's last: nothing more is read.
    fn close_reading(&self) {
        let _ = self.poll_with(|io| {
            io.close_reading();
            Poll::Ready(Ok(()))
        });
    }

    /// Discards what has arrived of a request body the handler did not read to its end;
    /// whether the body is over (else the connection must close: more of it may come).
    async fn discard_body(&self) -> bool {
        poll_fn(|cx| {
            self.poll_with(|io| loop {
                if !io.body_unread() {
                    return Poll::Ready(Ok(true));
                }
                match io.poll_body(cx) {
                    Poll::Ready(Ok(Some(_))) => {}
                    Poll::Ready(Ok(None)) => return Poll::Ready(Ok(true)),
                    Poll::Ready(Err(_)) | Poll::Pending => return Poll::Ready(Ok(false)),
                }
            })
        })
        .await
        .unwrap_or(false)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Source for Slot<S> {
    fn poll_body(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        self.poll_with(|io| io.poll_body(cx))
    }

    fn poll_interim(
        &self,
        cx: &mut Context<'_>,
        bytes: &[u8],
        written: &mut usize,
    ) -> Poll<io::Result<()>> {
        self.poll_with(|io| {
            while *written < bytes.len() {
                let n = ready!(Pin::new(&mut *io).poll_write(cx, &bytes[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            Poll::Ready(Ok(()))
        })
    }
}
