//! The admin API's JSON documents: `/config`, `/upstreams`, `/explain`.
//!
//! Plain `serde_json::Value` builders over the live [`Snapshot`] and endpoint states: the
//! shapes are the contract (the field names the README's "Admin API" table documents), so they
//! are spelled out here rather than derived from internal types that may grow.

use crate::telemetry::intercept::Tallies;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use serde_json::{json, Value};

use crate::endpoint::EndpointState;
use crate::router::RequestView;
use crate::state::Snapshot;
use crate::wire::time::rfc3339;

/// `GET /config`: the published config's identity and an outline of what it declares.
/// `last_error` is the last failed reload's errors, one per line, until a reload succeeds;
/// `restart_required` the sections the loaded file changed that wait for a restart.
pub fn config(snapshot: &Snapshot, last_error: Option<&str>, restart_required: &[&str]) -> Value {
    let config = snapshot.config();
    let listeners: Vec<Value> = config
        .listeners
        .iter()
        .map(|l| json!({ "name": l.name, "listen": l.listen.to_string(), "mode": l.mode.as_str() }))
        .collect();
    let routes: Vec<Value> = config
        .routes
        .iter()
        .map(|r| {
            let mirror = r.mirror.as_ref().map(
                |m| json!({ "cluster": m.cluster, "percent": m.percent, "max_body": m.max_body }),
            );
            let rate_limit = r.rate_limit.as_ref().map(|l| {
                json!({
                    "requests": l.requests,
                    "per_ms": u64::try_from(l.per.as_millis()).unwrap_or(u64::MAX),
                    "burst": l.burst,
                    "key": l.key.describe(),
                    "scope": l.scope.as_str(),
                    "max_keys": l.max_keys,
                })
            });
            json!({ "name": r.name, "listener": r.listener, "mirror": mirror, "rate_limit": rate_limit })
        })
        .collect();
    json!({
        "version": snapshot.version(),
        "loaded_at": rfc3339(snapshot.loaded_at()),
        "sha256": config.sha256,
        "last_error": last_error,
        "restart_required": restart_required,
        "source": config.source.display().to_string(),
        "workers": config.runtime.workers,
        "admin": config.admin.listen.to_string(),
        "listeners": listeners,
        "routes": routes,
        "clusters": config.clusters.keys().collect::<Vec<_>>(),
    })
}

/// `GET /upstreams`: every cluster (by name) and each endpoint's live state, and the
/// transparent listeners' connections (`intercepted`: totals by direction, protocol, target
/// and peer identity, and refusals by reason).
pub fn upstreams(snapshot: &Snapshot, intercepted: &Tallies) -> Value {
    let mut clusters: Vec<_> = snapshot.clusters().collect();
    clusters.sort_by(|a, b| a.name().cmp(b.name()));
    let clusters: Vec<Value> = clusters
        .into_iter()
        .map(|cluster| {
            let source = crate::discovery::source_label(&cluster.config().endpoints);
            let endpoints: Vec<Value> = cluster
                .endpoints()
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let mut view = endpoint(e, source);
                    view["zone"] = json!(cluster.zone(i));
                    view
                })
                .collect();
            // `null` unless the cluster has a zone split (prefer_local and `[runtime] zone`).
            let local_share = cluster.zoned().map(|_| {
                f64::from(cluster.health().local_share())
                    / f64::from(crate::endpoint::health::SHARE_ONE)
            });
            json!({
                "name": cluster.name(),
                "balance": cluster.config().balance.as_str(),
                "panic_mode": cluster.health().panic(),
                "locality": cluster.config().locality.as_str(),
                "local_share": local_share,
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({
        "version": snapshot.version(),
        "clusters": clusters,
        "intercepted": intercepted,
    })
}

fn endpoint(e: &EndpointState, source: &str) -> Value {
    let until = e.ejected_until_ms();
    let ejected_until = (until > 0)
        .then(|| rfc3339(UNIX_EPOCH + Duration::from_millis(until)))
        .filter(|_| e.is_ejected(now_ms()));
    json!({
        "address": e.address().to_string(),
        "source": source,
        "healthy": e.is_healthy(),
        "ejected_until": ejected_until,
        "ejections": e.ejections(),
        "breaker": e.breaker().as_str(),
        // Health: last active probe, and the trigger that last took it out.
        "last_probe": e.health().last_probe().map(|passed| json!({
            "passed": passed,
            "at": rfc3339(UNIX_EPOCH + Duration::from_millis(e.health().last_probe_ms())),
        })),
        "trigger": e.health().trigger().map(crate::endpoint::Trigger::as_str),
        "in_flight": e.in_flight(),
        "connections": e.connections(),
        "ewma_ms": e.ewma_ms(),
        "weight": e.weight(),
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why an `/explain` query cannot be answered (400).
#[derive(Debug, PartialEq, Eq)]
pub struct BadQuery(pub String);

/// `GET /explain?method=GET&url=http://host/path&header=name:%20value&listener=NAME`: the
/// router's explanation against the live snapshot. `method` defaults to GET; `url` is
/// absolute (the host comes from it) or origin-form with a `host` header.
pub fn explain(snapshot: &Snapshot, query: Option<&str>) -> Result<Value, BadQuery> {
    let mut method = Method::GET;
    let mut url = None;
    let mut listener = None;
    let mut headers = HeaderMap::new();
    for (key, value) in query_pairs(query.unwrap_or("")) {
        match key.as_str() {
            "method" => {
                method = Method::from_bytes(value.as_bytes())
                    .map_err(|_| BadQuery(format!("invalid method {value:?}")))?;
            }
            "url" => url = Some(value),
            "listener" => listener = Some(value),
            "header" => {
                let (name, value) = value
                    .split_once(':')
                    .ok_or_else(|| BadQuery(format!("header {value:?} must read 'name: value'")))?;
                let name = HeaderName::from_bytes(name.trim().as_bytes())
                    .map_err(|_| BadQuery(format!("invalid header name {name:?}")))?;
                let value = HeaderValue::from_str(value.trim())
                    .map_err(|_| BadQuery(format!("invalid header value {value:?}")))?;
                headers.append(name, value);
            }
            other => return Err(BadQuery(format!("unknown parameter {other:?}"))),
        }
    }
    let url = url.ok_or_else(|| BadQuery("missing url parameter".into()))?;
    let uri: Uri = url
        .parse()
        .map_err(|_| BadQuery(format!("invalid url {url:?}")))?;
    let host = uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
        headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    let view = RequestView {
        method: &method,
        host: host.as_deref(),
        path_and_query: uri.path_and_query().map_or("/", |pq| pq.as_str()),
        headers: &headers,
        client_identity: None,
    };
    let mut explanation = snapshot
        .router()
        .explain(snapshot.config(), listener.as_deref(), &view);
    // The live snapshot's balancer tables say where a hashing cluster sends this key.
    crate::admin::explain::fill_hashed_endpoints(&mut explanation, snapshot, &view, None);
    serde_json::to_value(explanation).map_err(|e| BadQuery(e.to_string()))
}

/// `application/x-www-form-urlencoded` pairs (`+` is a space, `%XX` decoded), in order.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(key), form_decode(value))
        })
        .collect()
}

fn form_decode(text: &str) -> String {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode_form_encoding() {
        assert_eq!(
            query_pairs("url=http%3A%2F%2Fa%2Fb&header=x-a%3A+1&&method=POST"),
            vec![
                ("url".to_owned(), "http://a/b".to_owned()),
                ("header".to_owned(), "x-a: 1".to_owned()),
                ("method".to_owned(), "POST".to_owned()),
            ]
        );
    }
}
