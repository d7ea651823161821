//! Route `headers` rules and their names/values.

use http::{HeaderName, HeaderValue};

use super::ctx::Ctx;
use crate::config::model::HeaderRules;
use crate::config::raw::{RawHeaderRules, Str, StrMap};

/// Headers the proxy itself manages (framing, hop-by-hop, routing); a route may not add or
/// remove them, because doing so could desynchronise message framing between the two sides.
const PROXY_MANAGED: &[&str] = &[
    "connection",
    "content-length",
    "host",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(super) fn header_rules(cx: &mut Ctx<'_>, raw: &RawHeaderRules) -> HeaderRules {
    HeaderRules {
        request_add: header_adds(cx, raw.request_add.as_ref(), "headers.request_add"),
        request_remove: header_removes(cx, raw.request_remove.as_ref(), "headers.request_remove"),
        response_add: header_adds(cx, raw.response_add.as_ref(), "headers.response_add"),
        response_remove: header_removes(
            cx,
            raw.response_remove.as_ref(),
            "headers.response_remove",
        ),
    }
}

fn header_adds(
    cx: &mut Ctx<'_>,
    raw: Option<&StrMap>,
    key: &str,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::new();
    for (name, value) in raw.into_iter().flatten() {
        let name = managed_check(cx, name, key);
        let value = cx.header_value(value, key);
        if let (Some(name), Some(value)) = (name, value) {
            out.push((name, value));
        }
    }
    out
}

fn header_removes(cx: &mut Ctx<'_>, raw: Option<&Vec<Str>>, key: &str) -> Vec<HeaderName> {
    raw.into_iter()
        .flatten()
        .filter_map(|name| managed_check(cx, name, key))
        .collect()
}

fn managed_check(cx: &mut Ctx<'_>, name: &Str, key: &str) -> Option<HeaderName> {
    let parsed = cx.header_name(name, key)?;
    if PROXY_MANAGED.contains(&parsed.as_str()) {
        cx.err(
            name.span(),
            format!("{key}: {parsed:?} is managed by the proxy and cannot be changed"),
        );
        return None;
    }
    Some(parsed)
}
