//! The config file exactly as written: serde types with `deny_unknown_fields` everywhere.
//!
//! Every value a semantic check can reject is a `Spanned<T>`, so `validate` can point at its
//! line:col. Omitted keys are `None` here; defaults are applied in one place, `defaults.rs`,
//! during validation. Two shapes are "either/or" in the file (an endpoint as a string or a table,
//! `advertise` as a table or an array); they have hand-written `Deserialize` impls instead of
//! `#[serde(untagged)]`, because untagged enums buffer the value and lose the spans.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

/// A string value with its position.
pub(crate) type Str = Spanned<String>;
/// A string-to-string inline table (header maps) with key and value positions.
pub(crate) type StrMap = BTreeMap<Str, Str>;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub runtime: Option<RawRuntime>,
    pub admin: Option<RawAdmin>,
    pub log: Option<RawLog>,
    pub metrics: Option<RawMetrics>,
    pub tracing: Option<RawTracing>,
    #[serde(default)]
    pub listeners: Vec<Spanned<RawListener>>,
    /// Boxed: a raw route is large (every optional key, spanned), and growing a vector of
    /// thousands of them inline copied megabytes per reload (`cargo bench --bench reload`
    /// parses 10,000).
    #[serde(default)]
    pub routes: Vec<Spanned<Box<RawRoute>>>,
    #[serde(default)]
    pub clusters: BTreeMap<Str, Spanned<RawCluster>>,
    pub cache: Option<RawCache>,
    pub mesh: Option<Spanned<RawMesh>>,
    pub limits: Option<RawLimits>,
    pub identity: Option<Spanned<RawIdentity>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRuntime {
    pub workers: Option<usize>,
    pub shutdown_delay: Option<Str>,
    pub drain_timeout: Option<Str>,
    pub zone: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Option<Str>,
    pub token_file: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub format: Option<Str>,
    pub access: Option<bool>,
    pub access_sample: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMetrics {
    pub max_endpoint_series: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTracing {
    pub otlp: Option<Str>,
    pub service_name: Option<Str>,
    pub sample_ratio: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub name: Str,
    pub listen: Str,
    pub tls: Option<Spanned<RawListenerTls>>,
    pub trusted_hops: Option<u32>,
    pub mode: Option<Str>,
    pub detect_timeout: Option<Str>,
    pub opaque_ports: Option<Spanned<Vec<Spanned<u16>>>>,
    pub opaque_idle_timeout: Option<Str>,
    pub mtls: Option<Str>,
    pub allow: Option<Spanned<Vec<Str>>>,
    pub identity_header: Option<Str>,
    pub ports: Option<Spanned<BTreeMap<Str, Spanned<RawPortPolicy>>>>,
}

/// One entry of an inbound listener's `ports`: `{ mtls = "...", allow = [...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPortPolicy {
    pub mtls: Option<Str>,
    pub allow: Option<Spanned<Vec<Str>>>,
}

/// Either `cert` + `key`, or `certs = [...]`; both may carry `client_ca`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListenerTls {
    pub cert: Option<String>,
    pub key: Option<String>,
    pub certs: Option<Spanned<Vec<RawCertKey>>>,
    pub client_ca: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCertKey {
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub name: Option<Str>,
    pub listener: Option<Str>,
    #[serde(rename = "match")]
    pub matcher: Option<Spanned<RawMatch>>,
    pub cluster: Option<Str>,
    pub split: Option<Spanned<Vec<Spanned<RawSplit>>>>,
    pub timeout: Option<Str>,
    pub idle_timeout: Option<Str>,
    pub retry: Option<Spanned<RawRetry>>,
    pub hedge: Option<Spanned<RawHedge>>,
    pub cache: Option<bool>,
    pub rewrite: Option<Spanned<RawRewrite>>,
    pub headers: Option<RawHeaderRules>,
    pub websocket: Option<bool>,
    pub debug_headers: Option<bool>,
    pub allow: Option<Spanned<Vec<Str>>>,
    pub mirror: Option<Spanned<RawMirror>>,
    pub rate_limit: Option<Spanned<RawRateLimit>>,
}

/// Route `mirror`: shadow traffic to another cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMirror {
    pub cluster: Str,
    /// 0-100, fractional allowed (an integer in TOML is accepted as a float).
    pub percent: Option<Spanned<f64>>,
    pub max_body: Option<Str>,
}

