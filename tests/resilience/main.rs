//! Resilience: active health checks, passive outlier ejection, circuit-breaker limits, retries
//! (policy, budget, gRPC), hedging and route rate limits.
//!
//! One module per topic; `tests/README.md` says how to add one. All run in one process:
//! see `support::alone` for a test that needs it to itself.

#[path = "../support/mod.rs"]
mod support;

mod health_checks;
mod health_ejection;
mod health_limits;
mod hedge_slow;
mod rate_limit;
mod retry_budget;
mod retry_grpc;
mod retry_policy;
