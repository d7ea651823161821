//! TLS: listeners (mTLS, SNI), upstream TLS, certificate reload, gRPC over TLS, the mTLS
//! tunnel between sidecars, and the
//! `certs` CLI.
//!
//! One module per topic; `tests/README.md` says how to add one. All run in one process:
//! see `support::alone` for a test that needs it to itself.

#[path = "../support/mod.rs"]
mod support;

mod tls_certs_cli;
mod tls_grpc;
mod tls_listener;
mod tls_reload;
mod tls_tunnel;
mod tls_upstream;
