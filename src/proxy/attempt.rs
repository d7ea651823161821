//! The retry layer of the per-route stack (layer 4 in [`super::stack`]): starts attempts
//! through the layers below it (`stack::pick`, then `stack::send`), classifies each result, and
//! retries or hedges within the limits.
//!
//! Limits, in the order they are checked before another attempt: `attempts` (total tries, plus
//! `hedge.max` hedges), safety (an idempotent request, or one that reached nobody), a body that
//! can still be replayed, a backoff that ends before the deadline, the route's budget, and the
//! cluster's `max_retries`. When any says no, the client gets the last attempt's own failure (a
//! 503 stays that 503), not a new error.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, Uri, Version};

use super::access_log::RequestFacts;
use super::body::{self, IdleWatch};
use super::stack;
use crate::balance::PickContext;
use crate::config::{HedgePolicy, RetryPolicy};
use crate::endpoint::limits::{self, Slot};
use crate::endpoint::{EndpointState, InFlightGuard};
use crate::resilience::hedge::{self, Event, HedgeResult, InFlight};
use crate::resilience::policy::{self, Verdict};
use crate::resilience::replay::Replay;
use crate::resilience::{backoff, RouteResilience};
use crate::state::ClusterSnapshot;
use crate::upstream::{HeadLines, Upstream, UpstreamBody};
use crate::wire::ProxyError;
use crate::wire::{self, ClientBody, FailureKind, UpstreamError};

/// Everything the loop needs about one request, prepared by `stack::exchange`.
pub struct Plan<'a> {
    /// This worker's upstream side.
    pub upstream: &'a Upstream,
    /// The cluster the route picked.
    pub cluster: &'a ClusterSnapshot,
    /// The balancer input (computed once; every attempt walks the same candidate order).
    pub pick: PickContext<'a>,
    /// The route's idle clock, stamped by every attempt's body.
    pub idle: Option<&'a IdleWatch>,
    /// Route `retry`; `None` also for requests that must not be repeated (upgrades).
    pub retry: Option<&'a RetryPolicy>,
    /// Route `hedge`; `None` also for requests that must not be repeated (upgrades).
    pub hedge: Option<&'a HedgePolicy>,
    /// The route's budget and metric handles.
    pub state: Option<&'a RouteResilience>,
    /// The request is gRPC (retried only on UNAVAILABLE).
    pub grpc: bool,
    /// `per_try_timeout`, if any.
    pub per_try: Option<Duration>,
    /// When the whole exchange must have its response head (route `timeout`, `grpc-timeout`).
    pub deadline: Option<(Instant, Duration)>,
    /// The clock reading the deadline counts from, taken just before the first attempt: it is
    /// also that attempt's start (its limit and latency), one clock read for both.
    pub started: Instant,
    /// The downstream request body's record (requests with a body): a failure the client
    /// caused is never the endpoint's (no ejection, breaker, retry or outcome metric).
    pub client: Option<ClientBody>,
    /// Fields an HTTP/1.1 endpoint's client writes after the map's (see
    /// `handler::upstream_head`).
    pub lines: HeadLines<'a>,
}

/// The winning attempt.
#[derive(Debug)]
pub struct Won {
    /// Its response head and streaming body.
    pub response: Response<UpstreamBody>,
    /// Its in-flight guard (holding the cluster's request slot); keep it until the body ends.
    pub guard: InFlightGuard,
    /// Its endpoint.
    pub endpoint: Arc<EndpointState>,
}

/// One attempt's end, as the endpoint layers (`stack::send`) hand it back.
pub(super) struct Finished {
    /// The endpoint tried.
    pub(super) endpoint: Arc<EndpointState>,
    /// Its in-flight guard, kept until the attempt is dropped or wins.
    pub(super) guard: InFlightGuard,
    /// The response head, or how the attempt failed.
    pub(super) result: Result<Response<UpstreamBody>, UpstreamError>,
    /// The attempt was a hedge (for the hedge metrics).
    pub(super) hedge: bool,
    /// The request, when it failed before a byte of it was written (`upstream::Unsent`).
    pub(super) unsent: crate::upstream::Unsent,
}

/// The method, target, version and headers every attempt is built from.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Head {
    fn request(&self, body: wire::Body) -> Request<wire::Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// Runs the attempts of one request (head `parts`, downstream `body`). `facts` gets every
