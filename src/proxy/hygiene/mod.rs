//! Request hygiene: what a client may send before anything is forwarded.
//!
//! A proxy and the server behind it must agree on where each request starts and ends, or a
//! request can be smuggled inside another one's body (RFC 9112 11.2, "HTTP request
//! smuggling"). Common parsers are lenient here (hyper's, for one, accepts
//! `Transfer-Encoding: ,chunked`, `gzip, chunked`, TE together with Content-Length, a missing
//! Host, a 200 KiB head), so our HTTP/1 server (`proxy::h1`) reads every request head with our
//! own strict parser, which checks and parses in one pass:
//!
//! - [`head`]: one HTTP/1 request head → its body framing, or a [`Reject`] (status + reason).
//! - [`chunked`]: decodes a chunked body's framing to find where the next request starts,
//!   enforcing `max_body_bytes` while the body streams.
//! - [`io`]: [`GuardedIo`], the wrapper around the accepted socket: it tells HTTP/1 from
//!   HTTP/2, hands HTTP/1 heads ([`head`]) and decoded bodies ([`chunked`]) to `proxy::h1`,
//!   owns the first-byte, header, body and keep-alive timers, and answers a rejected request
//!   itself (a bad head never becomes a request, so nothing is forwarded). Its byte path
//!   (`AsyncRead`/`AsyncWrite`) carries HTTP/2, after the preface, and upgraded connections,
//!   unchecked.
//! - [`h2`]: the checks HTTP/2 requests need on top of what the HTTP/2 server (`proxy::h2`)
//!   enforces.
//! - [`conn`]: [`ConnState`], what the socket wrapper and the service of one connection share.
//!
//! Every rejection is counted in `switchyard_rejected_requests_total{reason}`; the reasons are
//! the `snake_case` labels of [`Reject::reason`], listed in the README ("Downstream protection").

pub mod chunked;
pub mod conn;
pub mod h2;
pub mod head;
pub mod io;

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;

use crate::config::LimitsConfig;
use crate::telemetry::metrics::REJECTED_REQUESTS_TOTAL;

pub use conn::ConnState;
pub use io::{Arrival, GuardedIo, Protocols};

/// Most header fields one request may carry (431 beyond). 100 is hyper's and nginx's
/// practical default; real browsers send 10–30.
pub const MAX_HEADER_COUNT: usize = 100;

/// Concurrent streams one HTTP/2 connection may open (RFC 9113 suggests no fewer than 100).
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 100;

/// The limits the hygiene layer enforces, precomputed once per worker from `[limits]`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A request head (request line + header fields) longer than this is answered 431.
    pub max_header_bytes: usize,
    /// A request target longer than this is answered 414.
    pub max_uri_bytes: usize,
    /// `None` = bodies are unlimited.
    pub max_body_bytes: Option<u64>,
    /// From accept until the first request head is complete.
    pub first_byte_timeout: Duration,
    /// From a head's first byte until its end.
    pub header_read_timeout: Duration,
    /// Longest wait for the next body byte while the body is being read (408).
    pub body_read_timeout: Duration,
    /// Idle time allowed between requests (HTTP/1) or without open streams (HTTP/2).
    pub keepalive_timeout: Duration,
}

impl Limits {
    /// Takes the hygiene part of `[limits]`.
    pub fn from_config(config: &LimitsConfig) -> Self {
        Self {
            max_header_bytes: usize::try_from(config.max_header_bytes).unwrap_or(usize::MAX),
            max_uri_bytes: usize::try_from(config.max_uri_bytes).unwrap_or(usize::MAX),
            max_body_bytes: config.max_body_bytes,
            first_byte_timeout: config.first_byte_timeout,
            header_read_timeout: config.header_read_timeout,
            body_read_timeout: config.body_read_timeout,
            keepalive_timeout: config.keepalive_timeout,
        }
    }
}

/// Why a request (or a connection) was refused. Each variant names its status and its metric
/// label; the client gets the status with `connection: close`, and nothing is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// 400: the request line is not `METHOD SP target SP HTTP/1.x`.
    MalformedRequestLine,
    /// 400: a well-formed version other than 1.0 and 1.1 (`HTTP/2.0` in an HTTP/1 head,
    /// `HTTP/3.0`), or none at all (HTTP/0.9).
    UnsupportedVersion,
    /// 400: a version token that is not `HTTP/` digit `.` digit (`HTTP/1.10`, `HTTP/1.1x`,
    /// `http/1.1`, anything after the version on the request line).
    BadVersion,
    /// 501: `CONNECT` (HTTP/1 or HTTP/2): the proxy has no tunnel to offer, and routing one
    /// as a request to `/` would hand a backend a tunnel it never agreed to.
    ConnectMethod,
    /// 400: a header name with bytes outside RFC 9110's token set.
    InvalidHeaderName,
    /// 400: a header value with NUL, a bare CR or another control byte.
    InvalidHeaderValue,
    /// 400: a header line continued on the next line (obs-fold, RFC 9112 5.2).
    ObsFold,
    /// 400: whitespace between a header name and its colon (RFC 9112 5.1).
    SpaceBeforeColon,
    /// 400: a line ended by LF alone, or a CR not followed by LF.
    BareLineBreak,
    /// 400: a `#fragment`, a control byte or a space in the request target.
    InvalidTarget,
    /// 400: HTTP/1.1 without `Host`.
    MissingHost,
    /// 400: more than one `Host`.
    DuplicateHost,
    /// 400: a `Host` that is not `host[:port]`.
    InvalidHost,
    /// 400: the authority of an absolute-form target (or HTTP/2 `:authority`) is not `Host`.
    HostMismatch,
    /// 400: `Transfer-Encoding` and `Content-Length` together.
    TeWithContentLength,
    /// 400: any `Transfer-Encoding` but exactly one `chunked` token on one line.
    BadTransferEncoding,
    /// 400: `Transfer-Encoding` on an HTTP/1.0 request.
    TeOnHttp10,
    /// 400: a `Content-Length` that is not one run of digits, or more than one.
    BadContentLength,
    /// 400: a chunked body whose framing is broken (bad size line, missing CRLF).
    BadChunk,
    /// 400: an HTTP/2 connection-specific header (`connection`, `keep-alive`, …).
    ConnectionHeader,
    /// 400: an HTTP/2 `te` other than `trailers`.
    BadTe,
    /// 400: an HTTP/2 request with pseudo-header fields missing or misused.
    BadPseudoHeader,
    /// 417: an `Expect` other than `100-continue`.
    UnknownExpectation,
    /// 413: a body over `max_body_bytes`.
    BodyTooLarge,
    /// 414: a request target over `max_uri_bytes`.
    UriTooLong,
    /// 431: a head over `max_header_bytes`.
    HeaderTooLarge,
    /// 431: more than [`MAX_HEADER_COUNT`] header fields.
    TooManyHeaders,
    /// 408: a request head not complete within `header_read_timeout` (or the first one within
    /// `first_byte_timeout`).
    HeaderTimeout,
    /// 408: no body byte for `body_read_timeout` while the body was being read.
    BodyTimeout,
}

