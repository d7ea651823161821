//! Response bodies the proxy sends downstream.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::runtime::InFlightGuard;
use crate::upstream::BoxError;

/// Every downstream response body: a streamed upstream body or a small generated one.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A fixed body (error pages).
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A streamed upstream body that keeps its endpoint's in-flight count up until the last byte
/// (or an abort): for least-request balancing a request is in flight until its body is done.
pub fn upstream(body: Incoming, guard: InFlightGuard) -> ProxyBody {
    Guarded {
        inner: body,
        _guard: guard,
    }
    .map_err(BoxError::from)
    .boxed_unsync()
}

pin_project! {
    struct Guarded {
        #[pin]
        inner: Incoming,
        _guard: InFlightGuard,
    }
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
