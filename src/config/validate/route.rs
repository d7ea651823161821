//! `[[routes]]`: names, listener and cluster references, match conditions, policies.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use http::Method;
use regex::Regex;
use toml::Spanned;

use super::ctx::{is_host_name, Ctx};
use super::headers::header_rules;
use crate::config::defaults;
use crate::config::model::*;
use crate::config::raw::*;

const RETRY_ON: &[(&str, RetryOn)] = &[
    ("connect-failure", RetryOn::ConnectFailure),
    ("reset", RetryOn::Reset),
    ("5xx", RetryOn::Status5xx),
    ("gateway-error", RetryOn::GatewayError),
    ("refused-stream", RetryOn::RefusedStream),
];

pub(super) fn routes(
    cx: &mut Ctx<'_>,
    raw: &[Spanned<Box<RawRoute>>],
    listeners: &[ListenerConfig],
    clusters: &BTreeSet<String>,
) -> Vec<Arc<RouteConfig>> {
    let mut names: HashMap<String, ()> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, spanned) in raw.iter().enumerate() {
        let r = spanned.get_ref();
        let name = match &r.name {
            Some(n) => {
                cx.non_empty(n, "name");
                n.get_ref().clone()
            }
            None => format!("route-{}", i + 1),
        };
        if let Some(n) = r
            .name
            .as_ref()
            .filter(|n| super::synthetic::is_reserved(n.get_ref()))
        {
            cx.err(
                n.span(),
                "name: `outbound:` and `inbound:` names are reserved for the transparent listeners' routes",
            );
        }
        if names.insert(name.clone(), ()).is_some() {
            let span = r.name.as_ref().map_or(spanned.span(), Spanned::span);
            cx.err(span, format!("duplicate route name {name:?}"));
        }
        let listener = listener(cx, spanned, listeners);
        let matcher = r
            .matcher
            .as_ref()
            .map(|m| matcher(cx, m.get_ref()))
            .unwrap_or_default();
        let target = target(cx, spanned, clusters);
        let mirror = r.mirror.as_ref().map(|m| mirror(cx, m, &target, clusters));
        let rewrite = r
            .rewrite
            .as_ref()
            .map(|rw| rewrite(cx, rw, r.matcher.as_ref().map(Spanned::get_ref)));
        out.push(Arc::new(RouteConfig {
            name,
            listener,
            matcher,
            target,
            timeout: cx.optional_duration(r.timeout.as_ref(), "timeout", defaults::ROUTE_TIMEOUT),
            idle_timeout: cx.optional_duration(
                r.idle_timeout.as_ref(),
                "idle_timeout",
                defaults::ROUTE_IDLE_TIMEOUT,
            ),
            retry: r.retry.as_ref().map(|rt| retry(cx, rt.get_ref())),
            hedge: r.hedge.as_ref().map(|h| hedge(cx, h.get_ref())),
            cache: r.cache.unwrap_or(false),
            rewrite,
            headers: r
                .headers
                .as_ref()
                .map(|h| header_rules(cx, h))
                .unwrap_or_default(),
            websocket: r.websocket.unwrap_or(defaults::WEBSOCKET),
            debug_headers: r.debug_headers.unwrap_or(false),
            allow: r.allow.as_ref().map(|list| allow(cx, list)),
            mirror,
            rate_limit: r
                .rate_limit
                .as_ref()
                .map(|rl| super::rate_limit::rate_limit(cx, rl)),
            origin: RouteOrigin::File,
        }));
    }
    out
}

/// Route `allow`: the identities that may use the route. An empty list would refuse
/// everyone, which is never what is meant: leaving `allow` out allows everyone.
fn allow(cx: &mut Ctx<'_>, list: &Spanned<Vec<Str>>) -> Vec<String> {
    if list.get_ref().is_empty() {
        cx.err(
            list.span(),
            "allow: must not be empty (leave `allow` out to allow every client)",
        );
    }
    for identity in list.get_ref() {
        cx.non_empty(identity, "allow");
    }
    list.get_ref().iter().map(|s| s.get_ref().clone()).collect()
}

/// The route's listener; may be omitted when there is exactly one listener.
fn listener(
    cx: &mut Ctx<'_>,
    route: &Spanned<Box<RawRoute>>,
    listeners: &[ListenerConfig],
) -> String {
    match &route.get_ref().listener {
        Some(l) => {
            if !listeners.is_empty() && !listeners.iter().any(|x| x.name == *l.get_ref()) {
                let known: Vec<&str> = listeners.iter().map(|x| x.name.as_str()).collect();
                cx.err(
                    l.span(),
                    format!(
                        "unknown listener {:?} (listeners: {})",
                        l.get_ref(),
                        known.join(", ")
                    ),
                );
            }
            l.get_ref().clone()
        }
        None if listeners.len() == 1 => listeners[0].name.clone(),
        None => {
            if listeners.len() > 1 {
                cx.err(
                    route.span(),
                    "route: `listener` is required when there are several listeners",
                );
            }
            String::new()
        }
    }
}

