//! The request body of an HTTP/1 request, read off the connection by whoever polls it (the
//! upstream request, in the request's own task): no channel and no copy between the socket
//! and the upstream write, as for upstream response bodies (`upstream::h1::BodyReader`).
//!
//! The connection's socket is shared between the session (which writes the response) and the
//! body (which reads the request) through [`Source`]: both run in the same task and never at
//! the same time, so its lock is never contended; it is taken with `try_lock`, so a mistake
//! would fail the body instead of hanging the task.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::wire::BoxError;

/// What a request body reads through: the session's socket.
pub(crate) trait Source: Send + Sync {
    /// The next piece of the body, decoded (`None`: it ended).
    fn poll_body(&self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>>;

    /// Writes `bytes[*written..]` (the `100 Continue`), advancing `written`.
    fn poll_interim(
        &self,
        cx: &mut Context<'_>,
        bytes: &[u8],
        written: &mut usize,
    ) -> Poll<io::Result<()>>;
}

/// The interim response to `Expect: 100-continue`, written when the body is first asked for
/// (RFC 9110 10.1.1: the client may wait for it before sending the body). A request answered
/// without its body being read gets none, and the connection closes after the answer.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// An HTTP/1 request body (one with framing: `Content-Length` above 0 or chunked).
pub struct RequestBody {
    source: Arc<dyn Source>,
    /// `Content-Length` bytes still to come; `None` for chunked.
    remaining: Option<u64>,
    /// Bytes of [`CONTINUE`] written, while it is owed.
    interim: Option<usize>,
    done: bool,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("remaining", &self.remaining)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl RequestBody {
    pub(crate) fn new(source: Arc<dyn Source>, length: Option<u64>, expect_continue: bool) -> Self {
        Self {
            source,
            remaining: length,
            interim: expect_continue.then_some(0),
            done: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(written) = this.interim.as_mut() {
            if let Err(error) = ready!(this.source.poll_interim(cx, CONTINUE, written)) {
                this.done = true;
                return Poll::Ready(Some(Err(Box::new(error))));
            }
            this.interim = None;
        }
        match ready!(this.source.poll_body(cx)) {
            Ok(Some(data)) => {
                if let Some(remaining) = this.remaining.as_mut() {
                    *remaining = remaining.saturating_sub(data.len() as u64);
                    this.done = *remaining == 0;
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Ok(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Err(error) => {
                this.done = true;
                Poll::Ready(Some(Err(Box::new(error))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
