//! Admin and operations: the admin listener (`/metrics`, `/healthz`, `/readyz`, `/config`,
//! `/upstreams`, `/explain`, `/stats`, the status page at `/`, `POST /reload`), the Prometheus
//! recorder and the metric label sets.
//!
//! - [`server`]: the admin HTTP server, on the control runtime and its own listener only.
//! - [`metrics`]: recorder install (once per process), HELP text, buckets, and the
//!   precomputed series the request path records through ([`metrics::SnapshotMetrics`],
//!   [`metrics::EndpointMetrics`], whose labels fold to `other` past `max_endpoint_series`).
//! - [`views`]: the JSON documents.
//! - [`status`]: the status page at `/` and the `/stats` summary behind its charts.
//! - [`runtime_tasks`]: tasks alive per runtime, the leak check of the hardening tests.
//!
//! The metrics layout follows axum's `prometheus-metrics` example (`metrics` facade +
//! `metrics-exporter-prometheus`, rendered on a separate port), with series handles cached per
//! label set as the `metrics` crate's docs recommend for hot paths.

mod endpoint_series;
pub mod metrics;
mod reload;
pub mod runtime_tasks;
pub mod server;
pub mod status;
pub mod views;

pub use server::AdminState;