/// attempt counted and the endpoint of the last one started, then of the winner (access log).
#[allow(
    clippy::manual_async_fn,
    reason = "arguments held once: see the module doc of crate::proxy::stack"
)]
pub fn run<'a>(
    plan: Plan<'a>,
    parts: Parts,
    body: wire::Body,
    facts: &'a mut RequestFacts,
    cluster_slot: Slot,
) -> impl Future<Output = Result<Won, ProxyError>> + 'a {
    async move {
        let idempotent = policy::idempotent(&parts.method, &parts.headers);
        // Hedging repeats a request before knowing the first copy failed: idempotent ones only.
        let hedge = plan.hedge.filter(|_| idempotent);
        let repeatable = plan.retry.is_some() || hedge.is_some();
        if !repeatable {
            // The common case: one attempt with the request as it is, nothing cloned or buffered.
            let (_, guard) = stack::pick(&plan, &[], false).ok_or_else(|| no_endpoint(&plan))?;
            facts.attempts += 1;
            facts.endpoint = Some(Arc::clone(guard.endpoint()));
            let request = Request::from_parts(parts, body::request(body, plan.idle));
            let done = stack::send(&plan, guard, request, false, Some(plan.started)).await;
            return finish(&plan, done, cluster_slot);
        }
        // A route whose only retries are of failures that reached no endpoint (the synthetic
        // routes': connect failures) sends its first attempt as the common case does, with
        // the request as it is: such a failure hands the request back untouched
        // (`upstream::Unsent`), and the retry loop starts from it only then. Not for gRPC
        // (UNAVAILABLE is retried under any policy) nor HTTP/2 clusters (no request comes
        // back). Re-measure with callgrind on a sidecar (benches/transparent/run.sh's setup):
        // `attempt::repeat`, `HeaderMap::clone` and `Replay::new` leave the request's path.
        let unsent_only = !plan.grpc
            && hedge.is_none()
            && plan.cluster.config().protocol == crate::config::Protocol::Http1
            && plan.state.is_some_and(RouteResilience::retries_only_unsent);
        if unsent_only {
            if let Some(budget) = plan.state.and_then(RouteResilience::budget) {
                budget.record_request();
            }
            let (index, guard) =
                stack::pick(&plan, &[], false).ok_or_else(|| no_endpoint(&plan))?;
            facts.attempts += 1;
            facts.endpoint = Some(Arc::clone(guard.endpoint()));
            let request = Request::from_parts(parts, body::request(body, plan.idle));
            let done = stack::send(&plan, guard, request, false, Some(plan.started)).await;
            // What follows the attempt is in a function of its own: its borrows of `done`
            // would keep `done` in this future's state across the retry's await, which every
            // request's future would carry.
            return match after_first(plan, index, done, facts, cluster_slot, idempotent) {
                Then::Answer(answer) => answer,
                Then::Retry(retry) => retry.await,
            };
        }
        // Boxed: the retry/hedge loop's state (attempts in flight, timers, the replay buffer) would
        // otherwise size the future of every request, which is moved and held per request.
        Box::pin(repeat(
            plan,
            parts,
            body,
            facts,
            cluster_slot,
            idempotent,
            hedge,
            None,
        ))
        .await
    }
}

/// What follows the first attempt of a route that retries only unsent failures (see [`run`]).
#[allow(
    clippy::large_enum_variant,
    reason = "returned once and matched at once; boxing the answer would allocate per request"
)]
enum Then<'a> {
    /// The attempt's own answer: a response, or a failure not to retry.
    Answer(Result<Won, ProxyError>),
    /// The retry loop, starting from the attempt's failure and the request it handed back.
    Retry(std::pin::Pin<Box<dyn Future<Output = Result<Won, ProxyError>> + Send + 'a>>),
}

