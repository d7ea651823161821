//! switchyard: a Layer-7 HTTP load balancer and service-mesh sidecar.
//!
//! Data flow (see `DESIGN.md` in the shared folder for the full contract):
//!
//! ```text
//! listener -> server connection (HTTP/1.1 + h2c, auto-detected)
//!   -> router: first matching route on the current Snapshot (ArcSwap load, no lock)
//!   -> cluster -> balancer (candidates in order) -> upstream forwarding
//!   -> response back through the same path
//! ```
//!
//! Control-side work (config load, later discovery and health) builds a new immutable
//! [`runtime::Snapshot`] off the request path and publishes it with one `ArcSwap` store.
//! Per-endpoint state that must survive snapshots lives in [`runtime::EndpointState`].

pub mod admin;
pub mod balance;
pub mod cache;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod health;
pub mod mesh;
pub mod proxy;
pub mod resilience;
pub mod router;
pub mod runtime;
pub mod tls;
pub mod trace;
pub mod upstream;
