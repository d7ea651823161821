//! `[clusters.NAME]`: balancing, and static endpoints or exactly one discovery source; the
//! per-cluster policies are in `policy.rs`, discovery sources in `discovery.rs`.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::ctx::Ctx;
use super::discovery::discovery;
use super::policy::{circuit_breaker, cluster_tls, health_check, outlier, pool};
use crate::config::defaults;
use crate::config::model::*;
use crate::config::raw::*;

const BALANCE: &[(&str, BalanceAlgorithm)] = &[
    ("round_robin", BalanceAlgorithm::RoundRobin),
    ("random", BalanceAlgorithm::Random),
    ("least_request", BalanceAlgorithm::LeastRequest),
    ("peak_ewma", BalanceAlgorithm::PeakEwma),
    ("least_connections", BalanceAlgorithm::LeastConnections),
    ("ring_hash", BalanceAlgorithm::RingHash),
    ("maglev", BalanceAlgorithm::Maglev),
];

/// The cluster default (README, `[clusters.NAME]`): `least_request` reacts to slow or overloaded
/// endpoints without any tuning.
const DEFAULT_BALANCE: BalanceAlgorithm = BalanceAlgorithm::LeastRequest;

pub(super) fn clusters(
    cx: &mut Ctx<'_>,
    raw: &BTreeMap<Str, Spanned<RawCluster>>,
) -> BTreeMap<String, ClusterConfig> {
    raw.iter()
        .map(|(name, c)| {
            cx.non_empty(name, "cluster name");
            if name.get_ref().starts_with(super::synthetic::INBOUND_PREFIX) {
                cx.err(
                    name.span(),
                    "cluster name: `inbound:` names are reserved for the inbound listener's ports",
                );
            }
            (name.get_ref().clone(), cluster(cx, name, c.get_ref()))
        })
        .collect()
}

fn cluster(cx: &mut Ctx<'_>, name: &Str, c: &RawCluster) -> ClusterConfig {
    let protocol = cx.one_of(
        c.protocol.as_ref(),
        "protocol",
        &[("http1", Protocol::Http1), ("h2", Protocol::H2)],
        Protocol::Http1,
    );
    let balance = cx.one_of(c.balance.as_ref(), "balance", BALANCE, DEFAULT_BALANCE);
    let hash_on = match &c.hash_on {
        Some(h) if !balance.is_hashing() => {
            cx.err(
                h.span(),
                format!(
                    "hash_on: only used by ring_hash and maglev, not {}",
                    balance.as_str()
                ),
            );
            None
        }
        Some(h) => hash_on(cx, h),
        None => {
            if balance.is_hashing() {
                let span = c.balance.as_ref().map_or(name.span(), Spanned::span);
                cx.err(
                    span,
                    format!("balance = {:?} needs `hash_on`", balance.as_str()),
                );
            }
            None
        }
    };
    let balance_factor = c.balance_factor.as_ref().and_then(|f| {
        let v = *f.get_ref();
        if !balance.is_hashing() {
            cx.err(
                f.span(),
                format!(
                    "balance_factor: only used by ring_hash and maglev, not {}",
                    balance.as_str()
                ),
            );
            None
        } else if !(v.is_finite() && v > 1.0) {
            cx.err(
                f.span(),
                format!("balance_factor: must be greater than 1.0 (got {v})"),
            );
            None
        } else {
            Some(v)
        }
    });
    ClusterConfig {
        name: name.get_ref().clone(),
        protocol,
        balance,
        hash_on,
        balance_factor,
        slow_start: cx.duration(c.slow_start.as_ref(), "slow_start", Duration::ZERO),
        endpoints: endpoint_source(cx, name, c),
        connect_timeout: cx.positive_duration(
            c.connect_timeout.as_ref(),
            "connect_timeout",
            defaults::CONNECT_TIMEOUT,
        ),
        pool: c
            .pool
            .as_ref()
            .map(|p| pool(cx, p))
            .unwrap_or_else(defaults::pool),
        health_check: c.health_check.as_ref().map(|h| health_check(cx, h)),
        outlier_detection: c
            .outlier_detection
            .as_ref()
            .map(|o| outlier(cx, o))
            .unwrap_or_else(defaults::outlier_detection),
        circuit_breaker: circuit_breaker(c.circuit_breaker.as_ref()),
        panic_threshold: cx.fraction(
            c.panic_threshold.as_ref(),
            "panic_threshold",
            defaults::PANIC_THRESHOLD,
        ),
        tls: c.tls.as_ref().map(|t| cluster_tls(cx, t)),
        addresses: c
            .addresses
            .iter()
            .flatten()
            .filter_map(|a| cx.socket_addr(a, "addresses"))
            .collect(),
        locality: cx.one_of(
            c.locality.as_ref(),
            "locality",
            &[
                ("off", Locality::Off),
                ("prefer_local", Locality::PreferLocal),
            ],
            Locality::Off,
        ),
        locality_spill_ratio: spill_ratio(cx, c.locality_spill_ratio.as_ref()),
    }
}

