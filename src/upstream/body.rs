//! The response body coming back from an endpoint. HTTP/1.1: read straight off the connection
//! by [`super::h1::BodyReader`], which returns the connection to the pool at the exact moment
//! the body ends cleanly, and never after an error. HTTP/2: hyper's stream body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::h1::BodyReader;
use crate::wire::BoxError;

/// A streamed upstream response body. Dropped before its end (client gone, idle timeout),
/// it takes its HTTP/1.1 connection down with it: a half-read response cannot be reused.
pub struct UpstreamBody {
    inner: Inner,
}

enum Inner {
    /// Nothing may follow the head (HEAD, 204, 304, 101, Content-Length: 0).
    Empty,
    H1(BodyReader),
    H2(Incoming),
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner {
            Inner::Empty => "empty",
            Inner::H1(_) => "http1",
            Inner::H2(_) => "h2",
        };
        f.debug_struct("UpstreamBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    pub(crate) fn empty() -> Self {
        Self {
            inner: Inner::Empty,
        }
    }

    pub(crate) fn h1(reader: BodyReader) -> Self {
        Self {
            inner: Inner::H1(reader),
        }
    }

    pub(crate) fn h2(body: Incoming) -> Self {
        Self {
            inner: Inner::H2(body),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().inner {
            Inner::Empty => Poll::Ready(None),
            Inner::H1(reader) => reader.poll_frame(cx),
            Inner::H2(body) => Pin::new(body)
                .poll_frame(cx)
                .map_err(|e| Box::new(e) as BoxError),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Empty => true,
            Inner::H1(reader) => reader.is_end_stream(),
            Inner::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Empty => SizeHint::with_exact(0),
            Inner::H1(reader) => reader.size_hint(),
            Inner::H2(body) => body.size_hint(),
        }
    }
}
