//! The validated configuration: every value typed, every reference checked.
//!
//! `config::raw` mirrors the TOML file; `config::validate` turns it into these types. Nothing
//! downstream of this module ever sees a string where a `Duration`, `SocketAddr` or enum belongs,
//! and nothing here can name a cluster or listener that does not exist.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use regex::Regex;

/// The whole validated configuration, as one immutable value.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this config was read from; relative paths inside were resolved against its folder.
    pub source: PathBuf,
    /// SHA-256 of the config text, lower-case hex: the admin API's `/config` shows it so an
    /// operator can tell which file version is live.
    pub sha256: String,
    pub runtime: RuntimeConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub tracing: TracingConfig,
    pub listeners: Vec<ListenerConfig>,
    /// In file order: the first matching route wins. Shared with the compiled router, which
    /// would otherwise copy every route (thousands of strings) on each reload.
    pub routes: Vec<std::sync::Arc<RouteConfig>>,
    /// Keyed by name; a `BTreeMap` so every listing (check, explain, admin) is stable.
    pub clusters: BTreeMap<String, ClusterConfig>,
    pub cache: Option<CacheConfig>,
    pub mesh: Option<MeshConfig>,
    pub limits: LimitsConfig,
    /// `[identity]`: the certificate this sidecar's mTLS tunnel presents and the CA it trusts
    /// peers by; `None` = no tunnel (connections to meshed peers go plain).
    pub identity: Option<IdentityConfig>,
}

/// `[runtime]`: threads and shutdown.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// Worker threads; 0 in the file means one per core and is resolved here.
    pub workers: usize,
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    /// `zone`: the zone this proxy runs in, for clusters with `locality = "prefer_local"`
    /// (and announced in its mesh record); `None` makes `prefer_local` a no-op.
    pub zone: Option<String>,
}

/// `[admin]`: the admin listener, loopback by default.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// `token_file`, resolved against the config file's folder; required when `listen` is not
    /// a loopback address.
    pub token_file: Option<PathBuf>,
    /// The bearer token read from `token_file` when the config was loaded (start, reload):
    /// every admin request must carry `Authorization: Bearer <token>`.
    pub token: Option<AdminToken>,
}

/// The admin API's bearer token. Its own type so that it never appears in a `Debug` print of
/// the config (logs, `check`), and so that the only comparison offered is constant-time.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps a token read from `token_file` (already trimmed and checked non-empty).
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// Whether `presented` is the token. Every byte is compared whatever the first difference,
    /// so the time taken says nothing about how much of a guess was right (the length may
    /// show; it is not the secret).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        if expected.len() != presented.len() {
            return false;
        }
        let difference = expected
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // `black_box` keeps the optimiser from turning the fold into an early-exit compare.
        std::hint::black_box(difference) == 0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// `[log]`: output format and access-log sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub access: bool,
    /// Fraction of successful requests logged, in `0.0..=1.0`; errors are always logged.
    pub access_sample: f64,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[metrics]`: cardinality guard.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsConfig {
    pub max_endpoint_series: usize,
}

/// `[tracing]`: W3C trace context sampling and the optional OTLP/HTTP span export
/// (`crate::trace`).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingConfig {
    /// Where spans are posted (`http://host:port/v1/traces`, the path appended to a bare
    /// collector address); `None` exports nothing (trace context is still propagated).
    pub otlp: Option<http::Uri>,
    /// The `service.name` resource attribute of exported spans.
    pub service_name: String,
    /// Fraction of new traces (no `traceparent` from the client) marked sampled; a client's
    /// sampled flag is followed as sent.
    pub sample_ratio: f64,
}

/// One `[[listeners]]` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub listen: SocketAddr,
    pub tls: Option<ListenerTls>,
    /// How many `x-forwarded-for` entries sent by clients are trusted.
    pub trusted_hops: u32,
    /// What the listener is for: plain HTTP (today's behaviour), or one side of a transparent
    /// sidecar. The transparent settings live in the variant, so an `http` listener cannot
    /// carry them and an intercepting one cannot lack them.
    pub mode: ListenerMode,
}

