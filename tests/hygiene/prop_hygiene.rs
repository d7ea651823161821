//! Properties of the HTTP/1 ingress (issue 16, the stable-Rust half of the `fuzz/` targets):
//! the head parser never panics and never reads past its input; every smuggling twist of a valid
//! head is refused whatever else the head holds; a head is judged the same whether it arrives
//! whole or byte by byte; and over real sockets, a body that hides a second request never lets
//! that request reach the backend.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::support::backend::{Backend, Behavior};
use crate::support::launcher::Proxy;
use crate::support::raw_client::RawConn;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestRunner};
use switchyard::proxy::hygiene::head::{locate, parse, Framing, Head};
use switchyard::proxy::hygiene::{Limits, Reject};

/// What the server makes of `buf` as its buffered input, as `GuardedIo::poll_head` does:
/// `Ok(None)` while the head is incomplete (and still within the limits), the [`Head`] once
/// complete ([`locate`] finds its end, [`parse`] checks it and builds the request), or why it
/// is refused.
fn check(buf: &[u8], limits: &Limits) -> Result<Option<Head>, Reject> {
    let Some(end) = locate(buf, limits)? else {
        return Ok(None);
    };
    let bytes = bytes::Bytes::copy_from_slice(&buf[..end]);
    parse(&bytes, limits, http::HeaderMap::new()).map(|(head, _)| Some(head))
}

fn limits() -> Limits {
    Limits {
        max_header_bytes: 8 * 1024,
        max_uri_bytes: 2 * 1024,
        max_body_bytes: None,
        first_byte_timeout: Duration::from_secs(10),
        header_read_timeout: Duration::from_secs(10),
        body_read_timeout: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(10),
    }
}

/// Ways to make a valid head ambiguous or malformed, each with the rejection it must get.
#[derive(Debug, Clone, Copy)]
enum Twist {
    TeAndCl,
    DoubleChunked,
    LeadingCommaTe,
    GzipChunked,
    TwoTeLines,
    TwoContentLengths,
    SignedContentLength,
    ObsFold,
    SpaceBeforeColon,
    BareLf,
    NulInValue,
    NoHost,
    TwoHosts,
    FragmentInTarget,
}

impl Twist {
    const ALL: [Twist; 14] = [
        Twist::TeAndCl,
        Twist::DoubleChunked,
        Twist::LeadingCommaTe,
        Twist::GzipChunked,
        Twist::TwoTeLines,
        Twist::TwoContentLengths,
        Twist::SignedContentLength,
        Twist::ObsFold,
        Twist::SpaceBeforeColon,
        Twist::BareLf,
        Twist::NulInValue,
        Twist::NoHost,
        Twist::TwoHosts,
        Twist::FragmentInTarget,
    ];

    fn expected(self) -> Reject {
        match self {
            Twist::TeAndCl => Reject::TeWithContentLength,
            Twist::DoubleChunked
            | Twist::LeadingCommaTe
            | Twist::GzipChunked
            | Twist::TwoTeLines => Reject::BadTransferEncoding,
            Twist::TwoContentLengths | Twist::SignedContentLength => Reject::BadContentLength,
            Twist::ObsFold => Reject::ObsFold,
            Twist::SpaceBeforeColon => Reject::SpaceBeforeColon,
            Twist::BareLf => Reject::BareLineBreak,
            Twist::NulInValue => Reject::InvalidHeaderValue,
            Twist::NoHost => Reject::MissingHost,
            Twist::TwoHosts => Reject::DuplicateHost,
            Twist::FragmentInTarget => Reject::InvalidTarget,
        }
    }
}

/// A valid request head, as parts a twist can bend.
#[derive(Debug, Clone)]
struct Valid {
    method: &'static str,
    path: String,
    /// Harmless extra fields, in order.
    extra: Vec<(String, String)>,
    /// `None`: no body; `Some(n)`: `Content-Length: n`.
    length: Option<u32>,
}

fn valid() -> impl Strategy<Value = Valid> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "OPTIONS"]),
        "(/[a-z0-9._~-]{0,12}){1,4}",
        prop::collection::vec(("x-[a-z]{1,10}", "[ -~&&[^ ]][ -~]{0,30}[ -~&&[^ ]]"), 0..6),
        prop::option::of(0u32..100_000),
    )
        .prop_map(|(method, path, extra, length)| Valid {
            method,
            path,
            extra,
            length,
        })
}

/// The head text for `valid`, bent by `twist`.
fn render(valid: &Valid, twist: Option<Twist>) -> Vec<u8> {
    let target = match twist {
        Some(Twist::FragmentInTarget) => format!("{}#frag", valid.path),
        _ => valid.path.clone(),
    };
    let mut lines = vec![format!("{} {target} HTTP/1.1", valid.method)];
    match twist {
        Some(Twist::NoHost) => {}
        Some(Twist::TwoHosts) => {
            lines.push("Host: a.example".into());
            lines.push("Host: b.example".into());
        }
        _ => lines.push("Host: app.example".into()),
    }
    for (name, value) in &valid.extra {
        lines.push(format!("{name}: {value}"));
    }
    let length = valid.length.unwrap_or(5);
    match twist {
        Some(Twist::TeAndCl) => {
            lines.push("Transfer-Encoding: chunked".into());
            lines.push(format!("Content-Length: {length}"));
        }
        Some(Twist::DoubleChunked) => lines.push("Transfer-Encoding: chunked, chunked".into()),
        Some(Twist::LeadingCommaTe) => lines.push("Transfer-Encoding: ,chunked".into()),
        Some(Twist::GzipChunked) => lines.push("Transfer-Encoding: gzip, chunked".into()),
        Some(Twist::TwoTeLines) => {
            lines.push("Transfer-Encoding: chunked".into());
            lines.push("Transfer-Encoding: chunked".into());
        }
        Some(Twist::TwoContentLengths) => {
            lines.push(format!("Content-Length: {length}"));
            lines.push(format!("Content-Length: {}", u64::from(length) + 1));
        }
        Some(Twist::SignedContentLength) => lines.push(format!("Content-Length: +{length}")),
        Some(Twist::ObsFold) => {
            lines.push("X-Folded: first".into());
            lines.push(" continued".into());
        }
        Some(Twist::SpaceBeforeColon) => lines.push("X-Spaced : value".into()),
        Some(Twist::NulInValue) => lines.push("X-Nul: a\0b".into()),
        _ => {
            if let Some(n) = valid.length {
                lines.push(format!("Content-Length: {n}"));
            }
        }
    }
    let mut text = lines.join("\r\n") + "\r\n\r\n";
    if let Some(Twist::BareLf) = twist {
        // One line ended by LF alone, in the middle of the head.
        text = text.replacen("\r\nHost", "\nHost", 1);
    }
    text.into_bytes()
}

