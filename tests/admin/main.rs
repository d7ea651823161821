//! Observability and the admin API: its endpoints, `/metrics` (promtool, the Grafana
//! dashboard, the endpoint-series budget), the status page, access logs and trace context.
//!
//! One module per topic; `tests/README.md` says how to add one. All run in one process:
//! see `support::alone` for a test that needs it to itself.

#[path = "../support/mod.rs"]
mod support;

mod access_log_lines;
mod admin_api;
mod admin_endpoint_fold;
mod admin_metrics;
mod grafana_dashboard;
mod status_page;
mod trace_context;
