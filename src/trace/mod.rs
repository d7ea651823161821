//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>) and the optional OTLP/HTTP span
//! export.
//!
//! Every request gets one server span: the client's `traceparent` is parsed and its trace id
//! kept (a new trace starts when it is absent or invalid), the proxy's own span id replaces the
//! parent id in the `traceparent` sent upstream, so the backend's span hangs under ours, and
//! `tracestate` travels unchanged with a valid parent. The access log writes the trace id; with
//! `[tracing] otlp` set, sampled spans are exported.
//!
//! - [`context`]: parsing and propagation ([`start`], [`ServerSpan`]).
//! - [`export`]: the bounded queue and the background batcher that posts OTLP/HTTP JSON.
//!
//! The export is written by hand over hyper rather than with the `opentelemetry-otlp` crate:
//! that crate's HTTP transport wants `reqwest` (or an `HttpClient` glue of our own anyway) and
//! brings the `opentelemetry`/`opentelemetry_sdk` stack with it, while the part we need (one
//! span per request, JSON-encoded, batched from a bounded queue) is a small module on the
//! hyper client we already build. OTLP/HTTP accepts JSON (`application/json`, the protobuf JSON
//! mapping with hex ids), which every OpenTelemetry Collector reads.

pub mod context;
pub mod export;

pub use context::{start, ServerSpan};
pub use export::{FinishedSpan, Tracer, SPANS_TOTAL};

pub use crate::config::otlp_traces_uri;
