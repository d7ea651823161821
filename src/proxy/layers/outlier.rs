//! [`Outlier`]: outlier detection by consecutive failures, for clients wrapped by
//! [`super::Balance`]. Answers are classified as the proxy's health classifies them
//! (`health::attempt_of_status`: any 5xx, and any client error, is a failure); after
//! `consecutive` failures in a row an endpoint is ejected for `base_ejection` × the times it
//! has been ejected, capped at `max_ejection` (the proxy's `outlier_detection` back-off), and
//! never when it is the last endpoint in service. The proxy runs the same rule in the cluster's
//! health task; here the layer owns its counts, so no task is needed.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{now_ms, Endpoints, Picked};
use crate::balance::RoundRobin;
use crate::endpoint::Attempt;

/// When [`Outlier`] ejects an endpoint, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Failures in a row that eject the endpoint; at least 1.
    pub consecutive: u32,
    /// The first ejection's length; each later one is this times the ejection count.
    pub base_ejection: Duration,
    /// The longest ejection.
    pub max_ejection: Duration,
}

impl Default for OutlierPolicy {
    /// The proxy's `outlier_detection` defaults for gateway errors.
    fn default() -> Self {
        Self {
            consecutive: 3,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
        }
    }
}

/// Wraps a client in [`Outlier`], recording into one [`Endpoints`] list.
#[derive(Debug)]
pub struct OutlierLayer<B = RoundRobin> {
    endpoints: Arc<Endpoints<B>>,
    policy: OutlierPolicy,
}

impl<B> OutlierLayer<B> {
    /// Records outcomes into `endpoints` (the same `Arc` the [`super::BalanceLayer`] above
    /// reads), ejecting by `policy`.
    pub fn new(endpoints: Arc<Endpoints<B>>, policy: OutlierPolicy) -> Self {
        assert!(policy.consecutive >= 1, "outlier: consecutive must be >= 1");
        Self { endpoints, policy }
    }
}

impl<B> Clone for OutlierLayer<B> {
    fn clone(&self) -> Self {
        Self {
            endpoints: Arc::clone(&self.endpoints),
            policy: self.policy,
        }
    }
}

impl<S, B> Layer<S> for OutlierLayer<B> {
    type Service = Outlier<S, B>;

    fn layer(&self, inner: S) -> Outlier<S, B> {
        Outlier {
            inner,
            endpoints: Arc::clone(&self.endpoints),
            policy: self.policy,
        }
    }
}

/// Records each answer of the wrapped client against the endpoint [`super::Balance`] picked
/// (the request's [`Picked`]); requests without one pass through unrecorded.
#[derive(Debug)]
pub struct Outlier<S, B = RoundRobin> {
    inner: S,
    endpoints: Arc<Endpoints<B>>,
    policy: OutlierPolicy,
}

impl<S: Clone, B> Clone for Outlier<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            endpoints: Arc::clone(&self.endpoints),
            policy: self.policy,
        }
    }
}

impl<S, B, ReqBody, ResBody> Service<Request<ReqBody>> for Outlier<S, B>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = OutlierFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let picked = req.extensions().get::<Picked>().map(|p| p.index);
        OutlierFuture {
            call: self.inner.call(req),
            record: picked.map(|index| (Arc::clone(&self.endpoints), index)),
            policy: self.policy,
        }
    }
}

pin_project! {
    /// [`Outlier`]'s future: the wrapped client's, recording its outcome when it ends.
    pub struct OutlierFuture<F, B> {
        #[pin]
        call: F,
        record: Option<(Arc<Endpoints<B>>, usize)>,
        policy: OutlierPolicy,
    }
}

impl<F, B, ResBody, E> Future for OutlierFuture<F, B>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.call.poll(cx));
        if let Some((endpoints, index)) = this.record.take() {
            // A client error says nothing finer about the endpoint than "unreachable": the
            // proxy counts connect failures and resets as gateway errors too.
            let attempt = match &result {
                Ok(response) => crate::health::attempt_of_status(response.status()),
                Err(_) => Attempt::GatewayError,
            };
            record(&endpoints, *this.policy, index, attempt);
        }
        Poll::Ready(result)
    }
}

/// Counts `attempt` against endpoint `index` and ejects it when the policy says so.
fn record<B>(endpoints: &Endpoints<B>, policy: OutlierPolicy, index: usize, attempt: Attempt) {
    let (Some(failures), Some(state)) =
        (endpoints.failures.get(index), endpoints.states.get(index))
    else {
        return;
    };
    if !attempt.failed() {
        failures.store(0, Ordering::Relaxed);
        return;
    }
    if failures.fetch_add(1, Ordering::Relaxed) + 1 < policy.consecutive {
        return;
    }
    failures.store(0, Ordering::Relaxed);
    let now = now_ms();
    // Never the last endpoint in service: a request must always have somewhere to go.
    let in_service = endpoints
        .states
        .iter()
        .filter(|s| s.is_healthy() && !s.is_ejected(now))
        .count();
    if in_service <= 1 || state.is_ejected(now) {
        return;
    }
    let length = policy
        .base_ejection
        .saturating_mul(state.ejections().saturating_add(1))
        .min(policy.max_ejection);
    let length_ms = u64::try_from(length.as_millis()).unwrap_or(u64::MAX);
    state.eject_until(now.saturating_add(length_ms));
}
