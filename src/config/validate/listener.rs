//! `[[listeners]]`: names, addresses, TLS, and the transparent modes (`mode = "outbound"` /
//! `"inbound"`) with their settings, which only those modes may carry.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Range;

use toml::Spanned;

use super::ctx::Ctx;
use crate::config::defaults;
use crate::config::model::*;
use crate::config::raw::*;

/// The spellings of `mode`; the value each stands for is built by [`mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ModeName {
    Http,
    Outbound,
    Inbound,
}

const MODES: &[(&str, ModeName)] = &[
    ("http", ModeName::Http),
    ("outbound", ModeName::Outbound),
    ("inbound", ModeName::Inbound),
];

const MTLS: &[(&str, MtlsMode)] = &[
    ("permissive", MtlsMode::Permissive),
    ("strict", MtlsMode::Strict),
];

pub(super) fn listeners(
    cx: &mut Ctx<'_>,
    raw: &[Spanned<RawListener>],
    bound: &mut Vec<(SocketAddr, Range<usize>, &'static str)>,
) -> Vec<ListenerConfig> {
    if raw.is_empty() {
        cx.err(0..0, "no [[listeners]]: at least one listener is required");
    }
    let mut names: HashMap<String, ()> = HashMap::new();
    // The first listener of each transparent mode: synthetic routes are named after the
    // cluster or port alone (`outbound:orders`), so a second one of a mode would clash.
    let mut first_of_mode: HashMap<ModeName, ()> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for spanned in raw {
        let l = spanned.get_ref();
        if cx.non_empty(&l.name, "name") && names.insert(l.name.get_ref().clone(), ()).is_some() {
            cx.err(
                l.name.span(),
                format!("duplicate listener name {:?}", l.name.get_ref()),
            );
        }
        let listen = cx.socket_addr(&l.listen, "listen");
        if let Some(addr) = listen {
            bound.push((addr, l.listen.span(), "listen"));
        }
        let tls = l.tls.as_ref().and_then(|t| listener_tls(cx, t));
        let name = cx.one_of(l.mode.as_ref(), "mode", MODES, ModeName::Http);
        if name != ModeName::Http && first_of_mode.insert(name, ()).is_some() {
            if let Some(value) = &l.mode {
                cx.err(
                    value.span(),
                    format!(
                        "mode: at most one listener with mode = {:?}",
                        value.get_ref()
                    ),
                );
            }
        }
        if let (Some(raw_tls), true) = (&l.tls, name != ModeName::Http) {
            cx.err(
                raw_tls.span(),
                "tls: not for an intercepting listener (the tunnel between sidecars uses [identity])",
            );
        }
        out.push(ListenerConfig {
            name: l.name.get_ref().clone(),
            listen: listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            tls,
            trusted_hops: l.trusted_hops.unwrap_or(0),
            mode: mode(cx, l, name),
        });
    }
    out
}

/// The listener's mode with its settings; keys that do not belong to the mode are errors at
/// the key's value.
fn mode(cx: &mut Ctx<'_>, l: &RawListener, name: ModeName) -> ListenerMode {
    let inbound_only: [(Option<Range<usize>>, &str); 3] = [
        (l.mtls.as_ref().map(Spanned::span), "mtls"),
        (l.allow.as_ref().map(Spanned::span), "allow"),
        (
            l.identity_header.as_ref().map(Spanned::span),
            "identity_header",
        ),
    ];
    let ports_span = l.ports.as_ref().map(Spanned::span);
    match name {
        ModeName::Http => {
            let intercepting: [(Option<Range<usize>>, &str); 3] = [
                (
                    l.detect_timeout.as_ref().map(Spanned::span),
                    "detect_timeout",
                ),
                (l.opaque_ports.as_ref().map(Spanned::span), "opaque_ports"),
                (
                    l.opaque_idle_timeout.as_ref().map(Spanned::span),
                    "opaque_idle_timeout",
                ),
            ];
            for (span, key) in intercepting {
                if let Some(span) = span {
                    cx.err(
                        span,
                        format!("{key}: only for mode = \"outbound\" or \"inbound\""),
                    );
                }
            }
            not_here(cx, &inbound_only, ports_span);
            ListenerMode::Http
        }
        ModeName::Outbound => {
            not_here(cx, &inbound_only, ports_span);
            ListenerMode::Outbound(interception(cx, l))
        }
        ModeName::Inbound => {
            let policy = PortPolicy {
                mtls: cx.one_of(l.mtls.as_ref(), "mtls", MTLS, MtlsMode::Permissive),
                allow: allow_list(cx, l.allow.as_ref(), "allow"),
            };
            ListenerMode::Inbound(InboundConfig {
                interception: interception(cx, l),
                identity_header: l
                    .identity_header
                    .as_ref()
                    .and_then(|h| cx.header_name(h, "identity_header")),
                ports: ports(cx, l, &policy),
                policy,
            })
        }
    }
}

/// Errors for the inbound-only keys on a listener of another mode.
fn not_here(cx: &mut Ctx<'_>, keys: &[(Option<Range<usize>>, &str)], ports: Option<Range<usize>>) {
    let ports = ports.map(|span| (span, "ports"));
    let present = keys
        .iter()
        .filter_map(|(span, key)| span.clone().map(|s| (s, *key)))
        .chain(ports);
    for (span, key) in present {
        cx.err(span, format!("{key}: only for mode = \"inbound\""));
    }
}

fn interception(cx: &mut Ctx<'_>, l: &RawListener) -> Interception {
    let mut opaque_ports: Vec<u16> = Vec::new();
    for port in l.opaque_ports.iter().flat_map(|p| p.get_ref()) {
        if *port.get_ref() == 0 {
            cx.err(port.span(), "opaque_ports: 0 is not a port");
        } else {
            opaque_ports.push(*port.get_ref());
        }
    }
    opaque_ports.sort_unstable();
    opaque_ports.dedup();
    Interception {
        detect_timeout: cx.positive_duration(
            l.detect_timeout.as_ref(),
            "detect_timeout",
            defaults::DETECT_TIMEOUT,
        ),
        opaque_ports,
        opaque_idle_timeout: cx.positive_duration(
            l.opaque_idle_timeout.as_ref(),
            "opaque_idle_timeout",
            defaults::OPAQUE_IDLE_TIMEOUT,
        ),
    }
}

/// `ports = { "8080" = { mtls = "strict", allow = [...] } }`: keys are port numbers; a key an
/// entry leaves out takes the listener's value.
fn ports(cx: &mut Ctx<'_>, l: &RawListener, default: &PortPolicy) -> BTreeMap<u16, PortPolicy> {
    let mut out = BTreeMap::new();
    let Some(ports) = &l.ports else { return out };
    for (key, entry) in ports.get_ref() {
        let port = match key.get_ref().parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => {
                cx.err(
                    key.span(),
                    format!("ports: {:?} is not a port number (1-65535)", key.get_ref()),
                );
                continue;
            }
        };
        let entry = entry.get_ref();
        let allow = match &entry.allow {
            Some(list) => allow_list(cx, Some(list), "ports.allow"),
            None => default.allow.clone(),
        };
        let policy = PortPolicy {
            mtls: cx.one_of(entry.mtls.as_ref(), "ports.mtls", MTLS, default.mtls),
            allow,
        };
        out.insert(port, policy);
    }
    out
}

