//! `max_body_bytes` for HTTP/2 request bodies that stream without a declared length.
//!
//! HTTP/1 bodies are counted by [`super::GuardedIo`] as they arrive, and a declared
//! `Content-Length` is checked up front; an HTTP/2 body without one is only known frame by frame.
//! The service marks such a request with a [`BodyLimit`] extension, the handler wraps the body
//! with [`apply`], and a body that goes over fails the upstream request; the service then
//! answers 413 instead of the 502 that failure would otherwise become.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

use crate::upstream::{self, BoxError};

/// The limit of one request body, and whether it was exceeded.
#[derive(Debug, Clone)]
pub struct BodyLimit {
    max: u64,
    tripped: Arc<AtomicBool>,
}

impl BodyLimit {
    /// A limit of `max` bytes.
    pub fn new(max: u64) -> Self {
        Self {
            max,
            tripped: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the body went over the limit.
    pub fn tripped(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }
}

/// Why the body was cut.
#[derive(Debug, thiserror::Error)]
#[error("request body over max_body_bytes")]
pub struct BodyTooLarge;

/// Wraps `body` with the request's [`BodyLimit`], if it has one.
pub fn apply(body: upstream::Body, extensions: &http::Extensions) -> upstream::Body {
    match extensions.get::<BodyLimit>() {
        Some(limit) => Limited {
            inner: body,
            left: limit.max,
            limit: limit.clone(),
        }
        .boxed_unsync(),
        None => body,
    }
}

pin_project! {
    struct Limited {
        #[pin]
        inner: upstream::Body,
        left: u64,
        limit: BodyLimit,
    }
}

impl Body for Limited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            let len = data.map_or(0, |d| d.len() as u64);
            if len > *this.left {
                this.limit.tripped.store(true, Ordering::SeqCst);
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
            }
            *this.left -= len;
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

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full};

    use super::*;

    fn body(n: usize) -> upstream::Body {
        Full::new(Bytes::from(vec![b'x'; n]))
            .map_err(|never| match never {})
            .boxed_unsync()
    }

    #[tokio::test]
    async fn bodies_over_the_limit_fail_and_trip() {
        let limit = BodyLimit::new(10);
        let mut ext = http::Extensions::new();
        ext.insert(limit.clone());
        assert!(apply(body(10), &ext).collect().await.is_ok());
        assert!(!limit.tripped());
        assert!(apply(body(11), &ext).collect().await.is_err());
        assert!(limit.tripped());
        let none = http::Extensions::new();
        assert!(apply(body(11), &none).collect().await.is_ok());
    }
}
