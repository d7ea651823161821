//! The RFC 9111 rules, written per section rather than taken from `http-cache-semantics`: that
//! crate has no `stale-while-revalidate`, `stale-if-error` or `CDN-Cache-Control`, and its
//! `CachePolicy` re-parses headers into owned maps on every `before_request`, which the hit
//! path cannot afford. Each function here names the section it implements.
//!
//! - [`directives`]: `Cache-Control` / `CDN-Cache-Control` (§5.2, RFC 9213).
//! - [`freshness`]: storing (§3), lifetime (§4.2.1-2), age (§4.2.3), reuse (§4, RFC 5861).
//! - [`conditional`]: the client's conditionals against a stored copy, and revalidation (§4.3).

pub mod conditional;
pub mod directives;
pub mod freshness;

pub use directives::Directives;
pub use freshness::Reuse;
