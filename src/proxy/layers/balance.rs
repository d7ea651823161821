//! [`Balance`]: one endpoint per call, picked as the proxy picks (its layer 5, `stack::pick`):
//! `balance::choose` walks the balancer's candidates in order, skips endpoints that are ejected
//! or failing, and counts the request in flight on the winner.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::uri::{PathAndQuery, Scheme};
use http::{Request, Uri};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::{now_ms, Endpoints, Error, Picked};
use crate::balance::{self, Balancer, PickContext, RoundRobin};
use crate::endpoint::{EndpointState, InFlightGuard};

/// Wraps a client in [`Balance`] over one [`Endpoints`] list.
#[derive(Debug)]
pub struct BalanceLayer<B = RoundRobin> {
    endpoints: Arc<Endpoints<B>>,
}

impl<B> BalanceLayer<B> {
    /// Balances over `endpoints` (share the same `Arc` with the [`super::OutlierLayer`]).
    pub fn new(endpoints: Arc<Endpoints<B>>) -> Self {
        Self { endpoints }
    }
}

impl<B> Clone for BalanceLayer<B> {
    fn clone(&self) -> Self {
        Self::new(Arc::clone(&self.endpoints))
    }
}

impl<S, B> Layer<S> for BalanceLayer<B> {
    type Service = Balance<S, B>;

    fn layer(&self, inner: S) -> Balance<S, B> {
        Balance {
            inner,
            endpoints: Arc::clone(&self.endpoints),
        }
    }
}

/// Sends each request to one endpoint of its [`Endpoints`]: the URI's scheme and authority
/// become the endpoint's (`http`, its address), path and query stay, and the request carries
/// [`Picked`] for the layers below. The endpoint counts the request in flight until its
/// response head (least-request and bounded-load balancers read that count).
#[derive(Debug)]
pub struct Balance<S, B = RoundRobin> {
    inner: S,
    endpoints: Arc<Endpoints<B>>,
}

impl<S: Clone, B> Clone for Balance<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            endpoints: Arc::clone(&self.endpoints),
        }
    }
}

impl<S, B, ReqBody> Service<Request<ReqBody>> for Balance<S, B>
where
    S: Service<Request<ReqBody>>,
    B: Balancer + 'static,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = BalanceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Error::Client)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let endpoints = &*self.endpoints;
        let states = endpoints.states();
        let now = now_ms();
        let ctx = PickContext {
            endpoints: states,
            client: None,
            random: fastrand::u64(..),
            hash: None,
        };
        let usable = |i: usize| states.get(i).is_some_and(|s| in_service(s, now));
        let Some((index, guard)) = balance::choose(&endpoints.balancer, &ctx, usable) else {
            return BalanceFuture::refused(Error::NoEndpoint);
        };
        let Some(uri) = target(req.uri(), guard.endpoint().address()) else {
            return BalanceFuture::refused(Error::BadTarget);
        };
        *req.uri_mut() = uri;
        req.extensions_mut().insert(Picked { index });
        BalanceFuture {
            call: Some(self.inner.call(req)),
            guard: Some(guard),
            refused: None,
        }
    }
}

/// Whether `endpoint` may take a request at `now_ms`: not failing active checks, not ejected.
fn in_service(endpoint: &EndpointState, now_ms: u64) -> bool {
    endpoint.is_healthy() && !endpoint.is_ejected(now_ms)
}

/// `uri`'s path and query at `address` over plain HTTP.
fn target(uri: &Uri, address: SocketAddr) -> Option<Uri> {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(address.to_string())
        .path_and_query(path)
        .build()
        .ok()
}

pin_project! {
    /// [`Balance`]'s future: the wrapped client's, holding the endpoint's in-flight count.
    pub struct BalanceFuture<F> {
        #[pin]
        call: Option<F>,
        guard: Option<InFlightGuard>,
        refused: Option<Error<()>>,
    }
}

impl<F> BalanceFuture<F> {
    fn refused(error: Error<()>) -> Self {
        Self {
            call: None,
            guard: None,
            refused: Some(error),
        }
    }
}

impl<F, T, E> Future for BalanceFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, Error<E>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(call) = this.call.as_pin_mut() else {
            return Poll::Ready(Err(match this.refused.take() {
                Some(Error::BadTarget) => Error::BadTarget,
                _ => Error::NoEndpoint,
            }));
        };
        let result = ready!(call.poll(cx));
        this.guard.take();
        Poll::Ready(result.map_err(Error::Client))
    }
}
