//! The outbound listener's target table: which cluster an intercepted connection's original
//! destination belongs to.
//!
//! Built with every snapshot (a reload, and a discovery update of any cluster, since endpoint
//! sets are part of it), never per connection: a lookup is one hash probe. Only a config with
//! an outbound listener builds one; every other snapshot carries an empty table and pays
//! nothing on a discovery update.
//!
//! An address selects, in this order: the cluster whose `addresses` (virtual addresses, as a
//! Kubernetes ClusterIP is) name it — validation keeps those unique — else the first cluster,
//! by name, that has it as an endpoint. `inbound:*` clusters (the app on loopback) are never
//! targets.

use std::net::SocketAddr;
use std::sync::Arc;

use super::ClusterSnapshot;
use crate::config::{Config, ListenerMode};

/// Original destination -> cluster name.
#[derive(Debug, Default)]
pub struct TargetTable {
    by_address: foldhash::HashMap<SocketAddr, Arc<str>>,
}

impl TargetTable {
    /// The table of `config` over `clusters` (the snapshot's endpoint sets).
    pub(super) fn build<'a>(
        config: &Config,
        clusters: impl Iterator<Item = &'a Arc<ClusterSnapshot>> + Clone,
    ) -> Self {
        let mut by_address = foldhash::HashMap::default();
        let outbound = config
            .listeners
            .iter()
            .any(|l| matches!(l.mode, ListenerMode::Outbound(_)));
        if !outbound {
            return Self { by_address };
        }
        for cluster in config.clusters.values() {
            let name: Arc<str> = Arc::from(cluster.name.as_str());
            for address in &cluster.addresses {
                by_address.insert(*address, Arc::clone(&name));
            }
        }
        let mut by_name: Vec<&Arc<ClusterSnapshot>> = clusters
            .filter(|c| !c.name().starts_with("inbound:"))
            .collect();
        by_name.sort_by(|a, b| a.name().cmp(b.name()));
        for cluster in by_name {
            let name: Arc<str> = Arc::from(cluster.name());
            for endpoint in cluster.endpoints() {
                by_address
                    .entry(endpoint.address())
                    .or_insert_with(|| Arc::clone(&name));
            }
        }
        Self { by_address }
    }

    /// The cluster `address` belongs to, if any.
    pub fn get(&self, address: SocketAddr) -> Option<&Arc<str>> {
        self.by_address.get(&address)
    }

    /// How many addresses the table knows (the admin API shows it).
    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    /// Whether no address is known.
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use crate::endpoint::EndpointRegistry;
    use crate::router::{Destination, RequestView};
    use crate::state::Snapshot;

    const TOML: &str = r#"
[[listeners]]
name = "outbound"
listen = "127.0.0.1:0"
mode = "outbound"

[[listeners]]
name = "inbound"
listen = "127.0.0.1:0"
mode = "inbound"
ports = { "8080" = {} }

[[routes]]
name = "api"
listener = "outbound"
match = { path_prefix = "/api" }
cluster = "b"

[clusters.a]
endpoints = ["10.0.0.1:80", "10.0.0.2:80"]
addresses = ["10.96.0.10:80"]

[clusters.b]
endpoints = ["10.0.0.2:80", "10.0.0.3:80"]
"#;

    fn snapshot() -> Snapshot {
        let config = crate::config::parse(TOML, std::path::Path::new("t.toml")).expect("valid");
        Snapshot::build(Arc::new(config), &EndpointRegistry::new(), 1)
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address literal")
    }

    #[test]
    fn addresses_select_clusters_vips_first_then_the_first_cluster_by_name() {
        let snapshot = snapshot();
        let targets = snapshot.targets();
        let name = |a: &str| targets.get(addr(a)).map(|c| c.to_string());
        assert_eq!(name("10.96.0.10:80").as_deref(), Some("a"));
        assert_eq!(name("10.0.0.1:80").as_deref(), Some("a"));
        assert_eq!(
            name("10.0.0.2:80").as_deref(),
            Some("a"),
            "shared: first by name"
        );
        assert_eq!(name("10.0.0.3:80").as_deref(), Some("b"));
        assert_eq!(name("10.0.0.3:81"), None);
        // The inbound app cluster is never an outbound target.
        assert_eq!(name("127.0.0.1:8080"), None);
        assert_eq!(targets.len(), 4);
    }

    #[test]
    fn intercepted_requests_fall_back_to_the_destination_s_synthetic_route() {
        let snapshot = snapshot();
        let router = snapshot.router();
        let headers = http::HeaderMap::new();
        let view = |path: &'static str| RequestView {
            method: &http::Method::GET,
            host: Some("a"),
            path_and_query: path,
            headers: &headers,
            client_identity: None,
        };
        let name = |listener: usize, path: &'static str, to: &Destination| {
            router
                .route_intercepted(listener, &view(path), to)
                .expect("path")
                .map(|r| r.route.config().name.clone())
        };
        let to_a = Destination::Cluster(Arc::from("a"));
        // The listener's own routes first, then `outbound:CLUSTER`.
        assert_eq!(name(0, "/api/x", &to_a).as_deref(), Some("api"));
        assert_eq!(name(0, "/other", &to_a).as_deref(), Some("outbound:a"));
        let to_b = Destination::Cluster(Arc::from("b"));
        assert_eq!(name(0, "/other", &to_b).as_deref(), Some("outbound:b"));
        assert_eq!(
            name(1, "/", &Destination::Port(8080)).as_deref(),
            Some("inbound:8080")
        );
        assert_eq!(
            name(1, "/", &Destination::Port(9090)),
            None,
            "undeclared port"
        );
        // Synthetic routes never match by content: a plain lookup does not see them.
        assert!(router.route(0, &view("/other")).expect("path").is_none());
        let cluster = snapshot.cluster("inbound:8080").expect("synthetic cluster");
        assert_eq!(cluster.endpoints()[0].address(), addr("127.0.0.1:8080"));
    }
}
