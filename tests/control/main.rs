//! The control plane: endpoint discovery (file, DNS, etcd), config reload, and the mesh (real
//! members, partitions, quorum ejection, cache purge), and transparent mode in network
//! namespaces: `switchyard redirect` (`transparent_redirect`) and pods whose apps talk through
//! their sidecars (`transparent`). The 50-member simulation is its own binary, `tests/mesh_sim/`.
//!
//! One module per topic; `tests/README.md` says how to add one. All run in one process:
//! see `support::alone` for a test that needs it to itself.

#[path = "../support/mod.rs"]
mod support;

mod discovery_dns;
mod discovery_etcd;
mod discovery_etcd_scale;
mod discovery_file;
mod mesh_partition;
mod mesh_proxies;
mod mesh_purge;
mod mesh_quorum;
mod mesh_rate_limit;
mod mesh_tunnel;
mod mesh_zone;
mod netns;
mod reload_admin;
mod reload_file;
mod reload_traffic;
mod transparent;
mod transparent_redirect;
