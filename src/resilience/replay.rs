//! Request bodies that a retry (or hedge) can send again, byte-exact, from a bounded buffer.
//!
//! The downstream body is read once, by whichever attempt is furthest ahead; every chunk is kept
//! while the total stays within `buffer`, so each attempt's body view replays the kept chunks
//! and then continues from the shared source. Nothing is read ahead of the first attempt (the
//! client's upload streams at the backend's pace), and a body over the limit streams on with the
//! buffer dropped: such a request can no longer be retried once its body started moving.
//!
//! The state sits behind a `Mutex` taken only inside `poll_frame` (never across an await).
//! Views waiting on the source are all woken when a chunk arrives, because the source itself
//! remembers only the last waker that polled it.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::wire::{Body, BoxError};

#[derive(Debug)]
struct State {
    source: Body,
    /// Data chunks read so far, while within the limit.
    chunks: Vec<Bytes>,
    /// Trailers, once read (kept whatever the size: they are small).
    trailers: Option<HeaderMap>,
    kept: u64,
    limit: u64,
    /// The buffer was dropped: the body is (or announced it will be) larger than `limit`.
    overflowed: bool,
    /// Chunks taken from the source in total (also after overflow).
    taken: usize,
    /// The source returned its end.
    done: bool,
    /// The source failed; every view fails from there.
    failed: bool,
    waiters: Vec<Waker>,
}

/// One request body shared by the attempts of one request.
#[derive(Debug, Clone)]
pub struct Replay {
    state: Arc<Mutex<State>>,
    hint: SizeHint,
}

impl Replay {
    /// Wraps `source`, keeping up to `limit` bytes for replays. A body that announces more
    /// (`content-length`) is never buffered at all.
    pub fn new(source: Body, limit: u64) -> Self {
        let hint = source.size_hint();
        let overflowed = hint.lower() > limit;
        let done = source.is_end_stream();
        Self {
            state: Arc::new(Mutex::new(State {
                source,
                chunks: Vec::new(),
                trailers: None,
                kept: 0,
                limit,
                overflowed,
                taken: 0,
                done,
                failed: false,
                waiters: Vec::new(),
            })),
            hint,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a new attempt can get the whole body: nothing was read yet, or all that was
    /// read is kept.
    pub fn replayable(&self) -> bool {
        let state = self.lock();
        !state.failed && (state.taken == 0 || !state.overflowed)
    }

    /// A fresh view of the whole body for one attempt.
    pub fn attempt(&self) -> Body {
        View {
            replay: self.clone(),
            next: 0,
            sent_bytes: 0,
            finished: false,
        }
        .boxed_unsync()
    }
}

/// One attempt's pass over the body.
#[derive(Debug)]
struct View {
    replay: Replay,
    /// Index of the next chunk this view yields (chunks are numbered by `State::taken`).
    next: usize,
    sent_bytes: u64,
    finished: bool,
}

/// The error a view reports when it fell behind a body that no longer fits the buffer.
#[derive(Debug, thiserror::Error)]
#[error("request body over the replay buffer cannot be sent again")]
pub struct NotReplayable;

impl HttpBody for View {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(None);
        }
        let replay = this.replay.clone();
        let mut state = replay.lock();
        if state.failed {
            return Poll::Ready(Some(Err("request body failed".into())));
        }
        if this.next < state.taken {
            // Behind the source: replay a kept chunk, or fail when it was dropped.
            if state.overflowed {
                return Poll::Ready(Some(Err(Box::new(NotReplayable))));
            }
            let chunk = state.chunks[this.next].clone();
            this.next += 1;
            this.sent_bytes += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if state.done {
            this.finished = true;
            return Poll::Ready(state.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        let polled = Pin::new(&mut state.source).poll_frame(cx);
        match polled {
            Poll::Pending => {
                if !state.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                    state.waiters.push(cx.waker().clone());
                }
                Poll::Pending
            }
            Poll::Ready(None) => {
                state.done = true;
                this.finished = true;
                wake_all(&mut state);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                state.failed = true;
                wake_all(&mut state);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_data() {
                    Ok(data) => {
                        state.taken += 1;
                        state.kept += data.len() as u64;
                        if !state.overflowed && state.kept > state.limit {
                            state.overflowed = true;
                            state.chunks = Vec::new();
                        }
                        if !state.overflowed {
                            state.chunks.push(data.clone());
                        }
                        this.next = state.taken;
                        this.sent_bytes += data.len() as u64;
                        Frame::data(data)
                    }
                    Err(frame) => {
                        // Trailers end the body.
                        if let Some(trailers) = frame.trailers_ref() {
                            state.trailers = Some(trailers.clone());
                        }
                        state.done = true;
                        this.finished = true;
                        frame
                    }
                };
                wake_all(&mut state);
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.finished {
            return true;
        }
        let state = self.replay.lock();
        self.next >= state.taken
            && state.trailers.is_none()
            && (state.done || state.source.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        // What the client announced, minus what this view already yielded.
        match self.replay.hint.exact() {
            Some(total) => SizeHint::with_exact(total.saturating_sub(self.sent_bytes)),
            None => SizeHint::default(),
        }
    }
}

fn wake_all(state: &mut State) {
    for waker in state.waiters.drain(..) {
        waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    /// A body yielding `parts` as separate data frames, without a size hint.
    struct Chunks(std::collections::VecDeque<Bytes>);

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunked(parts: &[&'static [u8]]) -> Body {
        Chunks(parts.iter().map(|p| Bytes::from_static(p)).collect()).boxed_unsync()
    }

    async fn collect(body: Body) -> Result<Bytes, BoxError> {
        Ok(body.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn every_attempt_gets_the_whole_body() {
        let replay = Replay::new(chunked(&[b"ab", b"cd", b"ef"]), 100);
        assert_eq!(collect(replay.attempt()).await.expect("first"), "abcdef");
        assert!(replay.replayable());
        assert_eq!(collect(replay.attempt()).await.expect("second"), "abcdef");
    }

    #[tokio::test]
    async fn a_partly_read_body_continues_from_the_source() {
        let replay = Replay::new(chunked(&[b"ab", b"cd", b"ef"]), 100);
        let mut first = replay.attempt();
        let frame = first.frame().await.expect("frame").expect("ok");
        assert_eq!(frame.into_data().expect("data"), "ab");
        drop(first);
        assert_eq!(collect(replay.attempt()).await.expect("retry"), "abcdef");
    }

    #[tokio::test]
    async fn over_the_limit_is_not_replayable() {
        let replay = Replay::new(chunked(&[b"abcd", b"efgh"]), 6);
        assert!(replay.replayable());
        assert_eq!(collect(replay.attempt()).await.expect("first"), "abcdefgh");
        assert!(!replay.replayable());
        assert!(collect(replay.attempt()).await.is_err());
        let announced = Full::new(Bytes::from_static(b"0123456789"))
            .map_err(|never| match never {})
            .boxed_unsync();
        let replay = Replay::new(announced, 4);
        assert!(replay.replayable(), "nothing read yet");
        assert_eq!(replay.attempt().size_hint().exact(), Some(10));
    }

    #[tokio::test]
    async fn empty_bodies_end_at_once() {
        let replay = Replay::new(crate::wire::empty_body(), 10);
        assert!(replay.attempt().is_end_stream());
    }
}