/// `mode` of a listener (README, "Transparent mode").
#[derive(Debug, Clone, PartialEq)]
pub enum ListenerMode {
    /// `"http"`: an HTTP (or HTTPS with `tls`) listener that clients address directly.
    Http,
    /// `"outbound"`: connections the workload made, redirected here by `switchyard redirect`;
    /// the original destination (`SO_ORIGINAL_DST`) picks the target.
    Outbound(Interception),
    /// `"inbound"`: connections to the workload, redirected plaintext or our mTLS tunnel.
    Inbound(InboundConfig),
}

impl ListenerMode {
    /// The config spelling, for `check`, the admin API and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Outbound(_) => "outbound",
            Self::Inbound(_) => "inbound",
        }
    }

    /// The detection and opaque-proxying settings of an intercepting listener.
    pub fn interception(&self) -> Option<&Interception> {
        match self {
            Self::Http => None,
            Self::Outbound(settings) => Some(settings),
            Self::Inbound(inbound) => Some(&inbound.interception),
        }
    }
}

/// What both intercepting modes share: protocol detection and the opaque byte copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Interception {
    /// How long to wait for a client's first bytes to tell HTTP from anything else (> 0).
    /// Nothing within it means the server speaks first: the connection is opaque.
    pub detect_timeout: Duration,
    /// Destination ports never detected (server-speaks-first protocols: MySQL, SMTP), sorted.
    pub opaque_ports: Vec<u16>,
    /// An opaque connection with no bytes either way for this long is closed (> 0).
    pub opaque_idle_timeout: Duration,
}

impl Interception {
    /// Whether connections to `port` skip detection.
    pub fn is_opaque_port(&self, port: u16) -> bool {
        self.opaque_ports.binary_search(&port).is_ok()
    }
}

/// The inbound listener's settings beyond [`Interception`].
#[derive(Debug, Clone, PartialEq)]
pub struct InboundConfig {
    pub interception: Interception,
    /// The policy of every port not in `ports`.
    pub policy: PortPolicy,
    /// When set, requests to the app carry the peer's identity in this header (HTTP only);
    /// otherwise the inbound listener passes no identity header at all.
    pub identity_header: Option<HeaderName>,
    /// Declared ports: their HTTP goes through the HTTP stack (synthetic cluster and route
    /// `inbound:PORT`), under their own policy.
    pub ports: BTreeMap<u16, PortPolicy>,
}

impl InboundConfig {
    /// The policy that applies to connections for `port`.
    pub fn policy(&self, port: u16) -> &PortPolicy {
        self.ports.get(&port).unwrap_or(&self.policy)
    }
}

/// Who may connect to one inbound port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPolicy {
    pub mtls: MtlsMode,
    /// Identities allowed; empty = any (and, when permissive, plaintext too).
    pub allow: Vec<String>,
}

impl PortPolicy {
    /// Whether a connection with `identity` (None = plaintext) may pass; `Err` names the
    /// refusal reason as the `switchyard_intercepted_refused_total` label spells it.
    pub fn admits(&self, identity: Option<&str>) -> Result<(), &'static str> {
        match identity {
            None if self.mtls == MtlsMode::Strict => Err("plaintext"),
            // Permissive with an allow list: a plaintext client has no identity to be in it.
            None if !self.allow.is_empty() => Err("not_allowed"),
            None => Ok(()),
            Some(id) if self.allow.is_empty() || self.allow.iter().any(|a| a == id) => Ok(()),
            Some(_) => Err("not_allowed"),
        }
    }
}

/// `mtls` of an inbound listener or port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MtlsMode {
    /// Our mTLS tunnel or plaintext from a client without a sidecar.
    Permissive,
    /// Our mTLS tunnel only.
    Strict,
}