/// `locality_spill_ratio`: finite and greater than 1 (at 1 or below the local zone would spill
/// while no busier than the others).
fn spill_ratio(cx: &mut Ctx<'_>, value: Option<&Spanned<f64>>) -> f64 {
    let Some(value) = value else {
        return defaults::LOCALITY_SPILL_RATIO;
    };
    let v = *value.get_ref();
    if v.is_finite() && v > 1.0 {
        return v;
    }
    cx.err(
        value.span(),
        format!("locality_spill_ratio: must be greater than 1.0 (got {v})"),
    );
    defaults::LOCALITY_SPILL_RATIO
}

/// A virtual address (`addresses`) selects one cluster for outbound interception: the same
/// address in two clusters (or twice in one) is an error at its second appearance.
pub(super) fn unique_addresses(
    cx: &mut Ctx<'_>,
    raw: &BTreeMap<Str, Spanned<RawCluster>>,
    clusters: &BTreeMap<String, ClusterConfig>,
) {
    let mut seen: BTreeMap<std::net::SocketAddr, &str> = BTreeMap::new();
    for (name, c) in raw {
        let Some(cluster) = clusters.get(name.get_ref()) else {
            continue;
        };
        // The validated list keeps only the addresses that parsed, in file order.
        let parsed = c
            .get_ref()
            .addresses
            .iter()
            .flatten()
            .filter(|a| a.get_ref().parse::<std::net::SocketAddr>().is_ok());
        for (raw_address, address) in parsed.zip(&cluster.addresses) {
            if let Some(first) = seen.insert(*address, name.get_ref()) {
                cx.err(
                    raw_address.span(),
                    format!("addresses: {address} already selects cluster {first:?}"),
                );
            }
        }
    }
}

fn hash_on(cx: &mut Ctx<'_>, raw: &Str) -> Option<HashOn> {
    let v = raw.get_ref();
    let parsed = match v.split_once(':') {
        Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
            .ok()
            .map(HashOn::Header),
        Some(("cookie", name)) if is_token(name) => Some(HashOn::Cookie(name.to_owned())),
        Some(("query", name)) if !name.is_empty() => Some(HashOn::Query(name.to_owned())),
        None if v == "source_ip" => Some(HashOn::SourceIp),
        None if v == "path" => Some(HashOn::Path),
        _ => None,
    };
    if parsed.is_none() {
        cx.err(
            raw.span(),
            format!("hash_on: {v:?} is not one of \"header:NAME\", \"cookie:NAME\", \"query:NAME\", \"source_ip\", \"path\""),
        );
    }
    parsed
}

/// A cookie name is an RFC 9110 token, the grammar of a field name: `http` checks it
/// (config uses nothing of ours, so not `wire::headers::is_tchar`).
fn is_token(s: &str) -> bool {
    HeaderName::from_bytes(s.as_bytes()).is_ok()
}

fn endpoint_source(cx: &mut Ctx<'_>, name: &Str, c: &RawCluster) -> EndpointSource {
    match (&c.endpoints, &c.discovery) {
        (Some(_), Some(d)) => {
            cx.err(
                d.span(),
                "discovery: a cluster has either `endpoints` or `discovery`, not both",
            );
            EndpointSource::Static(Vec::new())
        }
        (None, None) => {
            cx.err(
                name.span(),
                format!(
                    "cluster {:?}: needs `endpoints` or `discovery`",
                    name.get_ref()
                ),
            );
            EndpointSource::Static(Vec::new())
        }
        (Some(list), None) => EndpointSource::Static(static_endpoints(cx, list)),
        (None, Some(d)) => discovery(cx, d),
    }
}

fn static_endpoints(
    cx: &mut Ctx<'_>,
    list: &Spanned<Vec<Spanned<RawEndpoint>>>,
) -> Vec<StaticEndpoint> {
    if list.get_ref().is_empty() {
        cx.err(list.span(), "endpoints: must not be empty");
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for entry in list.get_ref() {
        let (address, weight, zone) = match entry.get_ref() {
            RawEndpoint::Address(a) => (
                endpoint_address(cx, &Spanned::new(entry.span(), a.clone())),
                None,
                None,
            ),
            RawEndpoint::Table(t) => (
                endpoint_address(cx, &t.address),
                t.weight.as_ref(),
                t.zone.clone(),
            ),
        };
        let weight = match weight {
            Some(w) if *w.get_ref() == 0 => {
                cx.err(w.span(), "endpoints.weight: must be greater than 0");
                1
            }
            Some(w) => *w.get_ref(),
            None => 1,
        };
        if let Some(address) = address {
            if !seen.insert(address) {
                let span = match entry.get_ref() {
                    RawEndpoint::Table(t) => t.address.span(),
                    RawEndpoint::Address(_) => entry.span(),
                };
                cx.err(span, format!("endpoints: {address} is listed twice"));
            }
            out.push(StaticEndpoint {
                address,
                weight,
                zone,
            });
        }
    }
    out
}

fn endpoint_address(cx: &mut Ctx<'_>, raw: &Str) -> Option<std::net::SocketAddr> {
    if let Ok(addr) = raw.get_ref().parse() {
        return Some(addr);
    }
    cx.err(
        raw.span(),
        format!(
            "endpoints: {:?} is not an IP socket address (\"127.0.0.1:9001\" or \"[::1]:9001\"); \
             host names go through discovery = {{ dns = \"name:port\" }}",
            raw.get_ref()
        ),
    );
    None
}
