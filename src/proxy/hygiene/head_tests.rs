use std::time::Duration;

use super::*;

fn limits() -> Limits {
    Limits {
        max_header_bytes: 1024,
        max_uri_bytes: 64,
        max_body_bytes: Some(100),
        first_byte_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(1),
    }
}

fn run(head: &str) -> Result<Option<Head>, Reject> {
    check(head.as_bytes(), &limits())
}

fn reject(head: &str) -> Reject {
    match run(head) {
        Err(r) => r,
        other => panic!("{head:?} was accepted: {other:?}"),
    }
}

fn framing_of(head: &str) -> Framing {
    match run(head) {
        Ok(Some(h)) => h.framing,
        other => panic!("{head:?}: {other:?}"),
    }
}

#[test]
fn plain_requests_pass_with_their_framing() {
    assert_eq!(
        framing_of("GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Framing::None
    );
    assert_eq!(
        framing_of("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n"),
        Framing::Length(5)
    );
    assert_eq!(
        framing_of("POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"),
        Framing::Chunked
    );
    assert_eq!(framing_of("GET / HTTP/1.0\r\n\r\n"), Framing::None);
    assert_eq!(
        framing_of("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Framing::None
    );
    let head = run("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next")
        .expect("ok")
        .expect("complete");
    assert_eq!(head.len, "GET / HTTP/1.1\r\nHost: a\r\n\r\n".len());
    assert!(!head.close && !head.upgrade);
    assert_eq!(
        framing_of("GET http://a:8080/x HTTP/1.1\r\nHost: A:8080\r\n\r\n"),
        Framing::None
    );
    assert_eq!(
        framing_of(
            "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
        ),
        Framing::Length(1)
    );
}

#[test]
fn incomplete_heads_wait_for_more() {
    assert_eq!(run("GET / HTTP/1.1\r\nHost: a\r\n"), Ok(None));
    assert_eq!(run("GET / HTTP/1.1\r"), Ok(None));
    assert_eq!(run(""), Ok(None));
}

#[test]
fn smuggling_vectors_are_refused() {
    let cases = [
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", Reject::TeWithContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked\r\n\r\n", Reject::BadTransferEncoding),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Reject::BadTransferEncoding),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Reject::BadTransferEncoding),
        ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", Reject::BadTransferEncoding),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", Reject::TeOnHttp10),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", Reject::BadContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", Reject::BadContentLength),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", Reject::BadContentLength),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n  folded\r\n\r\n", Reject::ObsFold),
        ("GET / HTTP/1.1\r\nHost : a\r\n\r\n", Reject::SpaceBeforeColon),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n", Reject::InvalidHeaderValue),
        ("GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", Reject::BareLineBreak),
        ("GET / HTTP/1.1\nHost: a\n\n", Reject::BareLineBreak),
        ("GET / HTTP/1.1\r\nX(A): 1\r\nHost: a\r\n\r\n", Reject::InvalidHeaderName),
        ("GET / HTTP/1.1\r\n\r\n", Reject::MissingHost),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Reject::DuplicateHost),
        ("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", Reject::InvalidHost),
        ("GET http://b/ HTTP/1.1\r\nHost: a\r\n\r\n", Reject::HostMismatch),
        ("GET http://a:81/ HTTP/1.1\r\nHost: a\r\n\r\n", Reject::HostMismatch),
        ("GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", Reject::InvalidTarget),
        ("GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", Reject::MalformedRequestLine),
        ("GET * HTTP/1.1\r\nHost: a\r\n\r\n", Reject::InvalidTarget),
        ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", Reject::UnsupportedVersion),
        ("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Reject::MalformedRequestLine),
        ("POST / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\n\r\n", Reject::UnknownExpectation),
        ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n", Reject::BodyTooLarge),
    ];
    for (head, want) in cases {
        assert_eq!(run(head), Err(want), "{head:?}");
    }
}

