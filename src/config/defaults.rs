//! The defaults of the config file (README, "Configuration reference"), as typed values, in one
//! place: `validate` fills omitted keys from here, so the README's table and the code have one
//! spot to agree on.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::model::*;

pub(crate) const SHUTDOWN_DELAY: Duration = Duration::ZERO;
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const ROUTE_TIMEOUT: Duration = Duration::from_secs(15);
pub(crate) const ROUTE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub(crate) const DISCOVERY_REFRESH: Duration = Duration::from_secs(10);
/// `discovery.etcd.watch_timeout`: silence on the watch after which etcd is checked. etcd's own
/// progress notifications come only every 10 minutes by default, far too rarely to notice a
/// black-holed connection; a check of the prefix every 30 quiet seconds costs one small range.
pub(crate) const ETCD_WATCH_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const PANIC_THRESHOLD: f64 = 0.5;
/// `locality_spill_ratio`: the local zone spills once it has more than twice the remote zones'
/// in-flight requests per endpoint (plus one; see `balance::locality`).
pub(crate) const LOCALITY_SPILL_RATIO: f64 = 2.0;
pub(crate) const WEBSOCKET: bool = true;
/// Route `rate_limit.max_keys`: slots of the active-key table (16 bytes each, so 256 KiB per
/// keyed route). Keys whose bucket has refilled free their slot, so this bounds the keys active
/// at once, not the keys ever seen.
pub(crate) const RATE_LIMIT_MAX_KEYS: u64 = 16_384;
/// The largest `rate_limit.max_keys`: 16 Mi slots, 256 MiB per route.
pub(crate) const RATE_LIMIT_MAX_KEYS_LIMIT: u64 = 1 << 24;
/// Listener `detect_timeout`: Linkerd's default; a client that sent nothing by then is taken
/// for one whose server speaks first.
pub(crate) const DETECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Listener `opaque_idle_timeout`: Envoy `tcp_proxy`'s default idle timeout.
pub(crate) const OPAQUE_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

pub(crate) fn admin() -> AdminConfig {
    AdminConfig {
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 9901)),
        token_file: None,
        token: None,
    }
}

pub(crate) fn log() -> LogConfig {
    LogConfig {
        format: LogFormat::Text,
        access: true,
        access_sample: 1.0,
    }
}

pub(crate) fn metrics() -> MetricsConfig {
    MetricsConfig {
        max_endpoint_series: 1000,
    }
}

pub(crate) fn tracing() -> TracingConfig {
    TracingConfig {
        otlp: None,
        service_name: "switchyard".to_owned(),
        sample_ratio: 1.0,
    }
}

pub(crate) fn retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        on: vec![
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::Status5xx,
            RetryOn::GatewayError,
            RetryOn::RefusedStream,
        ],
        statuses: Vec::new(),
        per_try_timeout: None,
        backoff: Duration::from_millis(25),
        buffer: 64 * 1024,
        budget: RetryBudget {
            ratio: 0.2,
            min_per_sec: 10,
        },
    }
}

pub(crate) fn hedge() -> HedgePolicy {
    HedgePolicy {
        after: Duration::from_millis(50),
        max: 1,
    }
}

pub(crate) fn pool() -> PoolConfig {
    PoolConfig {
        idle_timeout: Duration::from_secs(30),
        max_idle_per_endpoint: 64,
        max_connections_per_endpoint: 0,
        tcp_keepalive: Some(Duration::from_secs(60)),
    }
}

pub(crate) fn health_check() -> HealthCheckConfig {
    HealthCheckConfig {
        kind: HealthCheckKind::Http,
        path: "/healthz".to_owned(),
        host: String::new(),
        statuses: vec![(200, 399)],
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(1),
        healthy_threshold: 2,
        unhealthy_threshold: 3,
        initial_healthy: true,
    }
}

pub(crate) fn outlier_detection() -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx: 5,
        consecutive_gateway_errors: 3,
        failure_rate: 0.5,
        min_requests: 20,
        window: Duration::from_secs(10),
        success_rate_stdev: 1.9,
        base_time: Duration::from_secs(30),
        max_time: Duration::from_secs(300),
        max_percent: 50,
        probe_requests: 3,
    }
}

pub(crate) fn circuit_breaker() -> CircuitBreaker {
    CircuitBreaker {
        max_connections: 1024,
        max_pending: 256,
        max_requests: 1024,
        max_retries: 3,
    }
}

pub(crate) fn cache() -> CacheConfig {
    CacheConfig {
        max_bytes: 256 * 1024 * 1024,
        max_object: 8 * 1024 * 1024,
    }
}

pub(crate) fn mesh_listen() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 7946))
}

pub(crate) const MESH_EJECT_QUORUM: u32 = 2;
pub(crate) const MESH_EJECT_WINDOW: Duration = Duration::from_secs(30);

pub(crate) fn limits() -> LimitsConfig {
    LimitsConfig {
        max_header_bytes: 64 * 1024,
        max_uri_bytes: 8 * 1024,
        max_body_bytes: None,
        first_byte_timeout: Duration::from_secs(10),
        header_read_timeout: Duration::from_secs(10),
        body_read_timeout: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(75),
        h2_keepalive_interval: Duration::from_secs(30),
        max_connections: 10_000,
    }
}

/// Route `mirror.max_body`: the largest request body a mirror copies (a larger one is not
/// mirrored); the copy is held in memory until the shadow request ends.
pub(crate) const MIRROR_MAX_BODY: u64 = 64 * 1024;
