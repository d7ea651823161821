//! Configuration: parsing, every error message, the router built from TOML, path
//! normalisation, property tests of config and router, and the shipped example configs.
//!
//! One module per topic; `tests/README.md` says how to add one. All run in one process:
//! see `support::alone` for a test that needs it to itself.

#[path = "../support/mod.rs"]
mod support;

mod config_errors;
mod config_examples;
mod config_parse;
mod examples_canary;
mod examples_sidecars;
mod prop_config;
mod prop_router;
mod router_normalize;
mod router_toml;
