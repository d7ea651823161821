//! One live TLS config per distinct `tls` table, shared by every snapshot that uses it.
//!
//! Keyed by the table itself (its file paths and settings), so a reload that keeps a table
//! keeps its config (re-reading the files only if they changed), two listeners with the same
//! table share one, and two proxies in one process (tests) cannot see each other's unless they
//! name the very same files. Entries are never removed: a process has a handful of tables.
//!
//! A watcher thread (started with the first entry) re-checks every file's modification time
//! and length once per [`WATCH_INTERVAL`] and rebuilds what changed, so a rotated certificate
//! is served without a reload and without touching established connections. A poll rather
//! than inotify: certificate managers replace files by rename, often through symlink swaps
//! (Kubernetes secrets), which a stat sees and a watch on the old inode does not.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;

use super::client::ClientTls;
use super::server::ServerTls;
use super::tunnel::TunnelTls;
use super::TlsError;
use crate::config::{ClusterTls, Config, IdentityConfig, ListenerTls, Protocol};

/// How often the watcher looks at the certificate files.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Store {
    servers: DashMap<ListenerTls, Arc<ServerTls>>,
    clients: DashMap<(ClusterTls, Protocol), Arc<ClientTls>>,
    tunnels: DashMap<IdentityConfig, Arc<TunnelTls>>,
}

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        start_watcher();
        Store::default()
    })
}

/// The live config for a listener's `tls`: the existing one (its files re-checked) or a new
/// one built from the files.
pub fn server(spec: &ListenerTls) -> Result<Arc<ServerTls>, TlsError> {
    if let Some(found) = store().servers.get(spec).map(|e| Arc::clone(e.value())) {
        found.refresh();
        return Ok(found);
    }
    let built = Arc::new(ServerTls::build(spec)?);
    Ok(Arc::clone(
        store().servers.entry(spec.clone()).or_insert(built).value(),
    ))
}

/// The live config for a cluster's `tls` (see [`server`]).
pub fn client(spec: &ClusterTls, protocol: Protocol) -> Result<Arc<ClientTls>, TlsError> {
    let key = (spec.clone(), protocol);
    if let Some(found) = store().clients.get(&key).map(|e| Arc::clone(e.value())) {
        found.refresh();
        return Ok(found);
    }
    let built = Arc::new(ClientTls::build(spec, protocol)?);
    Ok(Arc::clone(
        store().clients.entry(key).or_insert(built).value(),
    ))
}

/// The live tunnel configs for `[identity]` (see [`server`]).
pub fn tunnel(spec: &IdentityConfig) -> Result<Arc<TunnelTls>, TlsError> {
    if let Some(found) = store().tunnels.get(spec).map(|e| Arc::clone(e.value())) {
        found.refresh();
        return Ok(found);
    }
    let built = Arc::new(TunnelTls::build(spec)?);
    Ok(Arc::clone(
        store().tunnels.entry(spec.clone()).or_insert(built).value(),
    ))
}

/// The config for a new upstream connection: no file access when it is already loaded (the
/// snapshot build loaded it); built here only if that failed then and the files are fixed now.
pub fn client_for_connect(
    spec: &ClusterTls,
    protocol: Protocol,
) -> Result<Arc<ClientTls>, TlsError> {
    let key = (spec.clone(), protocol);
    match store().clients.get(&key) {
        Some(found) => Ok(Arc::clone(found.value())),
        None => client(spec, protocol),
    }
}

/// Loads every `tls` table and `[identity]` of `config`; the first failure is returned. `run`
/// calls it before starting, so a proxy never starts with a listener it cannot serve, and the
/// reloader calls it before publishing, so a config naming bad files is refused and the old
/// one stays.
pub fn preload(config: &Config) -> Result<(), TlsError> {
    for listener in &config.listeners {
        if let Some(spec) = &listener.tls {
            server(spec)?;
        }
    }
    for cluster in config.clusters.values() {
        if let Some(spec) = &cluster.tls {
            client(spec, cluster.protocol)?;
        }
    }
    if let Some(spec) = &config.identity {
        tunnel(spec)?;
    }
    Ok(())
}

fn start_watcher() {
    let spawned = std::thread::Builder::new()
        .name("switchyard-certs".into())
        .spawn(|| loop {
            std::thread::sleep(WATCH_INTERVAL);
            let store = store();
            // Cloned out first: a refresh reads files, and no map shard stays locked meanwhile.
            let servers: Vec<_> = store
                .servers
                .iter()
                .map(|e| Arc::clone(e.value()))
                .collect();
            let clients: Vec<_> = store
                .clients
                .iter()
                .map(|e| Arc::clone(e.value()))
                .collect();
            for tls in servers {
                tls.refresh();
            }
            let tunnels: Vec<_> = store
                .tunnels
                .iter()
                .map(|e| Arc::clone(e.value()))
                .collect();
            for tls in clients {
                tls.refresh();
            }
            for tls in tunnels {
                tls.refresh();
            }
            super::publish_expiries();
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "certificate watcher not started: rotations need a reload");
    }
}