/// Listener TLS: one or several certificates (chosen by SNI), optional client CA (mTLS).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenerTls {
    /// Never empty; the first is the default for clients that send no SNI.
    pub certs: Vec<CertKeyPair>,
    pub client_ca: Option<PathBuf>,
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertKeyPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// `name` from the file, or `route-N` (N = 1-based position) when absent; metric label.
    pub name: String,
    pub listener: String,
    pub matcher: RouteMatch,
    pub target: RouteTarget,
    /// Until response headers; `None` when configured as 0.
    pub timeout: Option<Duration>,
    /// Stream idle once the response started; `None` when configured as 0.
    pub idle_timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub hedge: Option<HedgePolicy>,
    pub cache: bool,
    pub rewrite: Option<Rewrite>,
    pub headers: HeaderRules,
    pub websocket: bool,
    pub debug_headers: bool,
    /// Client identities allowed (`allow`); `None` = no check. Others, and clients without
    /// an identity, get 403.
    pub allow: Option<Vec<String>>,
    /// Route `mirror`: a sampled copy of each request to a shadow cluster, answer discarded.
    pub mirror: Option<MirrorConfig>,
    /// `rate_limit`: requests over it get 429 before any cluster is touched (`ratelimit`).
    pub rate_limit: Option<RateLimitConfig>,
    /// Where the route comes from: the file, or made for a transparent listener.
    pub origin: RouteOrigin,
}

/// Route `mirror` (shadow traffic): `percent` of the route's forwarded requests are copied to
/// `cluster` (head and body up to `max_body`), their answers discarded; see `proxy::mirror`.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorConfig {
    /// The shadow cluster; exists, and is not one the route itself targets.
    pub cluster: String,
    /// Share of requests copied, 0-100 (fractional allowed).
    pub percent: f64,
    /// Largest request body copied; a larger one is not mirrored (outcome `skipped_body`).
    pub max_body: u64,
}

/// Where a route comes from. Synthetic routes are never matched by request content: an
/// intercepted connection whose request no file route matched selects one by its
/// destination (see `router::Router::route_intercepted`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteOrigin {
    /// A `[[routes]]` entry.
    File,
    /// `outbound:CLUSTER`: HTTP an outbound listener intercepted for an address of CLUSTER.
    Outbound(String),
    /// `inbound:PORT`: HTTP an inbound listener took for declared port PORT.
    Inbound(u16),
}

/// The conditions of a route; all present conditions must hold.
#[derive(Debug, Clone, Default)]
pub struct RouteMatch {
    pub host: Option<HostMatch>,
    pub path: Option<PathMatch>,
    pub method: Option<Method>,
    /// Header name and exact value.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub client_identity: Option<String>,
}

/// How a route matches the request's host (port stripped, lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`: holds `.example.com`; matches any host ending with it (not the apex).
    Suffix(String),
}

/// How a route matches the normalised path.
#[derive(Debug, Clone)]
pub enum PathMatch {
    Exact(String),
    /// Segment-unaware prefix, as Envoy's `prefix`.
    Prefix(String),
    Regex(Regex),
}

/// Where a route sends its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    Cluster(String),
    /// Weighted split; every weight is > 0 and every cluster exists.
    Split(Vec<WeightedCluster>),
}

impl RouteTarget {
    /// Every cluster the route can pick, in file order: what per-route metrics, stats and
    /// explanations are kept for.
    pub fn clusters(&self) -> Vec<&str> {
        match self {
            Self::Cluster(cluster) => vec![cluster.as_str()],
            Self::Split(arms) => arms.iter().map(|a| a.cluster.as_str()).collect(),
        }
    }
}

/// One arm of a weighted split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
}

/// Route `retry`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total tries, first one included; at least 1.
    pub attempts: u32,
    pub on: Vec<RetryOn>,
    pub statuses: Vec<u16>,
    pub per_try_timeout: Option<Duration>,
    pub backoff: Duration,
    pub buffer: u64,
    pub budget: RetryBudget,
}

/// A condition that makes an attempt retryable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    ConnectFailure,
    Reset,
    Status5xx,
    GatewayError,
    RefusedStream,
}

/// Retry budget: retries may add at most `ratio` of requests, plus `min_per_sec`.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryBudget {
    pub ratio: f64,
    pub min_per_sec: u32,
}

/// Route `hedge`.
#[derive(Debug, Clone, PartialEq)]
pub struct HedgePolicy {
    pub after: Duration,
    pub max: u32,
}