/// Route `rate_limit = { requests, per, burst, key, scope, max_keys }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub requests: Option<Spanned<u64>>,
    pub per: Option<Str>,
    pub burst: Option<Spanned<u64>>,
    pub key: Option<Str>,
    pub scope: Option<Str>,
    pub max_keys: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMatch {
    pub host: Option<Str>,
    pub path: Option<Str>,
    pub path_prefix: Option<Str>,
    pub path_regex: Option<Str>,
    pub method: Option<Str>,
    pub headers: Option<StrMap>,
    pub client_identity: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSplit {
    pub cluster: Str,
    pub weight: Spanned<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetry {
    pub attempts: Option<Spanned<u32>>,
    pub on: Option<Vec<Str>>,
    pub statuses: Option<Vec<Spanned<u16>>>,
    pub per_try_timeout: Option<Str>,
    pub backoff: Option<Str>,
    pub buffer: Option<Str>,
    pub budget: Option<RawRetryBudget>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRetryBudget {
    pub ratio: Option<Spanned<f64>>,
    pub min_per_sec: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHedge {
    pub after: Option<Str>,
    pub max: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRewrite {
    pub path_prefix: Str,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderRules {
    pub request_add: Option<StrMap>,
    pub request_remove: Option<Vec<Str>>,
    pub response_add: Option<StrMap>,
    pub response_remove: Option<Vec<Str>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub protocol: Option<Str>,
    pub balance: Option<Str>,
    pub hash_on: Option<Str>,
    pub balance_factor: Option<Spanned<f64>>,
    pub slow_start: Option<Str>,
    pub endpoints: Option<Spanned<Vec<Spanned<RawEndpoint>>>>,
    pub discovery: Option<Spanned<RawDiscovery>>,
    pub connect_timeout: Option<Str>,
    pub pool: Option<RawPool>,
    pub health_check: Option<RawHealthCheck>,
    pub outlier_detection: Option<RawOutlier>,
    pub circuit_breaker: Option<RawCircuitBreaker>,
    pub panic_threshold: Option<Spanned<f64>>,
    pub tls: Option<Spanned<RawClusterTls>>,
    pub addresses: Option<Vec<Str>>,
    pub locality: Option<Str>,
    pub locality_spill_ratio: Option<Spanned<f64>>,
}

/// `"127.0.0.1:9001"` or `{ address = "127.0.0.1:9001", weight = 2, zone = "a" }`.
#[derive(Debug)]
pub(crate) enum RawEndpoint {
    Address(String),
    Table(RawEndpointTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpointTable {
    pub address: Str,
    pub weight: Option<Spanned<u32>>,
    pub zone: Option<String>,
}

impl<'de> Deserialize<'de> for RawEndpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EndpointVisitor;
        impl<'de> Visitor<'de> for EndpointVisitor {
            type Value = RawEndpoint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an endpoint: \"ip:port\" or { address = \"ip:port\", weight = N, zone = \"...\" }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawEndpoint, E> {
                Ok(RawEndpoint::Address(v.to_owned()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawEndpoint, A::Error> {
                RawEndpointTable::deserialize(MapAccessDeserializer::new(map))
                    .map(RawEndpoint::Table)
            }
        }
        deserializer.deserialize_any(EndpointVisitor)
    }
}

/// Exactly one source must be set; `refresh` applies to `dns` and `srv`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDiscovery {
    pub dns: Option<Str>,
    pub srv: Option<Str>,
    pub file: Option<Str>,
    pub etcd: Option<Spanned<RawEtcd>>,
    pub mesh: Option<Str>,
    pub refresh: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEtcd {
    pub endpoints: Spanned<Vec<Str>>,
    pub prefix: Str,
    pub watch_timeout: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub idle_timeout: Option<Str>,
    pub max_idle_per_endpoint: Option<usize>,
    pub max_connections_per_endpoint: Option<usize>,
    pub tcp_keepalive: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pub kind: Option<Str>,
    pub path: Option<Str>,
    pub host: Option<String>,
    pub statuses: Option<Vec<Str>>,
    pub interval: Option<Str>,
    pub timeout: Option<Str>,
    pub healthy_threshold: Option<Spanned<u32>>,
    pub unhealthy_threshold: Option<Spanned<u32>>,
    pub initial: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutlier {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    pub failure_rate: Option<Spanned<f64>>,
    pub min_requests: Option<u32>,
    pub window: Option<Str>,
    pub success_rate_stdev: Option<Spanned<f64>>,
    pub base_time: Option<Str>,
    pub max_time: Option<Str>,
    pub max_percent: Option<Spanned<u32>>,
    pub probe_requests: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCircuitBreaker {
    pub max_connections: Option<u32>,
    pub max_pending: Option<u32>,
    pub max_requests: Option<u32>,
    pub max_retries: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClusterTls {
    pub sni: Option<Str>,
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub max_bytes: Option<Str>,
    pub max_object: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMesh {
    pub listen: Option<Str>,
    pub seeds: Option<Vec<Str>>,
    pub secret_file: Option<Str>,
    pub advertise: Option<RawAdvertiseList>,
    pub eject_quorum: Option<Spanned<u32>>,
    pub eject_window: Option<Str>,
}

/// `advertise = { ... }` or `advertise = [ { ... }, ... ]`.
#[derive(Debug)]
pub(crate) struct RawAdvertiseList(pub Vec<RawAdvertise>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdvertise {
    pub service: Str,
    pub address: Str,
}

impl<'de> Deserialize<'de> for RawAdvertiseList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AdvertiseVisitor;
        impl<'de> Visitor<'de> for AdvertiseVisitor {
            type Value = RawAdvertiseList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table { service, address } or an array of such tables")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawAdvertiseList, A::Error> {
                let one = RawAdvertise::deserialize(MapAccessDeserializer::new(map))?;
                Ok(RawAdvertiseList(vec![one]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawAdvertiseList, A::Error> {
                Vec::<RawAdvertise>::deserialize(SeqAccessDeserializer::new(seq))
                    .map(RawAdvertiseList)
            }
        }
        deserializer.deserialize_any(AdvertiseVisitor)
    }
}

/// `[identity]`: this sidecar's mesh identity (certificate, key, trust bundle).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentity {
    pub cert: Option<Str>,
    pub key: Option<Str>,
    pub ca: Option<Str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_header_bytes: Option<Str>,
    pub max_uri_bytes: Option<Str>,
    pub max_body_bytes: Option<Str>,
    pub first_byte_timeout: Option<Str>,
    pub header_read_timeout: Option<Str>,
    pub body_read_timeout: Option<Str>,
    pub keepalive_timeout: Option<Str>,
    pub h2_keepalive_interval: Option<Str>,
    pub max_connections: Option<usize>,
}
