//! Fills in what the router's `explain` cannot know: the endpoint a hashing cluster maps this
//! request's key to, from the snapshot's real tables (the same lookup the proxy does).

use std::net::IpAddr;

use crate::balance::{request_hash, PickContext};
use crate::router::{Explanation, RequestView};
use crate::state::Snapshot;

/// Sets `hashed_endpoint` on every hashing cluster of the matched route: the address the key
/// maps to, or a note that the request lacks the key (then `least_request` picks, per request).
/// Health and bounded-load admission are not considered: this is the key's home endpoint.
pub fn fill_hashed_endpoints(
    explanation: &mut Explanation,
    snapshot: &Snapshot,
    req: &RequestView<'_>,
    client: Option<IpAddr>,
) {
    let Some(matched) = explanation.matched.as_mut() else {
        return;
    };
    for view in &mut matched.clusters {
        let Some(cluster) = snapshot.cluster(&view.name) else {
            continue;
        };
        let config = cluster.config();
        let Some(hash_on) = config.hash_on.as_ref() else {
            continue;
        };
        let hash = request_hash(hash_on, req.headers, req.path_and_query, client);
        view.hashed_endpoint = Some(match hash {
            None => format!(
                "(request has no {} key: least_request picks instead)",
                view.hash_on.as_deref().unwrap_or("hash")
            ),
            Some(hash) => {
                let ctx = PickContext {
                    endpoints: cluster.endpoints(),
                    client: None,
                    random: 0,
                    hash: Some(hash),
                };
                cluster
                    .balancer()
                    .candidates(&ctx)
                    .next()
                    .and_then(|i| cluster.endpoints().get(i))
                    .map_or_else(|| "(no endpoints)".to_owned(), |e| e.address().to_string())
            }
        });
    }
}