impl Reject {
    /// The status the client gets.
    pub fn status(self) -> StatusCode {
        match self {
            Self::UnknownExpectation => StatusCode::EXPECTATION_FAILED,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::HeaderTooLarge | Self::TooManyHeaders => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::HeaderTimeout | Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::ConnectMethod => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The `reason` label of `switchyard_rejected_requests_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::MalformedRequestLine => "malformed_request_line",
            Self::UnsupportedVersion => "unsupported_version",
            Self::BadVersion => "bad_version",
            Self::ConnectMethod => "connect_method",
            Self::InvalidHeaderName => "invalid_header_name",
            Self::InvalidHeaderValue => "invalid_header_value",
            Self::ObsFold => "obs_fold",
            Self::SpaceBeforeColon => "space_before_colon",
            Self::BareLineBreak => "bare_line_break",
            Self::InvalidTarget => "invalid_target",
            Self::MissingHost => "missing_host",
            Self::DuplicateHost => "duplicate_host",
            Self::InvalidHost => "invalid_host",
            Self::HostMismatch => "host_mismatch",
            Self::TeWithContentLength => "te_with_content_length",
            Self::BadTransferEncoding => "bad_transfer_encoding",
            Self::TeOnHttp10 => "te_on_http10",
            Self::BadContentLength => "bad_content_length",
            Self::BadChunk => "bad_chunk",
            Self::ConnectionHeader => "connection_header",
            Self::BadTe => "bad_te",
            Self::BadPseudoHeader => "bad_pseudo_header",
            Self::UnknownExpectation => "unknown_expectation",
            Self::BodyTooLarge => "body_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::HeaderTooLarge => "header_too_large",
            Self::TooManyHeaders => "too_many_headers",
            Self::HeaderTimeout => "header_timeout",
            Self::BodyTimeout => "body_timeout",
        }
    }

    /// Counts this rejection and logs it. A request refused by its head never reaches the
    /// handler, so the access log never sees it (one refused mid-body was already forwarded
    /// and gets its access-log line too); this line (target [`REJECTED_LOG_TARGET`]) is
    /// written whatever `[log] access` and `access_sample` say, since a refusal is an error
    /// and often an attack worth seeing.
    pub fn count(self) {
        count(self.reason());
        tracing::warn!(
            target: REJECTED_LOG_TARGET,
            status = self.status().as_u16(),
            reason = self.reason(),
            "request rejected"
        );
    }

    /// The complete HTTP/1.1 response `GuardedIo` writes for a refusal, outside the session's
    /// own response path.
    pub fn http1_response(self) -> Bytes {
        let status = self.status();
        let text = status.canonical_reason().unwrap_or("Error");
        let body = format!("{text}\n");
        Bytes::from(format!(
            "HTTP/1.1 {} {text}\r\ncontent-type: text/plain; charset=utf-8\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            status.as_u16(),
            body.len(),
        ))
    }
}

/// A refusal is also the error inside the `io::Error` that `GuardedIo` fails a body read with,
/// so the request path can tell the client what it did (see `proxy::request_body`).
impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Reject {}

/// The tracing target of the line written for each rejected request.
pub const REJECTED_LOG_TARGET: &str = "switchyard::rejected";

/// Counts one rejection under `reason` (also used for connection-level refusals such as
/// `connection_limit` that have no [`Reject`] variant).
pub fn count(reason: &'static str) {
    metrics::counter!(REJECTED_REQUESTS_TOTAL, "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_responses_are_complete_http1_messages() {
        let text =
            String::from_utf8(Reject::HeaderTooLarge.http1_response().to_vec()).expect("ascii");
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(text.contains("\r\nconnection: close\r\n"));
        let (head, body) = text.split_once("\r\n\r\n").expect("head end");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert_eq!(Reject::BodyTimeout.status(), 408);
        assert_eq!(Reject::UnknownExpectation.status(), 417);
        assert_eq!(Reject::ConnectMethod.status(), 501);
        let text =
            String::from_utf8(Reject::ConnectMethod.http1_response().to_vec()).expect("ascii");
        assert!(
            text.starts_with("HTTP/1.1 501 Not Implemented\r\n"),
            "{text}"
        );
        assert_eq!(
            Reject::TeWithContentLength.reason(),
            "te_with_content_length"
        );
    }
}
