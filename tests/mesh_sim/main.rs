//! The mesh simulation: 50 real mesh nodes over an in-memory network, on tokio's paused clock.
//!
//! Its own binary rather than a module of `tests/control/`: each run keeps a core busy for a
//! long while, and the control tests beside it (discovery, reload, real mesh members) wait on
//! real timers that a starved process would miss. Alone, it only competes with itself.

#[path = "../support/mod.rs"]
mod support;

mod mesh_sim;
