//! Admin and operations: the admin listener (`/metrics`, `/healthz`, `/readyz`, `/config`,
//! `/upstreams`, `/explain`, `/stats`, the status page at `/`, `POST /reload`). It only serves:
//! what it shows is recorded below it ([`crate::telemetry`], the snapshot, endpoint state).
//!
//! - [`server`]: the admin HTTP server, on the control runtime and its own listener only.
//! - [`views`]: the JSON documents.
//! - [`explain`]: the endpoint a hashing cluster maps a request to, for `/explain` and
//!   `switchyard explain`.
//! - [`status`]: the status page at `/` and the `/stats` summary behind its charts.
//! - `endpoint_render`: the per-endpoint families, rendered at each scrape.

pub mod endpoint_render;
pub mod explain;
mod reload;
pub mod server;
pub mod status;
pub mod views;

pub use server::AdminState;