fn target(
    cx: &mut Ctx<'_>,
    route: &Spanned<Box<RawRoute>>,
    clusters: &BTreeSet<String>,
) -> RouteTarget {
    let r = route.get_ref();
    match (&r.cluster, &r.split) {
        (Some(_), Some(split)) => {
            cx.err(
                split.span(),
                "route: set either `cluster` or `split`, not both",
            );
            RouteTarget::Split(Vec::new())
        }
        (None, None) => {
            cx.err(route.span(), "route: needs `cluster` or `split`");
            RouteTarget::Split(Vec::new())
        }
        (Some(cluster), None) => {
            check_cluster(cx, cluster, clusters);
            RouteTarget::Cluster(cluster.get_ref().clone())
        }
        (None, Some(split)) => {
            if split.get_ref().is_empty() {
                cx.err(split.span(), "split: must not be empty");
            }
            let mut seen = BTreeSet::new();
            let mut arms = Vec::new();
            for arm in split.get_ref() {
                let a = arm.get_ref();
                check_cluster(cx, &a.cluster, clusters);
                if !seen.insert(a.cluster.get_ref().clone()) {
                    cx.err(
                        a.cluster.span(),
                        format!("split: cluster {:?} appears twice", a.cluster.get_ref()),
                    );
                }
                if *a.weight.get_ref() == 0 {
                    cx.err(a.weight.span(), "split.weight: must be greater than 0");
                }
                arms.push(WeightedCluster {
                    cluster: a.cluster.get_ref().clone(),
                    weight: *a.weight.get_ref(),
                });
            }
            RouteTarget::Split(arms)
        }
    }
}

fn check_cluster(cx: &mut Ctx<'_>, cluster: &Str, clusters: &BTreeSet<String>) {
    if !clusters.contains(cluster.get_ref()) {
        let known: Vec<&str> = clusters.iter().map(String::as_str).collect();
        let known = if known.is_empty() {
            "none defined".to_owned()
        } else {
            known.join(", ")
        };
        cx.err(
            cluster.span(),
            format!(
                "unknown cluster {:?} (clusters: {known})",
                cluster.get_ref()
            ),
        );
    }
}

fn matcher(cx: &mut Ctx<'_>, m: &RawMatch) -> RouteMatch {
    let mut out = RouteMatch::default();
    if let Some(host) = &m.host {
        out.host = host_match(cx, host);
    }
    // At most one path condition; every extra one is an error at its own position.
    let mut paths: Vec<(&str, &Str)> = [
        ("path", &m.path),
        ("path_prefix", &m.path_prefix),
        ("path_regex", &m.path_regex),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    paths.sort_by_key(|(_, v)| v.span().start);
    for (key, value) in paths.iter().skip(1) {
        cx.err(
            value.span(),
            format!("{key}: only one of path, path_prefix, path_regex per match"),
        );
    }
    if let Some((key, value)) = paths.first() {
        out.path = path_match(cx, key, value);
    }
    if let Some(method) = &m.method {
        let upper = method.get_ref().to_ascii_uppercase();
        match Method::from_bytes(upper.as_bytes()) {
            Ok(v) if !upper.is_empty() => out.method = Some(v),
            _ => cx.err(
                method.span(),
                format!("method: {:?} is not a valid HTTP method", method.get_ref()),
            ),
        }
    }
    for (name, value) in m.headers.iter().flatten() {
        let name = cx.header_name(name, "match.headers");
        let value = cx.header_value(value, "match.headers");
        if let (Some(name), Some(value)) = (name, value) {
            out.headers.push((name, value));
        }
    }
    if let Some(id) = &m.client_identity {
        if cx.non_empty(id, "client_identity") {
            out.client_identity = Some(id.get_ref().clone());
        }
    }
    out
}

fn host_match(cx: &mut Ctx<'_>, host: &Str) -> Option<HostMatch> {
    let lower = host.get_ref().to_ascii_lowercase();
    let parsed = match lower.strip_prefix("*.") {
        Some(suffix) if is_host_name(suffix) => Some(HostMatch::Suffix(format!(".{suffix}"))),
        Some(_) => None,
        None if is_host_name(&lower) || is_ipv6_literal(&lower) => Some(HostMatch::Exact(lower)),
        None => None,
    };
    if parsed.is_none() {
        cx.err(
            host.span(),
            format!(
                "host: {:?} is not a host name or \"*.suffix\" (no port, no other wildcard)",
                host.get_ref()
            ),
        );
    }
    parsed
}

fn is_ipv6_literal(s: &str) -> bool {
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok())
}

