//! Request hygiene at the edge: malformed and oversized requests refused, forwarding headers,
//! our own timers against slow clients, HTTP/2 floods and limits, keep-alive parking, the
//! connection limit, and property tests of the request parser.
//!
//! One module per topic; `tests/README.md` says how to add one. All run in one process:
//! see `support::alone` for a test that needs it to itself.

#[path = "../support/mod.rs"]
mod support;

mod h2_floods;
mod h2_hygiene;
mod h2_zero_window;
mod hygiene_headers;
mod hygiene_reject;
mod hygiene_timeouts;
mod keepalive_park;
mod limits_connections;
mod prop_hygiene;
