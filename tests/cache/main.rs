//! The response cache: RFC 9111 storage and reuse rules, validation, coalescing and eviction,
//! purge, its metrics, and property tests of the cache-control policy.
//!
//! One module per topic; `tests/README.md` says how to add one. All run in one process:
//! see `support::alone` for a test that needs it to itself.

#[path = "../support/mod.rs"]
mod support;

mod cache_metrics;
mod cache_policy_props;
mod cache_rules;
mod cache_storage;
mod cache_validation;
