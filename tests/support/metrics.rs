//! Reading series off the admin listener's `/metrics` (Prometheus text format).
//!
//! The recorder is process-wide: every in-process proxy of a test binary renders the same
//! registry. Tests compare before and after, or use labels (listener, route, cluster names)
//! no other test of the binary uses; a test that needs exact process-wide figures runs alone
//! ([`super::alone`]).

use std::net::SocketAddr;

use super::raw_client::raw_request;

/// One scrape of `http://ADMIN/metrics`; panics unless it answers 200. Blocking (a raw socket),
/// so it reads the same from a `#[test]` and a `#[tokio::test]`.
pub fn scrape(admin: SocketAddr) -> String {
    let resp = raw_request(
        admin,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(resp.status, 200, "/metrics: {}", resp.body_text());
    resp.body_text()
}

/// The value of `series` (the metric name with its labels exactly as rendered, e.g.
/// `switchyard_endpoints{cluster="app"}`) in `scrape`; `None` when the series is absent.
pub fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.starts_with(' ')
            .then(|| rest.trim().parse().ok())
            .flatten()
    })
}

/// [`value`] of a fresh [`scrape`], 0 when the series does not exist yet (a counter nothing has
/// bumped is not rendered).
pub fn metric(admin: SocketAddr, series: &str) -> f64 {
    value(&scrape(admin), series).unwrap_or(0.0)
}

/// The sum of every sample of `metric` whose labels contain all of `labels` (each written as
/// `name="value"`), for counters split by labels the test does not care about.
pub fn sum(scrape: &str, metric: &str, labels: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