/// [`run`]'s first attempt at endpoint `index` ended in `done`: its answer, unless it failed
/// retryably and handed its request back (`upstream::Unsent`), which then starts the retry
/// loop (boxed, as every retry loop is).
fn after_first<'a>(
    plan: Plan<'a>,
    index: usize,
    mut done: Finished,
    facts: &'a mut RequestFacts,
    cluster_slot: Slot,
    idempotent: bool,
) -> Then<'a> {
    let Some(request) = done
        .unsent
        .take()
        .filter(|_| classify(&plan, &done).is_some())
    else {
        return Then::Answer(finish(&plan, done, cluster_slot));
    };
    // Its body is the idle-stamped one; the retry's view stamps again (harmless).
    let (parts, body) = (*request).into_parts();
    // The loop's first event: the attempt's end, as an attempt in flight that is over.
    let first: InFlight<'a, Finished> = Box::pin(std::future::ready(done));
    Then::Retry(Box::pin(repeat(
        plan,
        parts,
        body,
        facts,
        cluster_slot,
        idempotent,
        None,
        Some((index, first)),
    )))
}

/// The attempts of a request that may be retried or hedged (see [`run`]); `first`: the first
/// attempt's endpoint index and its end (a future that is ready) when `run` made it (it
/// counted the request in the budget then).
#[allow(
    clippy::too_many_arguments,
    reason = "the request's parts and run's decisions, each moved in once"
)]
async fn repeat(
    plan: Plan<'_>,
    parts: Parts,
    body: wire::Body,
    facts: &mut RequestFacts,
    cluster_slot: Slot,
    idempotent: bool,
    hedge: Option<&HedgePolicy>,
    first: Option<(usize, InFlight<'_, Finished>)>,
) -> Result<Won, ProxyError> {
    let budget = plan.state.and_then(RouteResilience::budget);
    if let (Some(budget), None) = (budget, &first) {
        budget.record_request();
    }
    let buffer = plan.retry.map_or(0, |r| r.buffer);
    let max_tries = plan.retry.map_or(1, |r| r.attempts.max(1));
    let max_hedges = hedge.map_or(0, |h| h.max);
    let head = Head {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
    };
    let replay = Replay::new(body, buffer);
    let launch = |guard: InFlightGuard, hedged: bool| {
        let request = head.request(body::request(replay.attempt(), plan.idle));
        stack::send(&plan, guard, request, hedged, None)
    };

    let mut tried: Vec<usize> = Vec::with_capacity(2);
    let mut in_flight: Vec<InFlight<'_, Finished>> = Vec::with_capacity(2);
    match first {
        Some((index, ended)) => {
            tried.push(index);
            in_flight.push(ended);
        }
        None => {
            let (index, guard) =
                stack::pick(&plan, &tried, false).ok_or_else(|| no_endpoint(&plan))?;
            tried.push(index);
            facts.attempts += 1;
            facts.endpoint = Some(Arc::clone(guard.endpoint()));
            in_flight.push(Box::pin(launch(guard, false)));
        }
    }
    let mut tries = 1;
    let mut hedges = 0;
    let mut timer = hedge.map(|h| Box::pin(tokio::time::sleep(h.after)));
    let state = plan.state;
    let count_hedge = |result, n| {
        if let Some(state) = state {
            state.count_hedge(result, n);
        }
    };
    // Bounded: every pass either starts an attempt (at most `max_tries + max_hedges`), ends
    // one, or disarms the hedge timer.
    let failed = loop {
        match hedge::next(&mut in_flight, &mut timer).await {
            Event::Hedge => {
                let Some(policy) = hedge.filter(|_| hedges < max_hedges) else {
                    continue;
                };
                let Some((index, guard)) = stack::pick(&plan, &tried, true) else {
                    continue;
                };
                if !replay.replayable() {
                    continue;
                }
                if budget.is_some_and(|b| !b.try_withdraw()) {
                    count_hedge(HedgeResult::Denied, 1);
                    continue;
                }
                tried.push(index);
                hedges += 1;
                facts.attempts += 1;
                facts.endpoint = Some(Arc::clone(guard.endpoint()));
                count_hedge(HedgeResult::Sent, 1);
                in_flight.push(Box::pin(launch(guard, true)));
                if hedges < max_hedges {
                    timer = Some(Box::pin(tokio::time::sleep(policy.after)));
                }
            }
            Event::Done(done) => {
                let verdict = classify(&plan, &done);
                let Some(verdict) = verdict else {
                    if done.result.is_ok() {
                        // The winner: the rest are cancelled by dropping them.
                        count_hedge(HedgeResult::Won, u64::from(done.hedge));
                        count_hedge(HedgeResult::Cancelled, in_flight.len() as u64);
                        drop(in_flight);
                        facts.endpoint = Some(Arc::clone(&done.endpoint));
                        return finish(&plan, done, cluster_slot);
                    }
                    // A final failure; a hedge still running may yet answer.
                    if in_flight.is_empty() {
                        return finish(&plan, done, cluster_slot);
                    }
                    continue;
                };
                if !in_flight.is_empty() {
                    continue;
                }
                let wait = match &done.result {
                    Ok(response) => backoff::retry_after(response.status(), response.headers()),
                    Err(_) => None,
                };
                let again = tries < max_tries
                    && (verdict.unsent || idempotent)
                    && replay.replayable()
                    && !past_deadline(&plan);
                let (Some(retry), true) = (plan.retry, again) else {
                    break done;
                };
                let pause =
                    wait.unwrap_or_else(|| backoff::delay(retry.backoff, tries, fastrand::u64(..)));
                // A retry that could only start after the deadline cannot succeed: the failure
                // in hand is a better answer than a 504 later.
                if plan
                    .deadline
                    .is_some_and(|(at, _)| Instant::now() + pause >= at)
                {
                    break done;
                }
                if budget.is_some_and(|b| !b.try_withdraw()) {
                    if let Some(state) = state {
                        state.count_exhausted();
                    }
                    break done;
                }
                // `max_retries`: over it, the original failure stands (not a 503 of our own).
                let Ok(retry_slot) =
                    limits::try_retry(plan.cluster.config(), plan.cluster.health())
                else {
                    break done;
                };
                let Some((index, guard)) = stack::pick(&plan, &tried, false) else {
                    break done;
                };
                if let Some(state) = state {
                    state.count_retry(verdict.reason);
                }
                tries += 1;
                // The failed attempt (its guard, connection and body) is released before the
                // pause; the retry's own result replaces it.
                drop(done);
                tokio::time::sleep(pause).await;
                tried.push(index);
                facts.attempts += 1;
                facts.endpoint = Some(Arc::clone(guard.endpoint()));
                let next = launch(guard, false);
                in_flight.push(Box::pin(async move {
                    let done = next.await;
                    drop(retry_slot);
                    done
                }));
            }
        }
    };
    finish(&plan, failed, cluster_slot)
}

/// Whether `done` is worth another attempt under the plan's policy.
fn classify(plan: &Plan<'_>, done: &Finished) -> Option<Verdict> {
    let policy = plan.retry?;
    match &done.result {
        Ok(response) => policy::of_response(policy, response, plan.grpc),
        Err(error) if error.kind == FailureKind::Timeout && past_deadline(plan) => None,
        Err(error) => policy::of_error(policy, error),
    }
}

fn past_deadline(plan: &Plan<'_>) -> bool {
    plan.deadline
        .is_some_and(|(at, _)| Instant::now() + Duration::from_millis(1) >= at)
}

/// One attempt's deadline and time limit from `now`: `per_try_timeout`, cut short by the
/// overall deadline. The deadline goes to the timer as it is (no clock read of its own).
pub(super) fn limit(plan: &Plan<'_>, now: Instant) -> Option<(Instant, Duration)> {
    let per_try = plan.per_try.map(|limit| (now + limit, limit));
    match (per_try, plan.deadline) {
        (Some(own), Some((at, _))) if own.0 <= at => Some(own),
        (_, Some((at, _))) => Some((at, at.saturating_duration_since(now))),
        (own, None) => own,
    }
}

fn no_endpoint(plan: &Plan<'_>) -> ProxyError {
    ProxyError::NoEndpoint {
        cluster: plan.cluster.name().to_owned(),
    }
}

/// Turns the chosen attempt into the handler's answer.
fn finish(plan: &Plan<'_>, done: Finished, cluster_slot: Slot) -> Result<Won, ProxyError> {
    let mut guard = done.guard;
    match done.result {
        Ok(response) => {
            guard.hold(cluster_slot);
            Ok(Won {
                response,
                guard,
                endpoint: done.endpoint,
            })
        }
        Err(error) => Err(match error.kind {
            FailureKind::Timeout => match plan.deadline {
                Some((_, total)) if past_deadline(plan) => ProxyError::Timeout(total),
                _ => ProxyError::Timeout(plan.per_try.unwrap_or_default()),
            },
            _ => ProxyError::from(error),
        }),
    }
}
