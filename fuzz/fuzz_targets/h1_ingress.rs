//! The HTTP/1 ingress parser against a second parser: any head ours accepts (`head::locate`,
//! then `head::parse`, as `GuardedIo::poll_head` reads it), plain httparse must read as the same
//! head — same length, and a body framing that agrees — so no request can be framed one way by
//! us and another way by a lenient reader after us. tests/hygiene/prop_hygiene.rs runs the smuggling
//! properties, and a real-socket one, on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use switchyard::proxy::hygiene::head::{locate, parse, Framing};
use switchyard::proxy::hygiene::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_header_bytes: 16 * 1024,
        max_uri_bytes: 8 * 1024,
        max_body_bytes: None,
        first_byte_timeout: Duration::from_secs(1),
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        keepalive_timeout: Duration::from_secs(1),
    };
    let Ok(Some(end)) = locate(data, &limits) else {
        return;
    };
    let bytes = bytes::Bytes::copy_from_slice(&data[..end]);
    let Ok((head, _)) = parse(&bytes, &limits, http::HeaderMap::new()) else {
        return;
    };
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut fields);
    match req.parse(data) {
        Ok(httparse::Status::Complete(len)) => assert_eq!(len, head.len, "head lengths differ"),
        other => panic!("guard accepted a head httparse reads as {other:?}"),
    }
    let lengths: Vec<&[u8]> = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
        .map(|h| h.value)
        .collect();
    let chunked = req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    match head.framing {
        Framing::None => assert!(lengths.is_empty() && !chunked),
        Framing::Length(n) => {
            assert!(!chunked && lengths.len() == 1);
            assert_eq!(
                std::str::from_utf8(lengths[0])
                    .ok()
                    .and_then(|v| v.trim().parse().ok()),
                Some(n)
            );
        }
        Framing::Chunked => assert!(chunked && lengths.is_empty()),
    }
});
