//! The reading side of our own HTTP/1 server (`proxy::h1`): request heads parsed once (the
//! strict check and the parse are one pass, [`head::parse`]) and request bodies decoded,
//! straight from `GuardedIo`'s buffer, under `GuardedIo`'s timers and refusals.

use std::future::Future;
use std::io;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use super::{GuardedIo, Phase};
use crate::proxy::hygiene::chunked::{ChunkError, Chunked};
use crate::proxy::hygiene::head::{self, Framing, Head};
use crate::proxy::hygiene::Reject;

/// Most body bytes read from the socket at once.
const BODY_READ_MAX: usize = 64 * 1024;

/// What [`GuardedIo::poll_head`] found.
#[allow(
    clippy::large_enum_variant,
    reason = "returned once per request and taken apart at once; a box would cost an allocation"
)]
pub enum NextHead {
    /// A request head that passed every check, and the request it carries (without body).
    Request(Head, Request<()>),
    /// No more requests on this session: the connection ended, timed out, was refused (the
    /// refusal is written at shutdown), or parked ([`GuardedIo::is_parked`]).
    End,
}

impl<T: AsyncRead + AsyncWrite + Unpin> GuardedIo<T> {
    /// Waits for the next request head, with the first-byte, header, keep-alive and park
    /// timers. The request's header map is `spare` (emptied) when there is one.
    pub fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        spare: &mut Option<HeaderMap>,
    ) -> Poll<io::Result<NextHead>> {
        loop {
            if self.parked {
                return Poll::Ready(Ok(NextHead::End));
            }
            // A body left unread, or not HTTP/1 any more: nothing to parse.
            if !matches!(self.phase, Phase::Head) {
                return Poll::Ready(Ok(NextHead::End));
            }
            if !self.inbuf.is_empty() {
                match head::locate(&self.inbuf, &self.limits) {
                    Ok(Some(end)) => {
                        let bytes = self.inbuf.split_to(end).freeze();
                        let headers = spare.take().unwrap_or_default();
                        match head::parse(&bytes, &self.limits, headers) {
                            Ok((head, request)) => {
                                self.accept_head(&head);
                                return Poll::Ready(Ok(NextHead::Request(head, request)));
                            }
                            Err(reject) => {
                                let _ = self.refuse_head(reject);
                                return Poll::Ready(Ok(NextHead::End));
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(reject) => {
                        let _ = self.refuse_head(reject);
                        return Poll::Ready(Ok(NextHead::End));
                    }
                }
            }
            if self.eof {
                // A partial head followed by EOF is dropped: nothing complete to answer.
                self.phase = Phase::Closed;
                self.inbuf.clear();
                return Poll::Ready(Ok(NextHead::End));
            }
            let read = self.read_more(cx);
            ready!(self.settle_read(cx, read))?;
        }
    }

    /// The phase after an accepted head: its body, then what follows the message.
    fn accept_head(&mut self, head: &Head) {
        self.heads += 1;
        self.head_started = None;
        self.waiting_since = None;
        let after = if head.close {
            super::After::Closed
        } else {
            super::After::Head
        };
        self.phase = match head.framing {
            Framing::None | Framing::Length(0) => after.phase(),
            Framing::Length(n) => Phase::Length(n, after),
            Framing::Chunked => Phase::Chunked(
                Box::new(Chunked::new(
                    self.limits.max_body_bytes,
                    self.limits.max_header_bytes,
                )),
                after,
            ),
        };
    }

    /// The next piece of the current request's body (`None`: it ended), decoded, with the
    /// body timer and the strict chunk grammar. A refusal (broken chunks, over
    /// `max_body_bytes`, `body_read_timeout`) is answered at once if the request has no
    /// answer yet, and the read fails with the [`Reject`] inside its error.
    pub fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        loop {
            match &mut self.phase {
                Phase::Length(left, after) => {
                    if !self.inbuf.is_empty() {
                        let n = usize::try_from(*left)
                            .unwrap_or(usize::MAX)
                            .min(self.inbuf.len());
                        *left -= n as u64;
                        if *left == 0 {
                            self.phase = after.phase();
                        }
                        self.waiting_since = None;
                        return Poll::Ready(Ok(Some(self.inbuf.split_to(n).freeze())));
                    }
                }
                Phase::Chunked(chunked, after) => {
                    if !self.inbuf.is_empty() {
                        let left = chunked.data_left();
                        if left > 0 {
                            let n = usize::try_from(left)
                                .unwrap_or(usize::MAX)
                                .min(self.inbuf.len());
                            chunked.took_data(n as u64);
                            self.waiting_since = None;
                            return Poll::Ready(Ok(Some(self.inbuf.split_to(n).freeze())));
                        }
                        match chunked.skip_framing(&self.inbuf) {
                            Ok(used) => {
                                self.inbuf.advance(used);
                                if chunked.is_done() {
                                    self.phase = after.phase();
                                    return Poll::Ready(Ok(None));
                                }
                                // Framing only, or data next: look again.
                                if !self.inbuf.is_empty() {
                                    continue;
                                }
                            }
                            Err(e) => {
                                let reject = match e {
                                    ChunkError::Malformed => Reject::BadChunk,
                                    ChunkError::TooLarge => Reject::BodyTooLarge,
                                };
                                return self.refuse_body(cx, reject).map(|r| r.map(|()| None));
                            }
                        }
                    }
                }
                _ => return Poll::Ready(Ok(None)),
            }
            if self.eof {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            let read = self.read_body(cx);
            ready!(self.settle_read(cx, read))?;
        }
    }

    /// Reads body bytes straight into `inbuf`'s spare room (no copy through a stack chunk as
    /// for heads): they leave it as shared slices.
    /// What one read (of a head or a body) leaves behind: end of stream noted, arrival time
    /// recorded, or, when the read would wait, the timers checked; a timer that ran out may
    /// have changed the phase (or parked), so `Ready(Ok(()))` means "look again".
    fn settle_read(
        &mut self,
        cx: &mut Context<'_>,
        read: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<()>> {
        match read {
            Poll::Ready(Ok(0)) => self.eof = true,
            Poll::Ready(Ok(_)) => self.bytes_arrived(),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return self.on_pending(cx),
        }
        Poll::Ready(Ok(()))
    }

    fn read_body(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let want = match &self.phase {
            Phase::Length(left, _) => usize::try_from(*left).unwrap_or(usize::MAX),
            _ => BODY_READ_MAX,
        }
        .clamp(1, BODY_READ_MAX);
        if self.inbuf.capacity() - self.inbuf.len() < want.min(4096) {
            self.inbuf.reserve(want);
        }
        std::pin::pin!(self.inner.read_buf(&mut self.inbuf)).poll(cx)
    }

    /// Whether the current request's body is still being read (it was not read to its end).
    pub fn body_unread(&self) -> bool {
        matches!(self.phase, Phase::Length(..) | Phase::Chunked(..))
    }

    /// The response to the upgrade request was a 101: from now on bytes pass unchecked (what
    /// is buffered first), for the tunnel.
    pub fn switch_protocols(&mut self) {
        self.phase = Phase::Passthrough;
    }

    /// Nothing more is read on this connection (an answer with `connection: close`).
    pub fn close_reading(&mut self) {
        self.phase = Phase::Closed;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::future::poll_fn;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::time::Duration;

    use proptest::prelude::*;
    use tokio::io::ReadBuf;

    use super::*;
    use crate::proxy::hygiene::{ConnState, Limits};

    /// A client that sends `pieces`, one per read, then closes; what we write is discarded.
    struct Pieces(VecDeque<Vec<u8>>);

    impl AsyncRead for Pieces {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            if let Some(piece) = this.0.front_mut() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                piece.drain(..n);
                if piece.is_empty() {
                    this.0.pop_front();
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Pieces {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Poll::Ready(Ok(buf.len()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn limits() -> Limits {
        Limits {
            max_header_bytes: 4096,
            max_uri_bytes: 1024,
            max_body_bytes: Some(1000),
            first_byte_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
        }
    }

    /// What the server reads of `input` arriving in pieces cut at `cuts`: per request its
    /// method, target, header count and body (or the body's error kind), until no head comes.
    type Read = (String, String, usize, Result<Vec<u8>, String>);

    fn serve(input: &[u8], cuts: &[usize]) -> Vec<Read> {
        let mut pieces = VecDeque::new();
        let mut start = 0;
        for &cut in cuts {
            let cut = cut.clamp(start, input.len());
            pieces.push_back(input[start..cut].to_vec());
            start = cut;
        }
        pieces.push_back(input[start..].to_vec());
        // An empty read is the end of the stream, not an empty piece.
        pieces.retain(|piece| !piece.is_empty());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let mut io = GuardedIo::new(Pieces(pieces), ConnState::new(), Arc::new(limits()));
            let mut seen = Vec::new();
            // Bounded: every request consumes its head.
            for _ in 0..64 {
                let next = poll_fn(|cx| io.poll_head(cx, &mut None)).await;
                let Ok(NextHead::Request(_, request)) = next else {
                    break;
                };
                let mut body = Vec::new();
                let result = loop {
                    match poll_fn(|cx| io.poll_body(cx)).await {
                        Ok(Some(data)) => {
                            assert!(!data.is_empty(), "no empty pieces");
                            body.extend_from_slice(&data);
                        }
                        Ok(None) => break Ok(body),
                        Err(e) => break Err(format!("{:?}", e.kind())),
                    }
                };
                let failed = result.is_err();
                seen.push((
                    request.method().to_string(),
                    request.uri().to_string(),
                    request.headers().len(),
                    result,
                ));
                if failed {
                    break;
                }
            }
            seen
        })
    }

    fn chunked(chunks: &[Vec<u8>], trailer: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in chunks.iter().filter(|c| !c.is_empty()) {
            out.extend_from_slice(format!("{:X};x=y\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        if trailer {
            out.extend_from_slice(b"x-t: v\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    #[test]
    fn pipelined_requests_with_bodies_are_read_in_order() {
        let mut input = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello".to_vec();
        input.extend_from_slice(
            b"POST /b?q=1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        input.extend_from_slice(&chunked(&[b"wor".to_vec(), b"ld".to_vec()], true));
        input.extend_from_slice(b"\r\nGET /c HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nX-A: 2\r\n\r\n");
        let seen = serve(&input, &[]);
        assert_eq!(
            seen,
            vec![
                ("POST".into(), "/a".into(), 2, Ok(b"hello".to_vec())),
                ("POST".into(), "/b?q=1".into(), 2, Ok(b"world".to_vec())),
                ("GET".into(), "/c".into(), 3, Ok(Vec::new())),
            ]
        );
    }

    #[test]
    fn broken_and_oversized_bodies_fail_with_their_refusal() {
        let bad =
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n";
        let seen = serve(bad, &[]);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].3, Err("InvalidData".into()));
        let big = b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3E9\r\n";
        assert_eq!(serve(big, &[])[0].3, Err("InvalidData".into()));
        let short = b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9\r\n\r\nhello";
        assert_eq!(serve(short, &[])[0].3, Err("UnexpectedEof".into()));
        // A refused head ends the session without a request.
        assert!(serve(b"GET / HTTP/1.1\r\n\r\n", &[]).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn any_split_of_the_input_reads_the_same(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 0..4),
            trailer in any::<bool>(),
            length_body in proptest::collection::vec(any::<u8>(), 0..40),
            cuts in proptest::collection::vec(0usize..400, 0..8),
        ) {
            let mut input = b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            input.extend_from_slice(&chunked(&chunks, trailer));
            input.extend_from_slice(
                format!("PUT /x HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", length_body.len()).as_bytes(),
            );
            input.extend_from_slice(&length_body);
            let whole = serve(&input, &[]);
            prop_assert_eq!(whole.len(), 2);
            prop_assert_eq!(&whole[0].3, &Ok(chunks.concat()));
            prop_assert_eq!(&whole[1].3, &Ok(length_body.clone()));
            let mut cuts = cuts;
            cuts.sort_unstable();
            prop_assert_eq!(serve(&input, &cuts), whole.clone());
            let bytewise: Vec<usize> = (1..input.len()).collect();
            prop_assert_eq!(serve(&input, &bytewise), whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            input in proptest::collection::vec(
                proptest::sample::select(b"GET POST / HTTP/1.1\r\n:Host: hContent-Length: 3Transfer-Encoding: chunked0123456789abcdef;\r\n".to_vec()),
                0..300,
            ),
            cuts in proptest::collection::vec(0usize..300, 0..6),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let _ = serve(&input, &cuts);
        }
    }
}
