//! What the proxy counts, and the handles the request path counts through: every metric name,
//! their HELP text, the precomputed label sets, and the status page's request rings. Below every
//! module that records (endpoint state, upstream, proxy, control tasks) and above nothing but
//! the config and `wire`; the admin server only renders what is here.
//!
//! - [`metrics`]: every metric name, recorder install (once per process), buckets, and the
//!   precomputed series the request path records through ([`metrics::SnapshotMetrics`],
//!   [`metrics::EndpointMetrics`], whose labels fold to `other` past `max_endpoint_series`).
//! - [`intercept`]: the transparent listeners' metrics and the tallies `/upstreams` shows.
//! - [`describe`]: the table of HELP text and units the recorder is given.
//! - [`endpoint_series`]: the per-endpoint counters and the label budget behind them.
//! - [`stats`]: the per-route and per-cluster rings behind the status page's charts.
//! - [`runtime_tasks`]: tasks alive per runtime, the leak check of the hardening tests.
//!
//! The metrics layout follows axum's `prometheus-metrics` example (`metrics` facade +
//! `metrics-exporter-prometheus`, rendered on a separate port), with series handles cached per
//! label set as the `metrics` crate's docs recommend for hot paths.

pub mod describe;
pub mod endpoint_series;
pub mod intercept;
pub mod metrics;
pub mod runtime_tasks;
pub mod stats;
