//! The response body coming back from an endpoint: it returns its HTTP/1.1 connection to the
//! pool at the exact moment the body ends cleanly, and never after an error.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use super::connect::H1;
use super::pool;
use crate::endpoint::EndpointState;

/// An HTTP/1.1 connection waiting for its response body to end before it can be reused.
pub(crate) type PendingRelease = (Arc<EndpointState>, H1);

pin_project! {
    /// A streamed upstream response body. Dropped before its end (client gone, idle timeout),
    /// it takes its connection down with it: a half-read HTTP/1.1 response cannot be reused.
    pub struct UpstreamBody {
        #[pin]
        inner: Incoming,
        release: Option<PendingRelease>,
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("pooled", &self.release.is_some())
            .finish_non_exhaustive()
    }
}

impl UpstreamBody {
    pub(crate) fn new(inner: Incoming, release: Option<PendingRelease>) -> Self {
        let mut body = Self { inner, release };
        // A body that is already complete (Content-Length: 0) returns its connection now: the
        // server may never poll it.
        if body.inner.is_end_stream() {
            body.release_now();
        }
        body
    }

    fn release_now(&mut self) {
        if let Some((endpoint, sender)) = self.release.take() {
            pool::release_h1(&endpoint, sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        let done = match &frame {
            None => true,
            Some(Ok(_)) => this.inner.is_end_stream(),
            Some(Err(_)) => {
                // Bad framing or a reset mid-body: the connection must never carry another
                // request. Dropping the sender lets hyper close it.
                this.release.take();
                false
            }
        };
        if done {
            if let Some((endpoint, sender)) = this.release.take() {
                pool::release_h1(&endpoint, sender);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
