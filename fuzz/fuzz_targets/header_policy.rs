//! The header policy on any header block: never panics, hop-by-hop fields (and the ones
//! `Connection` names) are gone after stripping, and `x-forwarded-for` and `forwarded` end
//! with the peer.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use switchyard::proxy::headers;

fuzz_target!(|data: &[u8]| {
    let mut map = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(&line[colon + 1..]),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    let named: Vec<String> = map
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| HeaderName::from_bytes(t.as_bytes()).is_ok())
        .collect();
    headers::strip_hop_by_hop(&mut map, headers::Present::scan(&map));
    for name in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
    ] {
        assert!(!map.contains_key(name), "{name} survived");
    }
    for name in named {
        assert!(
            !map.contains_key(name.as_str()),
            "{name} (named in Connection) survived"
        );
    }
    let peer = std::net::IpAddr::from([127, 0, 0, 1]);
    let view = headers::ConnView::new(peer, 80, false);
    let host = HeaderValue::from_static("app.example");
    headers::set_forwarded(&mut map, headers::Present::scan(&map), &view, 2, Some(&host));
    let xff = map
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(xff.ends_with("127.0.0.1"), "{xff}");
    let forwarded = map
        .get("forwarded")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(forwarded.ends_with("for=127.0.0.1;proto=http"), "{forwarded}");
});
