//! Every request-hygiene refusal over raw bytes: the status, the closed connection, the
//! metric, and a backend that received nothing.

use crate::support::hygiene::{rejected, start};
use crate::support::raw_client::{raw_request, RawConn};

/// (what, request bytes, status, reason label)
const CASES: &[(&str, &str, u16, &str)] = &[
    ("TE + CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400, "te_with_content_length"),
    ("TE ,chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", 400, "bad_transfer_encoding"),
    ("TE chunked, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400, "bad_transfer_encoding"),
    ("TE gzip, chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400, "bad_transfer_encoding"),
    ("two TE lines", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "bad_transfer_encoding"),
    ("TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400, "bad_transfer_encoding"),
    ("TE on HTTP/1.0", "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "te_on_http10"),
    ("conflicting CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400, "bad_content_length"),
    ("CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc", 400, "bad_content_length"),
    ("CL not a number", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3a\r\n\r\nabc", 400, "bad_content_length"),
    ("CL negative", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, "bad_content_length"),
    ("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n", 400, "obs_fold"),
    ("space before colon", "GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 0\r\n\r\n", 400, "space_before_colon"),
    ("NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n", 400, "invalid_header_value"),
    ("bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", 400, "bare_line_break"),
    ("bare LF line ends", "GET / HTTP/1.1\nHost: a\n\n", 400, "bare_line_break"),
    ("invalid header name", "GET / HTTP/1.1\r\nHost: a\r\nX<A>: 1\r\n\r\n", 400, "invalid_header_name"),
    ("missing Host", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, "missing_host"),
    ("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "duplicate_host"),
    ("two equal Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400, "duplicate_host"),
    ("Host with userinfo", "GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400, "invalid_host"),
    ("absolute form vs Host", "GET http://evil.example/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, "host_mismatch"),
    ("fragment in target", "GET /x#frag HTTP/1.1\r\nHost: a\r\n\r\n", 400, "invalid_target"),
    ("control byte in target", "GET /x\x7fy HTTP/1.1\r\nHost: a\r\n\r\n", 400, "malformed_request_line"),
    ("HTTP/2.0 in HTTP/1 head", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400, "unsupported_version"),
    ("HTTP/3.0", "GET / HTTP/3.0\r\nHost: a\r\n\r\n", 400, "unsupported_version"),
    ("HTTP/1.10", "GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, "bad_version"),
    ("HTTP/1.1x", "GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400, "bad_version"),
    ("space after the version", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, "bad_version"),
    ("junk after the version", "GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", 400, "bad_version"),
    ("lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400, "bad_version"),
    ("version without minor", "GET / HTTP/1\r\nHost: a\r\n\r\n", 400, "bad_version"),
    ("space in the target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, "malformed_request_line"),
    ("CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501, "connect_method"),
    ("CONNECT to origin form", "CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 501, "connect_method"),
    ("unknown expectation", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417, "unknown_expectation"),
    ("body over max_body_bytes", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n", 413, "body_too_large"),
];

#[test]
fn every_refusal_answers_closes_counts_and_forwards_nothing() {
    let (backend, proxy, addr) = start();
    for &(what, bytes, status, reason) in CASES {
        let before = rejected(&proxy, reason);
        let resp = raw_request(addr, bytes.as_bytes());
        assert_eq!(resp.status, status, "{what}: {resp:?}");
        assert!(resp.closed, "{what}: connection left open");
        assert_eq!(resp.header("connection"), Some("close"), "{what}");
        assert!(
            rejected(&proxy, reason) > before,
            "{what}: {reason} not counted"
        );
        assert_eq!(backend.request_count(), 0, "{what} reached the backend");
    }
}

#[test]
fn oversized_heads_and_targets_get_431_and_414() {
    let (backend, proxy, addr) = start();
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(600));
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(5000)
    );
    let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    // A head that never ends: refused once it passes the limit, not when the client stops.
    let endless = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}", "b".repeat(6000));
    for (what, bytes, status, reason) in [
        ("long URI", long_uri, 414, "uri_too_long"),
        ("big header", big_header, 431, "header_too_large"),
        ("101 headers", many, 431, "too_many_headers"),
        ("endless head", endless, 431, "header_too_large"),
    ] {
        let before = rejected(&proxy, reason);
        let resp = raw_request(addr, bytes.as_bytes());
        assert_eq!(resp.status, status, "{what}: {resp:?}");
        assert!(resp.closed, "{what}");
        assert!(rejected(&proxy, reason) > before, "{what}");
    }
    assert_eq!(backend.request_count(), 0);
}

#[test]
fn a_valid_pipelined_request_is_answered_and_the_bad_one_after_it_is_not_forwarded() {
    let (backend, _proxy, addr) = start();
    let mut conn = RawConn::connect(addr);
    conn.send(
        b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /smuggled HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .expect("send");
    let first = conn.read_response();
    assert_eq!(first.status, 200, "{first:?}");
    let second = conn.read_response();
    assert_eq!(second.status, 400, "{second:?}");
    assert!(second.closed || conn.wait_closed(crate::support::DEADLINE));
    let seen = backend.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].uri.path(), "/first");
}

#[test]
fn a_request_hidden_in_a_body_is_body_not_a_request() {
    let (backend, _proxy, addr) = start();
    let mut conn = RawConn::connect(addr);
    let inner = "GET /hidden HTTP/1.1\r\nHost: a\r\n\r\n";
    let outer = format!(
        "POST /outer HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{inner}GET /next HTTP/1.1\r\nHost: a\r\n\r\n",
        inner.len()
    );
    conn.send(outer.as_bytes()).expect("send");
    let first = conn.read_response();
    assert_eq!(first.status, 200);
    assert_eq!(first.body_text(), inner, "the body is echoed whole");
    assert_eq!(conn.read_response().status, 200);
    let paths: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.uri.path().to_owned())
        .collect();
    assert_eq!(paths, ["/outer", "/next"]);
}

#[test]
fn chunked_bodies_pass_and_broken_chunks_abort_the_upstream_request() {
    let (backend, proxy, addr) = start();
    let mut conn = RawConn::connect(addr);
    conn.send(b"POST /ok HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n")
        .expect("send");
    let ok = conn.read_response();
    assert_eq!((ok.status, ok.body_text().as_str()), (200, "hello world"));

    let before = rejected(&proxy, "bad_chunk");
    let resp = raw_request(
        addr,
        b"POST /broken HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX\r\n0\r\n\r\n",
    );
    assert!(resp.closed, "{resp:?}");
    // Either our 400 (the backend had not answered) or nothing: never a 200 for it.
    assert!(matches!(resp.status, 0 | 400), "{resp:?}");
    assert!(rejected(&proxy, "bad_chunk") > before);
    // The backend saw at most an aborted request with no complete body.
    assert!(backend
        .requests()
        .iter()
        .all(|r| r.uri.path() != "/broken" || r.body.is_empty()));
}

#[test]
fn a_chunked_body_over_the_limit_gets_413_while_streaming() {
    let (backend, proxy, addr) = start();
    let before = rejected(&proxy, "body_too_large");
    let mut conn = RawConn::connect(addr);
    conn.send(b"POST /big HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n200\r\n")
        .expect("send");
    conn.send(&[b'x'; 0x200]).expect("send");
    conn.send(b"\r\n400\r\n").expect("send");
    let resp = conn.read_response();
    assert_eq!(resp.status, 413, "{resp:?}");
    assert!(resp.closed || conn.wait_closed(crate::support::DEADLINE));
    assert!(rejected(&proxy, "body_too_large") > before);
    assert!(backend.requests().iter().all(|r| r.body.len() < 0x600));
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let (backend, _proxy, addr) = start();
    let mut conn = RawConn::connect(addr);
    conn.send(b"POST /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .expect("send");
    let interim = conn.read_response();
    assert_eq!(interim.status, 100, "{interim:?}");
    conn.send(b"hello").expect("send");
    let done = conn.read_response();
    assert_eq!((done.status, done.body_text().as_str()), (200, "hello"));
    let seen = backend.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        !seen[0].headers.contains_key("expect"),
        "Expect is ours to answer, not forwarded"
    );
}

#[test]
fn leading_empty_lines_and_http10_are_accepted() {
    let (backend, _proxy, addr) = start();
    let resp = raw_request(
        addr,
        b"\r\nGET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "{resp:?}");
    let resp = raw_request(addr, b"GET /b HTTP/1.0\r\n\r\n");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert!(resp.closed, "HTTP/1.0 without keep-alive closes");
    assert_eq!(backend.request_count(), 2);
}

#[test]
fn a_request_pipelined_right_after_a_chunked_body_is_found() {
    let (backend, _proxy, addr) = start();
    let mut conn = RawConn::connect(addr);
    // One write: the chunked body's end and the next head arrive in the same read.
    conn.send(
        b"POST /one HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /two HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .expect("send");
    let one = conn.read_response();
    assert_eq!((one.status, one.body_text().as_str()), (200, "abc"));
    assert_eq!(conn.read_response().status, 200);
    let paths: Vec<String> = backend
        .requests()
        .iter()
        .map(|r| r.uri.path().to_owned())
        .collect();
    assert_eq!(paths, ["/one", "/two"]);
}
