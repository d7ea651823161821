//! switchyard's balancer, retry and outlier layers as tower middleware, to wrap any HTTP client
//! that is a `tower_service::Service<http::Request<B>>` (hyper-util's `Client`, a
//! `hyper::client::conn` sender wrapped in a service, a test double).
//!
//! Stacked outermost first, as in the proxy ([`super::stack`]):
//!
//! ```text
//! RetryLayer -> BalanceLayer -> OutlierLayer -> your client
//! ```
//!
//! - [`Balance`] picks an endpoint per call with the proxy's pick (`balance::choose` over a
//!   [`Balancer`](crate::balance::Balancer), counting in-flight requests on the endpoint's
//!   `EndpointState`), skips ejected endpoints, and points the request's URI at the winner.
//! - [`Outlier`] classifies each answer as the proxy's health does (`health::attempt_of_status`)
//!   and ejects an endpoint after `consecutive` failures in a row, for `base_ejection` × the
//!   times it was ejected, never the last endpoint in service; `Balance` reads the same
//!   ejection deadline.
//! - [`Retry`] classifies answers with the proxy's retry policy (`resilience::policy`) and waits
//!   its backoff (`resilience::backoff`, honouring `Retry-After`) before trying again through
//!   the layers below, so a retry goes through the balancer again.
//!
//! Every layer is a concrete type and every future a named struct: no boxed service, no boxed
//! future, no trait object per call. What the layers share (the endpoint list, the balancer,
//! the failure counts) is one [`Endpoints`], built once and held in an `Arc`.
//!
//! **Why the proxy does not go through these types.** Its layers share one request's state
//! across attempts (the replay buffer of a streamed body, endpoints already tried, hedges, the
//! route deadline, the cluster's limits and health task), which a `Service` boundary would have
//! to carry in request extensions or clone per attempt: an allocation per request the proxy
//! does not pay today. So the proxy calls the functions these layers wrap (`balance::choose`,
//! `health::attempt_of_status` through `health::record`, `resilience::policy`,
//! `resilience::backoff`) directly, from `proxy::stack` and `proxy::attempt`. The layers here
//! are for embedders: the retried request's body must be `Clone` (a `Full<Bytes>`, an `Empty`),
//! the outlier state is the layer's own (no health task), and a URI is built per call.

mod balance;
mod outlier;
mod retry;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::Arc;

pub use balance::{Balance, BalanceFuture, BalanceLayer};
pub use outlier::{Outlier, OutlierFuture, OutlierLayer, OutlierPolicy};
pub use retry::{Retry, RetryFuture, RetryLayer};

use crate::balance::{Balancer, RoundRobin};
use crate::endpoint::EndpointState;

/// The endpoints the layers balance over, with the balancer built for exactly that list and
/// the outlier layer's failure counts (one per endpoint, same index). Built once, shared by
/// `Arc` between [`BalanceLayer`] and [`OutlierLayer`] so both see the same ejections.
#[derive(Debug)]
pub struct Endpoints<B = RoundRobin> {
    states: Vec<Arc<EndpointState>>,
    balancer: B,
    failures: Vec<AtomicU32>,
}

impl Endpoints<RoundRobin> {
    /// `addresses` balanced round robin with equal weights; `name` labels their state (as a
    /// cluster name does in the proxy).
    pub fn round_robin(name: &str, addresses: &[SocketAddr]) -> Arc<Self> {
        Self::new(name, addresses, |states| {
            let weights: Vec<u32> = states.iter().map(|s| s.weight()).collect();
            RoundRobin::new(&weights)
        })
    }
}

impl<B: Balancer> Endpoints<B> {
    /// `addresses` (weight 1 each) balanced by the balancer `build` makes over their states.
    pub fn new(
        name: &str,
        addresses: &[SocketAddr],
        build: impl FnOnce(&[Arc<EndpointState>]) -> B,
    ) -> Arc<Self> {
        let states: Vec<Arc<EndpointState>> = addresses
            .iter()
            .map(|&address| Arc::new(EndpointState::new(name, address, 1)))
            .collect();
        let balancer = build(&states);
        let failures = states.iter().map(|_| AtomicU32::new(0)).collect();
        Arc::new(Self {
            states,
            balancer,
            failures,
        })
    }

    /// Each endpoint's state: in-flight requests, ejection deadline and count.
    pub fn states(&self) -> &[Arc<EndpointState>] {
        &self.states
    }
}

/// Which endpoint [`Balance`] picked, in the request's extensions for the layers below it.
#[derive(Debug, Clone)]
pub struct Picked {
    /// The endpoint's index in [`Endpoints::states`].
    pub index: usize,
}

/// A layer's failure: no endpoint to send to, or the wrapped client's own error.
#[derive(Debug)]
pub enum Error<E> {
    /// Every endpoint is ejected or the list is empty.
    NoEndpoint,
    /// The request's path and an endpoint's address do not make a URI.
    BadTarget,
    /// The wrapped client failed.
    Client(E),
}

impl<E: fmt::Display> fmt::Display for Error<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoEndpoint => f.write_str("no endpoint in service"),
            Self::BadTarget => f.write_str("request target not expressible at the endpoint"),
            Self::Client(error) => write!(f, "client: {error}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for Error<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NoEndpoint | Self::BadTarget => None,
            Self::Client(error) => Some(error),
        }
    }
}

/// Milliseconds since the Unix epoch: the clock of `EndpointState`'s ejection deadline.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