/// Route `rate_limit`: at most `requests` per `per` (plus `burst` at once) for each value of
/// `key`, on this proxy alone or summed over the mesh's live members (`scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Requests admitted per `per` window, at least 1.
    pub requests: u64,
    /// The window `requests` refers to (greater than 0).
    pub per: Duration,
    /// Extra requests a full bucket admits at once on top of `requests` (default 0).
    pub burst: u64,
    /// What the limit is counted per.
    pub key: RateLimitKey,
    /// Whether the limit holds per proxy or for the whole mesh.
    pub scope: RateLimitScope,
    /// Slots of the table of active keys (rounded up to a power of two); ignored for
    /// `key = "route"`. Bounds the limiter's memory whatever the number of distinct keys.
    pub max_keys: u64,
}

/// Route `rate_limit.key`: what one bucket counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimitKey {
    /// The connection's peer IP (`"client_ip"`, the default).
    ClientIp,
    /// The value of a request header (`"header:NAME"`); requests without it share one bucket.
    Header(HeaderName),
    /// One bucket for the whole route (`"route"`).
    Route,
}

/// Route `rate_limit.scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitScope {
    /// Each proxy enforces the limit on its own (`"local"`, the default).
    Local,
    /// The limit holds for the sum over the mesh's live members (`"mesh"`; needs `[mesh]`).
    Mesh,
}

impl RateLimitKey {
    /// The config spelling (`/config`, `check` output).
    pub fn describe(&self) -> String {
        match self {
            Self::ClientIp => "client_ip".to_owned(),
            Self::Header(name) => format!("header:{name}"),
            Self::Route => "route".to_owned(),
        }
    }
}

impl RateLimitScope {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Mesh => "mesh",
        }
    }
}

/// Route `rewrite`: replace the matched path prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite {
    pub path_prefix: String,
}

/// Route `headers`: added (overwriting) and removed headers on each side.
#[derive(Debug, Clone, Default)]
pub struct HeaderRules {
    pub request_add: Vec<(HeaderName, HeaderValue)>,
    pub request_remove: Vec<HeaderName>,
    pub response_add: Vec<(HeaderName, HeaderValue)>,
    pub response_remove: Vec<HeaderName>,
}

/// One `[clusters.NAME]` table.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub name: String,
    pub protocol: Protocol,
    pub balance: BalanceAlgorithm,
    pub hash_on: Option<HashOn>,
    pub balance_factor: Option<f64>,
    pub slow_start: Duration,
    pub endpoints: EndpointSource,
    pub connect_timeout: Duration,
    pub pool: PoolConfig,
    pub health_check: Option<HealthCheckConfig>,
    pub outlier_detection: OutlierDetection,
    pub circuit_breaker: CircuitBreaker,
    pub panic_threshold: f64,
    pub tls: Option<ClusterTls>,
    /// Virtual addresses (`addresses`) that select this cluster for outbound interception,
    /// besides its endpoints' own addresses.
    pub addresses: Vec<SocketAddr>,
    /// `locality`: whether requests prefer endpoints in `[runtime] zone` (`balance::locality`).
    pub locality: Locality,
    /// `locality_spill_ratio`: how much busier (in flight per endpoint) the local zone may be
    /// than the others before traffic spills; greater than 1.
    pub locality_spill_ratio: f64,
}

/// A cluster's `locality`: zone-blind, or preferring the proxy's own zone while it has the
/// capacity (README, "Zone-aware routing").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locality {
    Off,
    PreferLocal,
}

impl Locality {
    /// The config spelling, for the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::PreferLocal => "prefer_local",
        }
    }
}

/// Upstream protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http1,
    H2,
}

/// The balancing algorithms a cluster's `balance` key accepts (README, "Choosing a balancing
/// algorithm").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceAlgorithm {
    RoundRobin,
    Random,
    LeastRequest,
    PeakEwma,
    LeastConnections,
    RingHash,
    Maglev,
}

