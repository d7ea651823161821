//! Storing a response while it streams to the client: each data frame is passed on at once and
//! a clone of its `Bytes` (a reference count, not a copy) is kept; at the end the chunks become
//! one buffer and go into the store. Past `max_object` it stops keeping anything and just
//! streams; on an error, trailers, a length mismatch or a client that goes away, nothing is
//! stored. Whatever happens, the coalescing flight ends with it, releasing the waiters — after
//! the store, so they find the response.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use pin_project_lite::pin_project;

use super::coalesce::Flight;
use super::store::Stored;
use super::Cache;
use crate::wire::BoxError;
use crate::wire::ProxyBody;

/// What is being stored and where.
pub struct Pending {
    /// The cache to store into.
    pub cache: Arc<Cache>,
    /// The URL key.
    pub key: String,
    /// The stored response minus its body.
    pub template: Stored,
    /// The declared `Content-Length`, checked against what arrived.
    pub expected: Option<u64>,
    /// The coalescing claim, if this request leads one.
    pub flight: Option<Flight>,
}

/// Wraps `body` so that it is stored once complete.
pub fn store_while_streaming(body: ProxyBody, pending: Pending) -> ProxyBody {
    let state = State {
        pending,
        chunks: Vec::new(),
        size: 0,
    };
    // An empty body (204, `content-length: 0`) is never polled: store it now.
    if body.is_end_stream() {
        state.finish();
        return body;
    }
    Tee {
        inner: body,
        state: Some(state),
    }
    .boxed_unsync()
}

/// Collects `body` whole if it stays within `limit` bytes (the background refresh, where no
/// client is waiting for the bytes).
pub async fn collect(mut body: ProxyBody, limit: u64) -> Option<Bytes> {
    let mut chunks = Vec::new();
    let mut size = 0u64;
    // Bounded by `limit`: each pass adds a frame's bytes or ends.
    while let Some(frame) = body.frame().await {
        let data = frame.ok()?.into_data().ok()?;
        size += data.len() as u64;
        if size > limit {
            return None;
        }
        chunks.push(data);
    }
    Some(concat(chunks, size))
}

fn concat(mut chunks: Vec<Bytes>, size: u64) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(usize::try_from(size).unwrap_or(0));
    for chunk in chunks {
        out.extend_from_slice(&chunk);
    }
    out.freeze()
}

struct State {
    pending: Pending,
    chunks: Vec<Bytes>,
    size: u64,
}

impl State {
    fn finish(self) {
        let State {
            pending,
            chunks,
            size,
        } = self;
        if pending.expected.is_some_and(|n| n != size) {
            return;
        }
        let stored = Stored {
            body: concat(chunks, size),
            ..pending.template
        };
        pending.cache.store().put(&pending.key, Arc::new(stored));
        drop(pending.flight);
    }
}

pin_project! {
    struct Tee {
        #[pin]
        inner: ProxyBody,
        state: Option<State>,
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let frame = ready!(this.inner.as_mut().poll_frame(cx));
        match &frame {
            Some(Ok(f)) => match (f.data_ref(), this.state.as_mut()) {
                (Some(data), Some(state)) => {
                    state.size += data.len() as u64;
                    if state.size > state.pending.cache.config().max_object {
                        // Too big to keep: stream the rest untouched.
                        *this.state = None;
                    } else {
                        state.chunks.push(data.clone());
                    }
                }
                // Trailers are not stored, so a response with them is not either.
                (None, _) => *this.state = None,
                (Some(_), None) => {}
            },
            Some(Err(_)) => *this.state = None,
            None => {}
        }
        // hyper stops polling once `is_end_stream` says so, so the end is checked here too.
        if frame.is_none() || this.inner.is_end_stream() {
            if let Some(state) = this.state.take() {
                state.finish();
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