/// An `allow` list of identities: each must be non-empty.
fn allow_list(cx: &mut Ctx<'_>, raw: Option<&Spanned<Vec<Str>>>, key: &str) -> Vec<String> {
    let Some(raw) = raw else { return Vec::new() };
    for identity in raw.get_ref() {
        cx.non_empty(identity, key);
    }
    names(raw.get_ref())
}

fn names(list: &[Str]) -> Vec<String> {
    list.iter().map(|s| s.get_ref().clone()).collect()
}

pub(super) fn listener_tls(cx: &mut Ctx<'_>, raw: &Spanned<RawListenerTls>) -> Option<ListenerTls> {
    let t = raw.get_ref();
    let client_ca = t.client_ca.as_deref().map(|p| cx.path(p));
    let single = match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => Some(CertKeyPair {
            cert: cx.path(cert),
            key: cx.path(key),
        }),
        (None, None) => None,
        _ => {
            cx.err(raw.span(), "tls: `cert` and `key` go together");
            return None;
        }
    };
    match (single, &t.certs) {
        (Some(_), Some(certs)) => {
            cx.err(
                certs.span(),
                "tls: use either `cert` + `key` or `certs`, not both",
            );
            None
        }
        (Some(pair), None) => Some(ListenerTls {
            certs: vec![pair],
            client_ca,
        }),
        (None, Some(certs)) if certs.get_ref().is_empty() => {
            cx.err(certs.span(), "tls.certs: must not be empty");
            None
        }
        (None, Some(certs)) => {
            let certs = certs
                .get_ref()
                .iter()
                .map(|c| CertKeyPair {
                    cert: cx.path(&c.cert),
                    key: cx.path(&c.key),
                })
                .collect();
            Some(ListenerTls { certs, client_ca })
        }
        (None, None) => {
            cx.err(raw.span(), "tls: needs `cert` and `key`, or `certs`");
            None
        }
    }
}

/// `mtls = "strict"` accepts only our tunnel, which needs `[identity]`: without it every
/// connection would be refused, so it is an error at each `"strict"`.
pub(super) fn strict_needs_identity(cx: &mut Ctx<'_>, raw: &[Spanned<RawListener>]) {
    for spanned in raw {
        let l = spanned.get_ref();
        // Other modes' `mtls` is already an error of its own.
        if l.mode.as_ref().map(|m| m.get_ref().as_str()) != Some("inbound") {
            continue;
        }
        let entries = l.ports.iter().flat_map(|p| p.get_ref().values());
        let strict = l
            .mtls
            .iter()
            .chain(entries.filter_map(|e| e.get_ref().mtls.as_ref()))
            .filter(|value| value.get_ref() == "strict");
        for value in strict {
            cx.err(
                value.span(),
                "mtls: \"strict\" needs an [identity] section (only the mTLS tunnel is accepted)",
            );
        }
    }
}
