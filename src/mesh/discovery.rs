//! The `mesh` discovery provider: a cluster with `discovery = { mesh = "NAME" }` gets the
//! addresses every live member announces for `NAME`, republished whenever the mesh view or the
//! config changes. Dead and left members' addresses go with their records.
//!
//! One task for all mesh clusters (not one per cluster as the other providers): they all read
//! the same view, and the [`Sink`]s skip unchanged sets, so a view change costs one comparison
//! per cluster.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::View;
use crate::config::{EndpointSource, StaticEndpoint};
use crate::discovery::Sink;
use crate::state::Shared;

/// How often the config is re-read for new or removed mesh clusters (a reload between views).
const CONFIG_POLL: Duration = Duration::from_millis(500);

/// Runs until the proxy is gone or the mesh node stops.
pub async fn run(shared: Weak<Shared>, mut views: watch::Receiver<Arc<View>>) {
    let mut sinks: HashMap<String, (String, Sink)> = HashMap::new();
    loop {
        let Some(proxy) = shared.upgrade() else {
            return;
        };
        let view = Arc::clone(&views.borrow_and_update());
        let snapshot = proxy.snapshot();
        let config = snapshot.config();
        drop(proxy);
        sinks.retain(|cluster, (service, _)| {
            config
                .clusters
                .get(cluster)
                .is_some_and(|c| matches!(&c.endpoints, EndpointSource::Mesh(s) if s == service))
        });
        for cluster in config.clusters.values() {
            let EndpointSource::Mesh(service) = &cluster.endpoints else {
                continue;
            };
            let (_, sink) = sinks.entry(cluster.name.clone()).or_insert_with(|| {
                let sink = Sink::new(
                    Weak::clone(&shared),
                    &cluster.name,
                    cluster.endpoints.clone(),
                );
                (service.clone(), sink)
            });
            let endpoints = view
                .service_endpoints_zoned(service)
                .into_iter()
                // The announcing member's zone (its `[runtime] zone`).
                .map(|(address, zone)| StaticEndpoint {
                    address,
                    weight: 1,
                    zone,
                })
                .collect();
            if !sink.publish(endpoints).await {
                return;
            }
        }
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(CONFIG_POLL) => {}
        }
    }
}
