//! Per-cluster policies: connection pool, active health checks, outlier detection, breaker
//! thresholds and upstream TLS. Each omitted field takes its default from `defaults.rs`.

use std::time::Duration;

use toml::Spanned;

use super::ctx::{is_host_name, Ctx};
use crate::config::defaults;
use crate::config::model::*;
use crate::config::raw::*;

pub(super) fn pool(cx: &mut Ctx<'_>, raw: &RawPool) -> PoolConfig {
    let d = defaults::pool();
    PoolConfig {
        idle_timeout: cx.duration(
            raw.idle_timeout.as_ref(),
            "pool.idle_timeout",
            d.idle_timeout,
        ),
        max_idle_per_endpoint: raw.max_idle_per_endpoint.unwrap_or(d.max_idle_per_endpoint),
        max_connections_per_endpoint: raw
            .max_connections_per_endpoint
            .unwrap_or(d.max_connections_per_endpoint),
        tcp_keepalive: match &raw.tcp_keepalive {
            Some(v) => cx.optional_duration(Some(v), "pool.tcp_keepalive", Duration::ZERO),
            None => d.tcp_keepalive,
        },
    }
}

pub(super) fn health_check(cx: &mut Ctx<'_>, raw: &RawHealthCheck) -> HealthCheckConfig {
    let d = defaults::health_check();
    let kind = cx.one_of(
        raw.kind.as_ref(),
        "health_check.kind",
        &[
            ("http", HealthCheckKind::Http),
            ("tcp", HealthCheckKind::Tcp),
        ],
        d.kind,
    );
    let path = match &raw.path {
        Some(p) if !p.get_ref().starts_with('/') => {
            cx.err(
                p.span(),
                format!(
                    "health_check.path: must start with '/' (got {:?})",
                    p.get_ref()
                ),
            );
            d.path.clone()
        }
        Some(p) => p.get_ref().clone(),
        None => d.path.clone(),
    };
    let statuses = match &raw.statuses {
        Some(list) => list.iter().filter_map(|s| status_range(cx, s)).collect(),
        None => d.statuses.clone(),
    };
    let initial_healthy = cx.one_of(
        raw.initial.as_ref(),
        "health_check.initial",
        &[("healthy", true), ("unhealthy", false)],
        d.initial_healthy,
    );
    HealthCheckConfig {
        kind,
        path,
        host: raw.host.clone().unwrap_or_default(),
        statuses,
        interval: cx.positive_duration(raw.interval.as_ref(), "health_check.interval", d.interval),
        timeout: cx.positive_duration(raw.timeout.as_ref(), "health_check.timeout", d.timeout),
        healthy_threshold: cx.at_least_one(
            raw.healthy_threshold.as_ref(),
            "health_check.healthy_threshold",
            d.healthy_threshold,
        ),
        unhealthy_threshold: cx.at_least_one(
            raw.unhealthy_threshold.as_ref(),
            "health_check.unhealthy_threshold",
            d.unhealthy_threshold,
        ),
        initial_healthy,
    }
}

/// `"200"` or `"200-399"`, within 100..=599.
fn status_range(cx: &mut Ctx<'_>, raw: &Str) -> Option<(u16, u16)> {
    let v = raw.get_ref();
    let (lo, hi) = v.split_once('-').unwrap_or((v, v));
    let parsed = match (lo.trim().parse::<u16>(), hi.trim().parse::<u16>()) {
        (Ok(lo), Ok(hi)) if 100 <= lo && lo <= hi && hi <= 599 => Some((lo, hi)),
        _ => None,
    };
    if parsed.is_none() {
        cx.err(
            raw.span(),
            format!("health_check.statuses: {v:?} is not a status or range like \"200-399\""),
        );
    }
    parsed
}

pub(super) fn outlier(cx: &mut Ctx<'_>, raw: &RawOutlier) -> OutlierDetection {
    let d = defaults::outlier_detection();
    let base_time = cx.positive_duration(
        raw.base_time.as_ref(),
        "outlier_detection.base_time",
        d.base_time,
    );
    let max_time = cx.positive_duration(
        raw.max_time.as_ref(),
        "outlier_detection.max_time",
        d.max_time,
    );
    if max_time < base_time {
        let span = raw
            .max_time
            .as_ref()
            .or(raw.base_time.as_ref())
            .map_or(0..0, Spanned::span);
        cx.err(
            span,
            "outlier_detection.max_time: must not be shorter than base_time",
        );
    }
    let success_rate_stdev = match &raw.success_rate_stdev {
        Some(v) if !(v.get_ref().is_finite() && *v.get_ref() > 0.0) => {
            cx.err(
                v.span(),
                "outlier_detection.success_rate_stdev: must be greater than 0",
            );
            d.success_rate_stdev
        }
        Some(v) => *v.get_ref(),
        None => d.success_rate_stdev,
    };
    let max_percent = match &raw.max_percent {
        Some(v) if *v.get_ref() > 100 => {
            cx.err(
                v.span(),
                "outlier_detection.max_percent: must be between 0 and 100",
            );
            d.max_percent
        }
        Some(v) => *v.get_ref(),
        None => d.max_percent,
    };
    OutlierDetection {
        consecutive_5xx: raw.consecutive_5xx.unwrap_or(d.consecutive_5xx),
        consecutive_gateway_errors: raw
            .consecutive_gateway_errors
            .unwrap_or(d.consecutive_gateway_errors),
        failure_rate: cx.fraction(
            raw.failure_rate.as_ref(),
            "outlier_detection.failure_rate",
            d.failure_rate,
        ),
        min_requests: raw.min_requests.unwrap_or(d.min_requests),
        window: cx.positive_duration(raw.window.as_ref(), "outlier_detection.window", d.window),
        success_rate_stdev,
        base_time,
        max_time,
        max_percent,
        probe_requests: cx.at_least_one(
            raw.probe_requests.as_ref(),
            "outlier_detection.probe_requests",
            d.probe_requests,
        ),
    }
}

pub(super) fn circuit_breaker(raw: Option<&RawCircuitBreaker>) -> CircuitBreaker {
    let d = defaults::circuit_breaker();
    let Some(raw) = raw else { return d };
    CircuitBreaker {
        max_connections: raw.max_connections.unwrap_or(d.max_connections),
        max_pending: raw.max_pending.unwrap_or(d.max_pending),
        max_requests: raw.max_requests.unwrap_or(d.max_requests),
        max_retries: raw.max_retries.unwrap_or(d.max_retries),
    }
}

pub(super) fn cluster_tls(cx: &mut Ctx<'_>, raw: &Spanned<RawClusterTls>) -> ClusterTls {
    let t = raw.get_ref();
    if t.cert.is_some() != t.key.is_some() {
        cx.err(raw.span(), "tls: `cert` and `key` go together");
    }
    if let Some(sni) = &t.sni {
        if !is_host_name(sni.get_ref()) {
            cx.err(
                sni.span(),
                format!("tls.sni: {:?} is not a DNS name", sni.get_ref()),
            );
        }
    }
    ClusterTls {
        sni: t.sni.as_ref().map(|s| s.get_ref().clone()),
        ca: t.ca.as_deref().map(|p| cx.path(p)),
        cert: t.cert.as_deref().map(|p| cx.path(p)),
        key: t.key.as_deref().map(|p| cx.path(p)),
    }
}
