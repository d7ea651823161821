//! switchyard: a Layer-7 HTTP load balancer and service-mesh sidecar.
//!
//! Data flow (`docs/architecture.md`, section Data flow, has each step):
//!
//! ```text
//! listener -> server connection (HTTP/1.1 + h2c, auto-detected)        proxy::server
//!   -> handle(): one Snapshot load (ArcSwap, no lock), request id      proxy::handler
//!   -> the per-route stack, outermost first:                           proxy::stack
//!      route -> cache -> cluster limits -> retry (hedges, budget)      router, cache, endpoint,
//!      -> balancer (candidates in order) -> endpoint pool -> outlier   proxy::attempt, balance,
//!                                                                      upstream, health
//!   -> response back through the handler (via, x-request-id, access log)
//! ```
//!
//! Control-side work (config reload in `runtime`, discovery, health, mesh) builds a new
//! immutable [`state::Snapshot`] off the request path and publishes it with one `ArcSwap` store
//! in [`state::Shared`]. Per-endpoint state that must survive snapshots lives in
//! [`endpoint::EndpointState`]; metric names and hot-path handles in [`telemetry`].
//!
//! The modules form layers, bottom to top: `config`; `wire`, `redirect`; `telemetry`; `endpoint`;
//! `router`, `balance`, `resilience`, `ratelimit`, `tls`, `trace`; `upstream`, `cache`; `state`; `health`,
//! `discovery`; `mesh`; `proxy`; `admin`; `runtime`; `demo`. A module uses only lower ones:
//! `docs/architecture.md` (section Layers) says why each sits where it does, and
//! `tests/architecture.rs` enforces it.

pub mod admin;
pub mod balance;
pub mod cache;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod endpoint;
pub mod health;
pub mod mesh;
pub mod proxy;
pub mod ratelimit;
pub mod redirect;
pub mod resilience;
pub mod router;
pub mod runtime;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod trace;
pub mod upstream;
pub mod wire;
