//! The endpoint-labelled families (`upstream_requests_total{cluster,endpoint,outcome}`,
//! `endpoint_healthy`, `endpoint_ejected`, `circuit_state`) rendered at scrape time from the live
//! endpoints, after what the recorder rendered. Why they are not in the recorder, and the label
//! budget that bounds them, is in [`crate::telemetry::endpoint_series`].

use std::fmt::Write as _;
use std::sync::Arc;

use metrics::SharedString;
use metrics_exporter_prometheus::formatting::{
    sanitize_label_value, write_help_line, write_type_line,
};

use crate::endpoint::{BreakerPhase, EndpointState};
use crate::telemetry::endpoint_series::OTHER_ENDPOINT;
use crate::telemetry::metrics::{
    CIRCUIT_STATE, ENDPOINT_EJECTED, ENDPOINT_HEALTHY, UPSTREAM_REQUESTS_TOTAL,
};
use crate::wire::Outcome;

/// The endpoints of one label: an endpoint with its own, or a cluster's `other` ones.
struct Group<'a> {
    cluster: &'a str,
    label: SharedString,
    members: Vec<&'a EndpointState>,
}

/// Appends the endpoint-labelled families of `endpoints` (the registry's: exactly the live
/// endpoints, until the moment a removed one's counts move to `retired`) to `out`, a scrape the
/// recorder rendered, which never holds these names. By cluster, then address; a family with
/// no series is left out. For `other`, the counter is the sum of the folded endpoints and the
/// retired counts, and each gauge the worst value of the folded endpoints (healthy only if all
/// are, ejected if any is, the most open breaker).
pub fn render(endpoints: &mut [Arc<EndpointState>], out: &mut String) {
    endpoints.sort_by(|a, b| (a.cluster(), a.address()).cmp(&(b.cluster(), b.address())));
    let mut groups: Vec<Group<'_>> = Vec::new();
    let mut other: Option<Group<'_>> = None;
    for e in endpoints.iter() {
        if other.as_ref().is_some_and(|g| g.cluster != e.cluster()) {
            groups.extend(other.take());
        }
        let label = e.metrics().endpoint_label();
        if &*label == OTHER_ENDPOINT {
            other
                .get_or_insert_with(|| Group {
                    cluster: e.cluster(),
                    label,
                    members: Vec::new(),
                })
                .members
                .push(e);
        } else {
            groups.push(Group {
                cluster: e.cluster(),
                label,
                members: vec![e],
            });
        }
    }
    groups.extend(other);
    if groups.is_empty() {
        return;
    }
    let mut counter = String::new();
    for group in &groups {
        let mut totals = if &*group.label == OTHER_ENDPOINT {
            crate::telemetry::endpoint_series::retired(group.cluster)
        } else {
            [0; Outcome::ALL.len()]
        };
        for e in &group.members {
            for (total, outcome) in totals.iter_mut().zip(Outcome::ALL) {
                *total += e.metrics().count(outcome);
            }
        }
        for (n, outcome) in totals.into_iter().zip(Outcome::ALL) {
            if n > 0 {
                sample(
                    &mut counter,
                    UPSTREAM_REQUESTS_TOTAL,
                    group,
                    Some(outcome),
                    n,
                );
            }
        }
    }
    family(
        out,
        UPSTREAM_REQUESTS_TOTAL,
        "counter",
        "Attempts at an endpoint, by cluster, endpoint and outcome (success, error_5xx, connect_failure, reset, timeout).",
        &counter,
    );
    for gauge in GAUGES {
        let mut lines = String::new();
        for group in &groups {
            let values = group.members.iter().map(|e| (gauge.value)(e));
            let folded = if gauge.worst_is_max {
                values.max()
            } else {
                values.min()
            };
            if let Some(v) = folded {
                sample(&mut lines, gauge.name, group, None, v);
            }
        }
        family(out, gauge.name, "gauge", gauge.help, &lines);
    }
}

/// One per-endpoint gauge family: where its value comes from, and which way is worse (what
/// `other` shows when the endpoints folded into it differ).
struct GaugeFamily {
    name: &'static str,
    help: &'static str,
    value: fn(&EndpointState) -> u64,
    worst_is_max: bool,
}

const GAUGES: [GaugeFamily; 3] = [
    GaugeFamily {
        name: ENDPOINT_HEALTHY,
        help: "1 while the endpoint passes active health checks (always 1 without checks), by cluster and endpoint.",
        value: |e| u64::from(e.is_healthy()),
        worst_is_max: false,
    },
    GaugeFamily {
        name: ENDPOINT_EJECTED,
        help: "1 while the endpoint is ejected by outlier detection (breaker open), by cluster and endpoint.",
        value: |e| u64::from(e.breaker() == BreakerPhase::Open),
        worst_is_max: true,
    },
    GaugeFamily {
        name: CIRCUIT_STATE,
        help: "Breaker phase of the endpoint: 0 closed, 1 half-open, 2 open; by cluster and endpoint.",
        value: |e| e.breaker() as u64,
        worst_is_max: true,
    },
];

/// One family as the recorder writes one: HELP, TYPE, samples, a blank line.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &str) {
    if samples.is_empty() {
        return;
    }
    write_help_line(out, name, help);
    write_type_line(out, name, kind);
    out.push_str(samples);
    out.push('\n');
}

fn sample(out: &mut String, name: &str, group: &Group<'_>, outcome: Option<Outcome>, value: u64) {
    let _ = write!(
        out,
        "{name}{{cluster=\"{}\",endpoint=\"{}\"",
        sanitize_label_value(group.cluster),
        sanitize_label_value(&group.label)
    );
    if let Some(outcome) = outcome {
        let _ = write!(out, ",outcome=\"{}\"", outcome.as_str());
    }
    let _ = writeln!(out, "}} {value}");
}
