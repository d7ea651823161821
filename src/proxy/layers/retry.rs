//! [`Retry`]: tries a request again through the layers below it, under the proxy's retry
//! policy (`config::RetryPolicy`: `attempts`, `on`, `statuses`, `backoff`). Answers are
//! classified by `resilience::policy::of_response`; a failed call (the client's error) is retried
//! when `on` has `connect_failure` or `reset`. Only idempotent requests are retried (the proxy
//! also retries requests that certainly reached nobody, which a generic client cannot tell us).
//! Between tries it waits `Retry-After` on a 503, else the proxy's jittered exponential backoff.
//! The retried request is rebuilt from a copy of the first, so its body must be `Clone`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::request::Parts;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

use crate::config::{RetryOn, RetryPolicy};
use crate::resilience::{backoff, policy};

/// Wraps a service in [`Retry`] under one policy.
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: Arc<RetryPolicy>,
}

impl RetryLayer {
    /// Retries under `policy` (its `per_try_timeout`, `buffer` and `budget` are the proxy's
    /// and are not used here).
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            policy: Arc::clone(&self.policy),
        }
    }
}

/// Calls the wrapped service and, while the policy allows, calls it again.
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    policy: Arc<RetryPolicy>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Retry<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RetryFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let repeatable =
            self.policy.attempts > 1 && policy::idempotent(req.method(), req.headers());
        let copy = repeatable.then(|| copy(&req));
        // The ready service answers this call; its clone (not yet ready) the retries, as
        // tower's own retry does.
        let clone = self.inner.clone();
        let call = std::mem::replace(&mut self.inner, clone).call(req);
        RetryFuture {
            state: State::Calling { call },
            service: self.inner.clone(),
            copy,
            policy: Arc::clone(&self.policy),
            tries: 1,
        }
    }
}

/// A copy of `req` without its extensions (they are not `Clone` as a whole).
fn copy<B: Clone>(req: &Request<B>) -> (Parts, B) {
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy.into_parts()
}

pin_project! {
    /// [`Retry`]'s future: the current try, or the pause before the next one.
    pub struct RetryFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        copy: Option<(Parts, B)>,
        policy: Arc<RetryPolicy>,
        tries: u32,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] call: F },
        Pausing { #[pin] sleep: Sleep },
        Waiting,
    }
}

impl<S, B, ResBody> Future for RetryFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    B: Clone,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { call } => {
                    let result = ready!(call.poll(cx));
                    let again = this.copy.is_some() && *this.tries < this.policy.attempts;
                    let pause = match &result {
                        Ok(response) if again => policy::of_response(this.policy, response, false)
                            .map(|_| backoff::retry_after(response.status(), response.headers())),
                        Err(_) if again && retries_errors(this.policy) => Some(None),
                        _ => None,
                    };
                    let Some(wait) = pause else {
                        return Poll::Ready(result);
                    };
                    // The failed answer (its connection, its body) is released before the pause.
                    drop(result);
                    let pause = wait.unwrap_or_else(|| {
                        backoff::delay(this.policy.backoff, *this.tries, fastrand::u64(..))
                    });
                    this.state.set(State::Pausing {
                        sleep: tokio::time::sleep(pause),
                    });
                }
                StateProj::Pausing { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Waiting);
                }
                StateProj::Waiting => {
                    ready!(this.service.poll_ready(cx))?;
                    // Only a request with a copy gets here (`again` above); without one, the
                    // retry is given up and the service's readiness is the answer.
                    let Some((parts, body)) = this.copy.as_ref() else {
                        return Poll::Pending;
                    };
                    let mut req = Request::new(body.clone());
                    *req.method_mut() = parts.method.clone();
                    *req.uri_mut() = parts.uri.clone();
                    *req.version_mut() = parts.version;
                    *req.headers_mut() = parts.headers.clone();
                    *this.tries += 1;
                    let call = this.service.call(req);
                    this.state.set(State::Calling { call });
                }
            }
        }
    }
}

/// Whether a call that failed outright (no response) may be retried under `policy`.
fn retries_errors(policy: &RetryPolicy) -> bool {
    policy.on.contains(&RetryOn::ConnectFailure) || policy.on.contains(&RetryOn::Reset)
}
