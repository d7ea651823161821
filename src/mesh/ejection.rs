//! Ejections across the mesh, both ways.
//!
//! - **Out**: endpoints this proxy ejected on its own evidence (any trigger but a mesh quorum)
//!   go into our record as [`EjectionReport`]s for `eject_window`.
//! - **In**: when at least `eject_quorum` other live members reported the same endpoint within
//!   `eject_window`, every local cluster that has it gets `Report::Quorum`, which its health task
//!   turns into an ejection through the one ejection path — so `max_percent` applies and one
//!   confused member (or a quorum on a small cluster) cannot empty it.
//!
//! Report times are each owner's wall clock; the window is seconds long, so NTP-level skew does
//! not matter. Endpoints are matched by address: that is the identity all members share.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use super::state::EjectionReport;
use super::MeshHandle;
use crate::endpoint::{Report, Trigger};
use crate::state::Shared;
use crate::wire::time::epoch_ms;

/// How often local ejections are collected (the view wakes the inbound side sooner).
const SCAN: Duration = Duration::from_secs(1);

/// Runs until the proxy is gone.
pub async fn run(shared: Weak<Shared>, mesh: MeshHandle, quorum: u32, window: Duration) {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    let mut views = mesh.subscribe();
    let mut bridge = Bridge::default();
    loop {
        let Some(proxy) = shared.upgrade() else {
            return;
        };
        let now = epoch_ms(SystemTime::now());
        let reports = bridge.collect_local(&proxy, now, window_ms);
        mesh.report_ejections(reports);
        let view = Arc::clone(&views.borrow_and_update());
        let local = view.local;
        let peer_reports = view
            .records
            .iter()
            .filter(|r| Some(r.id) != local)
            .flat_map(|r| r.ejections.iter().map(move |e| (r.id.addr, *e)));
        for endpoint in bridge.quorums(peer_reports, now, window_ms, quorum) {
            apply_quorum(&proxy, endpoint);
        }
        drop(proxy);
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(SCAN) => {}
        }
    }
}

/// Hands a quorum to every cluster that has `endpoint`.
fn apply_quorum(shared: &Shared, endpoint: SocketAddr) {
    let snapshot = shared.snapshot();
    for cluster in snapshot.clusters() {
        if cluster.endpoints().iter().any(|e| e.address() == endpoint) {
            tracing::info!(cluster = cluster.name(), %endpoint, "mesh quorum reported the endpoint");
            cluster
                .health()
                .report(Report::Quorum { address: endpoint });
        }
    }
}

/// The bridge's memory between rounds.
#[derive(Debug, Default)]
struct Bridge {
    /// Our reports: endpoint -> (its ejection count when reported, when).
    local: HashMap<SocketAddr, (u32, u64)>,
    /// Endpoint -> the newest peer report a quorum was already applied for.
    applied: HashMap<SocketAddr, u64>,
}

impl Bridge {
    /// Our current reports: endpoints ejected here by a local trigger, each stamped when its
    /// ejection count last rose, kept for `window_ms`.
    fn collect_local(&mut self, shared: &Shared, now: u64, window_ms: u64) -> Vec<EjectionReport> {
        let snapshot = shared.snapshot();
        for cluster in snapshot.clusters() {
            for endpoint in cluster.endpoints() {
                let local_trigger = endpoint
                    .health()
                    .trigger()
                    .is_some_and(|t| t != Trigger::MeshQuorum);
                if !endpoint.is_ejected(now) || !local_trigger {
                    continue;
                }
                let count = endpoint.ejections();
                let entry = self.local.entry(endpoint.address()).or_insert((0, 0));
                if entry.0 != count {
                    *entry = (count, now);
                }
            }
        }
        self.local
            .retain(|_, (_, at)| now.saturating_sub(*at) < window_ms);
        let mut reports: Vec<EjectionReport> = self
            .local
            .iter()
            .map(|(endpoint, (_, at_ms))| EjectionReport {
                endpoint: *endpoint,
                at_ms: *at_ms,
            })
            .collect();
        reports.sort_by_key(|r| r.endpoint);
        reports
    }

    /// Endpoints that `quorum` distinct members reported within the window and that have a
    /// report newer than the last quorum applied for them.
    fn quorums(
        &mut self,
        reports: impl Iterator<Item = (SocketAddr, EjectionReport)>,
        now: u64,
        window_ms: u64,
        quorum: u32,
    ) -> Vec<SocketAddr> {
        let mut by_endpoint: HashMap<SocketAddr, (Vec<SocketAddr>, u64)> = HashMap::new();
        for (member, report) in reports {
            if now.saturating_sub(report.at_ms) >= window_ms {
                continue;
            }
            let (members, newest) = by_endpoint.entry(report.endpoint).or_default();
            if !members.contains(&member) {
                members.push(member);
            }
            *newest = (*newest).max(report.at_ms);
        }
        self.applied
            .retain(|_, at| now.saturating_sub(*at) < window_ms);
        let mut out = Vec::new();
        for (endpoint, (members, newest)) in by_endpoint {
            let count = u32::try_from(members.len()).unwrap_or(u32::MAX);
            if count >= quorum.max(1) && self.applied.get(&endpoint) != Some(&newest) {
                self.applied.insert(endpoint, newest);
                out.push(endpoint);
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn report(member: u16, endpoint: u16, at_ms: u64) -> (SocketAddr, EjectionReport) {
        (
            addr(member),
            EjectionReport {
                endpoint: addr(endpoint),
                at_ms,
            },
        )
    }

    #[test]
    fn quorum_needs_distinct_members_within_the_window_and_fires_once_per_report() {
        let mut bridge = Bridge::default();
        let one = vec![report(1, 9000, 100), report(1, 9000, 200)];
        assert!(
            bridge.quorums(one.into_iter(), 300, 1000, 2).is_empty(),
            "one member twice"
        );
        let stale = vec![report(1, 9000, 100), report(2, 9000, 100)];
        assert!(
            bridge.quorums(stale.into_iter(), 5000, 1000, 2).is_empty(),
            "too old"
        );
        let two = vec![
            report(1, 9000, 100),
            report(2, 9000, 150),
            report(3, 9001, 150),
        ];
        assert_eq!(
            bridge.quorums(two.clone().into_iter(), 300, 1000, 2),
            [addr(9000)]
        );
        assert!(
            bridge.quorums(two.into_iter(), 400, 1000, 2).is_empty(),
            "applied already"
        );
        let newer = vec![
            report(1, 9000, 100),
            report(2, 9000, 150),
            report(3, 9000, 350),
        ];
        assert_eq!(
            bridge.quorums(newer.into_iter(), 400, 1000, 2),
            [addr(9000)]
        );
    }
}
