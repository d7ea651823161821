//! The endpoint sets discovery sources published: kept in [`super::Shared`] and read by every
//! snapshot build, so a reload and a discovery update always build from the same sets.

use std::sync::Arc;

use dashmap::DashMap;

use crate::config::{EndpointSource, StaticEndpoint};

/// One endpoint set as a provider published it, tagged with the source it came from so a
/// snapshot build can tell a current set from one left over by a source a reload replaced.
#[derive(Debug, Clone, PartialEq)]
pub struct DiscoveredSet {
    /// The cluster's `discovery` source when the set was published.
    pub source: EndpointSource,
    /// Sorted by address, addresses unique.
    pub endpoints: Vec<StaticEndpoint>,
}

/// The last set each cluster's provider published, keyed by cluster name; kept in `Shared` and
/// read by every snapshot build.
pub type DiscoveredSets = DashMap<String, Arc<DiscoveredSet>>;
