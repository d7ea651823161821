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