proptest! {
    #![proptest_config(crate::support::proptest_config(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_a_head_never_claims_more_than_it_read(
        bytes in prop::collection::vec(any::<u8>(), 0..2048)
    ) {
        if let Ok(Some(head)) = check(&bytes, &limits()) {
            prop_assert!(head.len <= bytes.len());
            prop_assert!(head.len <= limits().max_header_bytes);
        }
    }

    #[test]
    fn header_shaped_noise_never_panics(
        lines in prop::collection::vec("[ -~\t\r\n\0]{0,40}", 0..20)
    ) {
        let text = format!("GET / HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n"));
        let _ = check(text.as_bytes(), &limits());
    }

    #[test]
    fn a_valid_head_passes_with_the_framing_it_declares(valid in valid()) {
        let bytes = render(&valid, None);
        let head = check(&bytes, &limits()).unwrap().expect("complete head");
        prop_assert_eq!(head.len, bytes.len());
        let want = match valid.length {
            Some(n) => Framing::Length(u64::from(n)),
            None => Framing::None,
        };
        prop_assert_eq!(head.framing, want);
    }

    #[test]
    fn every_twist_is_refused_with_its_reason(
        valid in valid(),
        twist in prop::sample::select(Twist::ALL.to_vec()),
    ) {
        let bytes = render(&valid, Some(twist));
        prop_assert_eq!(check(&bytes, &limits()), Err(twist.expected()));
    }

    #[test]
    fn a_head_arriving_in_pieces_is_judged_as_the_whole(
        valid in valid(),
        twist in prop::option::of(prop::sample::select(Twist::ALL.to_vec())),
    ) {
        let bytes = render(&valid, twist);
        let whole = check(&bytes, &limits());
        // Every proper prefix is either "not complete yet" or the same refusal, never a head
        // that ends early.
        for cut in 0..bytes.len() {
            match check(&bytes[..cut], &limits()) {
                Ok(None) => {}
                Err(reject) => prop_assert_eq!(Err(reject), whole),
                Ok(Some(head)) => prop_assert!(false, "prefix {cut} parsed as {head:?}"),
            }
        }
    }
}

/// Over real sockets: pipelined requests where one twisted request's body carries a complete
/// second request (`GET /smuggled`). Whatever the twist, the proxy answers 400 and closes, and
/// the backend never sees `/smuggled` — the issue's "the upstream never sees a request the
/// client's framing did not contain".
#[test]
fn a_hidden_request_in_a_twisted_body_never_reaches_the_backend() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = Proxy::start_toml(&format!(
        "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\ncluster = \"app\"\n\n[clusters.app]\nendpoints = [\"{}\"]\n",
        backend.addr()
    ));
    let addr = proxy.addr("public");
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: app.example\r\n\r\n";
    let body_twists: Vec<Twist> = Twist::ALL
        .into_iter()
        .filter(|t| !matches!(t, Twist::FragmentInTarget))
        .collect();
    let mut runner = TestRunner::new(RunnerConfig {
        cases: 48,
        ..RunnerConfig::default()
    });
    runner
        .run(
            &(valid(), prop::sample::select(body_twists), 0usize..3),
            |(mut valid, twist, before)| {
                // The declared length covers a chunked "0" terminator plus the hidden request,
                // so a parser that believes the wrong framing sees two requests.
                let payload = format!("0\r\n\r\n{hidden}");
                valid.length = Some(payload.len() as u32);
                let mut wire = Vec::new();
                for i in 0..before {
                    wire.extend_from_slice(
                        format!("GET /ok/{i} HTTP/1.1\r\nHost: app.example\r\n\r\n").as_bytes(),
                    );
                }
                wire.extend_from_slice(&render(&valid, Some(twist)));
                wire.extend_from_slice(payload.as_bytes());
                let mut conn = RawConn::connect(addr);
                conn.send(&wire).unwrap();
                for _ in 0..before {
                    prop_assert_eq!(conn.read_response().status, 200);
                }
                let refused = conn.read_response();
                prop_assert_eq!(refused.status, 400, "{:?}", twist);
                prop_assert!(conn.wait_closed(Duration::from_secs(5)));
                prop_assert!(
                    backend
                        .requests()
                        .iter()
                        .all(|r| r.uri.path() != "/smuggled"),
                    "the backend saw the hidden request after {:?}",
                    twist
                );
                Ok(())
            },
        )
        .unwrap();
    proxy.shutdown();
}