fn path_match(cx: &mut Ctx<'_>, key: &str, value: &Str) -> Option<PathMatch> {
    let v = value.get_ref();
    match key {
        "path_regex" => match Regex::new(v) {
            Ok(re) => Some(PathMatch::Regex(re)),
            Err(e) => {
                // regex's message is a multi-line diagram; its last line names the problem.
                let text = e.to_string();
                let reason = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("invalid");
                cx.err(
                    value.span(),
                    format!("path_regex: invalid regex {v:?}: {}", reason.trim()),
                );
                None
            }
        },
        _ if !v.starts_with('/') => {
            cx.err(
                value.span(),
                format!("{key}: must start with '/' (got {v:?})"),
            );
            None
        }
        "path" => Some(PathMatch::Exact(v.clone())),
        _ => Some(PathMatch::Prefix(v.clone())),
    }
}

fn rewrite(cx: &mut Ctx<'_>, raw: &Spanned<RawRewrite>, matcher: Option<&RawMatch>) -> Rewrite {
    let prefix = &raw.get_ref().path_prefix;
    if !prefix.get_ref().starts_with('/') {
        cx.err(
            prefix.span(),
            format!(
                "rewrite.path_prefix: must start with '/' (got {:?})",
                prefix.get_ref()
            ),
        );
    }
    // The rewrite replaces the matched prefix; a regex (or no path condition) has no prefix.
    if !matcher.is_some_and(|m| m.path_prefix.is_some() || m.path.is_some()) {
        cx.err(
            raw.span(),
            "rewrite: needs match.path_prefix or match.path (the part it replaces)",
        );
    }
    Rewrite {
        path_prefix: prefix.get_ref().clone(),
    }
}

fn retry(cx: &mut Ctx<'_>, raw: &RawRetry) -> RetryPolicy {
    let d = defaults::retry();
    let on = match &raw.on {
        Some(list) => list
            .iter()
            .map(|v| cx.one_of(Some(v), "retry.on", RETRY_ON, RetryOn::ConnectFailure))
            .collect(),
        None => d.on,
    };
    let mut statuses = Vec::new();
    for status in raw.statuses.iter().flatten() {
        let code = *status.get_ref();
        if (100..=599).contains(&code) {
            statuses.push(code);
        } else {
            cx.err(
                status.span(),
                format!("retry.statuses: {code} is not an HTTP status (100-599)"),
            );
        }
    }
    let budget = raw.budget.as_ref();
    RetryPolicy {
        attempts: cx.at_least_one(raw.attempts.as_ref(), "retry.attempts", d.attempts),
        on,
        statuses,
        per_try_timeout: cx.optional_duration(
            raw.per_try_timeout.as_ref(),
            "retry.per_try_timeout",
            std::time::Duration::ZERO,
        ),
        backoff: cx.duration(raw.backoff.as_ref(), "retry.backoff", d.backoff),
        buffer: cx.size(raw.buffer.as_ref(), "retry.buffer", d.buffer),
        budget: RetryBudget {
            ratio: cx.fraction(
                budget.and_then(|b| b.ratio.as_ref()),
                "retry.budget.ratio",
                d.budget.ratio,
            ),
            min_per_sec: budget
                .and_then(|b| b.min_per_sec)
                .unwrap_or(d.budget.min_per_sec),
        },
    }
}

/// Route `mirror`: the shadow cluster must exist and must not be one the route already sends
/// to (the copy would double that cluster's load and count as its own traffic); `percent` is
/// 0-100 (default 100).
fn mirror(
    cx: &mut Ctx<'_>,
    raw: &Spanned<RawMirror>,
    target: &RouteTarget,
    clusters: &BTreeSet<String>,
) -> MirrorConfig {
    let m = raw.get_ref();
    check_cluster(cx, &m.cluster, clusters);
    let name = m.cluster.get_ref();
    if target.clusters().contains(&name.as_str()) {
        cx.err(
            m.cluster.span(),
            format!("mirror.cluster: {name:?} is the route's own cluster (mirror to another one)"),
        );
    }
    let percent = match &m.percent {
        Some(p) if (0.0..=100.0).contains(p.get_ref()) => *p.get_ref(),
        Some(p) => {
            cx.err(
                p.span(),
                format!(
                    "mirror.percent: must be between 0 and 100 (got {})",
                    p.get_ref()
                ),
            );
            0.0
        }
        // Left out: every request, as NGINX's `mirror` and Envoy's policy without a fraction.
        None => 100.0,
    };
    MirrorConfig {
        cluster: name.clone(),
        percent,
        max_body: cx.size(
            m.max_body.as_ref(),
            "mirror.max_body",
            defaults::MIRROR_MAX_BODY,
        ),
    }
}

fn hedge(cx: &mut Ctx<'_>, raw: &RawHedge) -> HedgePolicy {
    let d = defaults::hedge();
    HedgePolicy {
        after: cx.positive_duration(raw.after.as_ref(), "hedge.after", d.after),
        max: cx.at_least_one(raw.max.as_ref(), "hedge.max", d.max),
    }
}