impl BalanceAlgorithm {
    /// The config spelling, for `check`, `explain` and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RoundRobin => "round_robin",
            Self::Random => "random",
            Self::LeastRequest => "least_request",
            Self::PeakEwma => "peak_ewma",
            Self::LeastConnections => "least_connections",
            Self::RingHash => "ring_hash",
            Self::Maglev => "maglev",
        }
    }

    /// Whether the algorithm consistently hashes a request key (and so needs `hash_on`).
    pub fn is_hashing(self) -> bool {
        matches!(self, Self::RingHash | Self::Maglev)
    }
}

/// What a consistent-hash balancer hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    Header(HeaderName),
    Cookie(String),
    Query(String),
    SourceIp,
    Path,
}

/// Where a cluster's endpoints come from: a static list or exactly one discovery source.
#[derive(Debug, Clone, PartialEq)]
pub enum EndpointSource {
    /// Never empty; addresses unique.
    Static(Vec<StaticEndpoint>),
    Dns {
        name: String,
        port: u16,
        refresh: Duration,
    },
    Srv {
        name: String,
        refresh: Duration,
    },
    File(PathBuf),
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        /// How long the watch may stay silent before etcd is asked whether it is still there
        /// (and the watch whether it missed anything).
        watch_timeout: Duration,
    },
    Mesh(String),
}

/// One endpoint written in the config (or in a discovery file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticEndpoint {
    pub address: SocketAddr,
    /// > 0; 1 when not given.
    pub weight: u32,
    pub zone: Option<String>,
}

/// Cluster `pool`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub idle_timeout: Duration,
    pub max_idle_per_endpoint: usize,
    /// 0 = unlimited.
    pub max_connections_per_endpoint: usize,
    /// `None` when configured as 0.
    pub tcp_keepalive: Option<Duration>,
}

/// Cluster `health_check`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub kind: HealthCheckKind,
    pub path: String,
    /// Empty = the endpoint's address.
    pub host: String,
    /// Inclusive ranges.
    pub statuses: Vec<(u16, u16)>,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub initial_healthy: bool,
}

/// Probe kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthCheckKind {
    Http,
    Tcp,
}

/// Cluster `outlier_detection` (on by default).
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    pub consecutive_gateway_errors: u32,
    pub failure_rate: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub success_rate_stdev: f64,
    pub base_time: Duration,
    pub max_time: Duration,
    pub max_percent: u32,
    pub probe_requests: u32,
}

/// Cluster `circuit_breaker` thresholds (on by default).
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    pub max_connections: u32,
    pub max_pending: u32,
    pub max_requests: u32,
    pub max_retries: u32,
}

/// Cluster `tls`: how to speak TLS to the endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterTls {
    pub sni: Option<String>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `[cache]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub max_bytes: u64,
    pub max_object: u64,
}

/// `[mesh]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshConfig {
    pub listen: SocketAddr,
    pub seeds: Vec<SocketAddr>,
    pub secret_file: PathBuf,
    pub advertise: Vec<MeshAdvertise>,
    pub eject_quorum: u32,
    pub eject_window: Duration,
}

/// One service this sidecar announces to its peers.
#[derive(Debug, Clone, PartialEq)]
pub struct MeshAdvertise {
    pub service: String,
    pub address: SocketAddr,
}

/// `[identity]`: this sidecar's mesh identity, as `switchyard certs issue --spiffe` makes it.
/// The tunnel between sidecars (`tls::tunnel`) presents `cert` on both sides and accepts peers
/// whose chain verifies against `ca`; the certificate's URI SAN is the identity the mesh
/// announces and routes' `allow` lists name. Paths are resolved against the config file's
/// folder, like every other TLS path; the files are read when the config is loaded for a
/// start or a reload (`tls::store::preload`), not by `check`, as for listener TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentityConfig {
    /// Certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The leaf's private key (PEM).
    pub key: PathBuf,
    /// Trust bundle for peers' certificates (PEM; one or more CAs).
    pub ca: PathBuf,
}

/// `[limits]`: downstream protection.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    pub max_header_bytes: u64,
    pub max_uri_bytes: u64,
    /// `None` = unlimited (configured as 0).
    pub max_body_bytes: Option<u64>,
    pub first_byte_timeout: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub h2_keepalive_interval: Duration,
    pub max_connections: usize,
}
