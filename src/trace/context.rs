//! `traceparent` parsing and the proxy's server span (W3C Trace Context, level 1).

use std::time::SystemTime;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

use crate::config::TracingConfig;
use crate::wire::headers::{Present, Watched};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The proxy's span for one request: made by [`start`], kept by the access log (trace id) and
/// handed to the exporter when the response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSpan {
    /// The trace this request belongs to (the client's, or a new one).
    pub trace_id: u128,
    /// The proxy's own span id: the parent id of the upstream request.
    pub span_id: u64,
    /// The client's span (the `parent-id` it sent), when it sent a valid `traceparent`.
    pub parent_id: Option<u64>,
    /// The `trace-flags` byte sent upstream; bit 0 is "sampled".
    pub flags: u8,
    /// When the proxy received the request head; `UNIX_EPOCH` when the span cannot be exported
    /// (no `[tracing] otlp`), where the clock is not read for it.
    pub started: SystemTime,
}

impl ServerSpan {
    /// Whether the trace is sampled (exported when `[tracing] otlp` is set).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The trace id as the 32 hex digits the access log and OTLP use.
    pub fn trace_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The `traceparent` value sent upstream: same trace, our span as the parent.
    pub fn traceparent(&self) -> HeaderValue {
        crate::wire::headers::traceparent(self.trace_id, self.span_id, self.flags)
    }
}

/// Settles the request's trace context: parses the client's `traceparent` (keeping its trace id
/// and flags) or starts a trace (sampled with probability `sample_ratio`), rewrites
/// `traceparent` with the proxy's span id as the parent, drops a `tracestate` that has no valid
/// `traceparent` to belong to (the spec's rule on restart), and returns the [`ServerSpan`].
/// `present` is the request's headers scanned.
pub fn start(parts: &mut Parts, present: Present, config: &TracingConfig) -> ServerSpan {
    // Only an exported span shows its start, and only a snapshot with `otlp` has an exporter
    // (`Tracer::build`): without one the wall clock is not read (a vDSO call per request).
    let started = if config.otlp.is_some() {
        SystemTime::now()
    } else {
        SystemTime::UNIX_EPOCH
    };
    let client = present
        .has(Watched::Traceparent)
        .then(|| incoming(&parts.headers))
        .flatten();
    let span = match client {
        Some((trace_id, parent_id, flags)) => ServerSpan {
            trace_id,
            span_id: nonzero_u64(),
            parent_id: Some(parent_id),
            flags,
            started,
        },
        None => {
            if present.has(Watched::Tracestate) {
                parts.headers.remove(&TRACESTATE);
            }
            let sampled = config.sample_ratio >= 1.0 || fastrand::f64() < config.sample_ratio;
            ServerSpan {
                // All-zero ids are invalid in the spec; `| 1` avoids them.
                trace_id: fastrand::u128(..) | 1,
                span_id: nonzero_u64(),
                parent_id: None,
                flags: u8::from(sampled),
                started,
            }
        }
    };
    parts
        .headers
        .insert(TRACEPARENT.clone(), span.traceparent());
    span
}

fn nonzero_u64() -> u64 {
    fastrand::u64(1..)
}

/// The client's trace id, parent id and flags, when exactly one `traceparent` was sent and it
/// is valid. Future versions (not `00`, never `ff`) are read by their version-00 prefix, as the
/// spec asks, and continued as version 00.
fn incoming(headers: &HeaderMap) -> Option<(u128, u64, u8)> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    parse_traceparent(value.to_str().ok()?)
}

/// `version "-" trace-id "-" parent-id "-" trace-flags`, lower-case hex only.
pub fn parse_traceparent(text: &str) -> Option<(u128, u64, u8)> {
    let bytes = text.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let version = hex(&bytes[0..2])?;
    let dashes = [2, 35, 52].iter().all(|&i| bytes[i] == b'-');
    let length_ok = match version {
        0xff => false,
        0 => bytes.len() == 55,
        _ => bytes.len() == 55 || bytes[55] == b'-',
    };
    if !dashes || !length_ok {
        return None;
    }
    let trace_id = u128::from(hex(&bytes[3..19])?) << 64 | u128::from(hex(&bytes[19..35])?);
    let parent_id = hex(&bytes[36..52])?;
    let flags = u8::try_from(hex(&bytes[53..55])?).ok()?;
    (trace_id != 0 && parent_id != 0).then_some((trace_id, parent_id, flags))
}

/// Up to 16 lower-case hex digits as a number; `None` for any other byte. A loop of its own
/// rather than `from_str_radix` after a check of the digits (one pass instead of two, no
/// 128-bit steps): a sidecar's inbound parses the `traceparent` its peer sends on every
/// request. Re-measure with callgrind (`from_ascii_radix` under `serve_request`).
fn hex(digits: &[u8]) -> Option<u64> {
    let mut n = 0u64;
    for &b in digits {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        n = n << 4 | u64::from(digit);
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder();
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).expect("request").into_parts().0
    }

    fn config(sample_ratio: f64) -> TracingConfig {
        TracingConfig {
            otlp: None,
            service_name: "t".into(),
            sample_ratio,
        }
    }

    /// `start` as the handler calls it, with the head's headers scanned first.
    fn started(p: &mut Parts, config: &TracingConfig) -> ServerSpan {
        let present = Present::scan(&p.headers);
        start(p, present, config)
    }

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_client_trace_continues_under_the_proxys_span() {
        let mut p = parts(&[("traceparent", CLIENT), ("tracestate", "congo=t61rcWkgMzE")]);
        let span = started(&mut p, &config(0.0));
        assert_eq!(span.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(span.parent_id, Some(0x00f0_67aa_0ba9_02b7));
        assert_ne!(span.span_id, 0x00f0_67aa_0ba9_02b7);
        assert!(span.sampled(), "the client's flag wins over sample_ratio");
        let sent = p.headers["traceparent"].to_str().expect("ascii");
        assert_eq!(
            sent,
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{:016x}-01",
                span.span_id
            )
        );
        assert_eq!(p.headers["tracestate"], "congo=t61rcWkgMzE");
    }

    #[test]
    fn invalid_or_missing_context_starts_a_trace_and_drops_tracestate() {
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        ] {
            let mut p = parts(&[("traceparent", bad), ("tracestate", "a=b")]);
            let span = started(&mut p, &config(1.0));
            assert_eq!(span.parent_id, None, "{bad:?}");
            assert!(span.sampled());
            assert!(!p.headers.contains_key("tracestate"), "{bad:?}");
            let sent = p.headers["traceparent"].to_str().expect("ascii");
            assert_eq!(parse_traceparent(sent).map(|t| t.0), Some(span.trace_id));
        }
        let mut p = parts(&[]);
        assert!(!started(&mut p, &config(0.0)).sampled());
    }

    #[test]
    fn future_versions_are_read_by_their_prefix() {
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
        assert!(parse_traceparent(future).is_some());
        let two = parts(&[("traceparent", CLIENT), ("traceparent", CLIENT)]);
        assert!(
            incoming(&two.headers).is_none(),
            "two traceparents are invalid"
        );
    }
}
