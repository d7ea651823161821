//! The status page's numbers: per-route and per-cluster rings of 10-second buckets, recorded on
//! the request path and summarised by the admin server's `GET /stats`.
//!
//! - [`ring`]: the lock-free ring of 10-second buckets behind each sparkline.
//! - [`table`]: the per-snapshot table of rings and the `/stats` document.

pub mod ring;
pub mod table;

pub use table::StatsTable;
