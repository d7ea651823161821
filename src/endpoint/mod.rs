//! Endpoint state: what the proxy knows about each endpoint and cluster, kept across snapshots.
//!
//! Every layer that touches an endpoint reads or bumps this state: the balancers (in-flight,
//! latency), the upstream pools (connections), health checks and ejection (verdicts, breaker),
//! the request path (cluster limits), the admin views. It sits just above `wire` and
//! `telemetry` (its handles count into the recorder) and below all of them, so none of them has
//! to reach up into the runtime for it.
//!
//! - [`state`]: [`EndpointState`] (atomics only, no lock), [`BreakerPhase`], [`InFlightGuard`],
//!   and the [`EndpointRegistry`] that hands the state out by cluster and address.
//! - [`health`]: the health fields the health task publishes and the request path reads
//!   ([`EndpointHealth`], [`ClusterHealth`]) and the reports sent to that task.
//! - [`limits`]: `circuit_breaker` thresholds, 503 + `retry-after` when over.

pub mod health;
pub mod limits;
pub mod state;

pub use health::{Attempt, ClusterHealth, EndpointHealth, Report, Trigger};
pub use state::{BreakerPhase, EndpointKey, EndpointRegistry, EndpointState, InFlightGuard};