#[test]
fn limits_give_414_and_431() {
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "a".repeat(100));
    assert_eq!(reject(&long_target), Reject::UriTooLong);
    // Detected before the line is even complete.
    assert_eq!(
        reject(&format!("GET /{}", "a".repeat(100))),
        Reject::UriTooLong
    );
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "b".repeat(2000)
    );
    assert_eq!(reject(&big), Reject::HeaderTooLarge);
    assert_eq!(reject(&big[..1500]), Reject::HeaderTooLarge);
    let many: String = (0..=MAX_HEADER_COUNT)
        .map(|i| format!("x{i}: 1\r\n"))
        .collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    let mut roomy = limits();
    roomy.max_header_bytes = 64 * 1024;
    assert_eq!(check(many.as_bytes(), &roomy), Err(Reject::TooManyHeaders));
}

#[test]
fn upgrade_and_close_are_noticed() {
    let ws = run("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .expect("ok")
        .expect("complete");
    assert!(ws.upgrade);
    let close = run("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .expect("ok")
        .expect("complete");
    assert!(close.close);
    let ten = run("GET / HTTP/1.0\r\n\r\n")
        .expect("ok")
        .expect("complete");
    assert!(ten.close);
}

#[test]
fn plain_host_fast_path_accepts_only_what_the_full_parse_accepts() {
    let plain = [
        "a",
        "example.com",
        "127.0.0.1:18280",
        "my-svc.ns.local:8080",
        "A:1",
    ];
    for host in plain {
        assert!(
            plain_host(host.as_bytes()),
            "{host} should take the fast path"
        );
        assert!(matches!(parse_host(host.as_bytes()), Ok(Some(_))), "{host}");
    }
    // Not plain: these go to the full parse, which decides (some pass, some are refused).
    let other = [
        "", "[::1]:80", "a:", "a:123456", "a:b", ":80", "u@a", "a b", "a_b", "a%20",
    ];
    for host in other {
        assert!(
            !plain_host(host.as_bytes()),
            "{host:?} must take the full parse"
        );
    }
    // The whole check still refuses a bad Host on an origin-form target, fast path or not.
    assert_eq!(
        reject("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
        Reject::InvalidHost
    );
    assert_eq!(
        reject("GET / HTTP/1.1\r\nHost: u@a\r\n\r\n"),
        Reject::InvalidHost
    );
    assert!(run("GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").is_ok());
}

/// The byte-by-byte scans `memchr` replaced, kept as the reference the fast ones must agree
/// with on any input.
mod reference {
    use super::Reject;

    pub fn scan_line_breaks(buf: &[u8], from: usize) -> Result<Option<usize>, Reject> {
        let mut line_start = from;
        for i in from..buf.len() {
            match buf[i] {
                b'\r' => match buf.get(i + 1) {
                    Some(b'\n') | None => {}
                    Some(_) => return Err(Reject::BareLineBreak),
                },
                b'\n' => {
                    if i == 0 || buf[i - 1] != b'\r' {
                        return Err(Reject::BareLineBreak);
                    }
                    if i + 1 - line_start == 2 {
                        return Ok(Some(i + 1));
                    }
                    line_start = i + 1;
                }
                _ => {}
            }
        }
        Ok(None)
    }

    pub fn check_header_lines(head: &[u8]) -> Result<(), Reject> {
        for line in head.split(|&b| b == b'\n').skip(1) {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            if matches!(line[0], b' ' | b'\t') {
                return Err(Reject::ObsFold);
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return Err(Reject::InvalidHeaderName);
            };
            if line[..colon].iter().any(|&b| matches!(b, b' ' | b'\t')) {
                return Err(Reject::SpaceBeforeColon);
            }
        }
        Ok(())
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]

    /// Bytes drawn mostly from the ones the scans act on, so line breaks, folds and colons
    /// land everywhere, including at the edges of the buffer.
    #[test]
    fn memchr_scans_agree_with_the_byte_loops(
        buf in proptest::collection::vec(
            proptest::sample::select(b"\r\n\r\n: \tab".to_vec()),
            0..64,
        ),
        from in 0usize..4,
    ) {
        let from = from.min(buf.len());
        proptest::prop_assert_eq!(
            scan_line_breaks(&buf, from),
            reference::scan_line_breaks(&buf, from)
        );
        // check_header_lines runs on complete heads: whatever ends in an empty line.
        let mut head = buf.clone();
        head.extend_from_slice(b"\r\n\r\n");
        proptest::prop_assert_eq!(
            check_header_lines(&head),
            reference::check_header_lines(&head)
        );
    }
}
