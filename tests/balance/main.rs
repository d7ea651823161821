//! Load balancing: the algorithms through the proxy, consistent hashing (property tests),
//! bounded loads, and `/explain`.
//!
//! One module per topic; `tests/README.md` says how to add one. All run in one process:
//! see `support::alone` for a test that needs it to itself.

#[path = "../support/mod.rs"]
mod support;

mod balance_bounded;
mod balance_explain;
mod balance_hashing;
mod balance_locality;
mod balance_proxy;
