//! Upstream TLS: a cluster's `tls` table as a rustls [`ClientConfig`].
//!
//! The backend's certificate is always verified: against `ca` when given, else against
//! Mozilla's root set (`webpki-roots`, compiled in). The name checked is `sni`, else the
//! endpoint's IP address (which the certificate must then list as an IP SAN). ALPN offers only
//! the cluster's protocol, so an `h2` cluster never silently falls back to HTTP/1.1. `cert` +
//! `key` present a client certificate (mTLS to a peer sidecar).

use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use super::{load_certs, load_key, provider, rustls_error, Stamps, TlsError};
use crate::config::{ClusterTls, Protocol};

/// A cluster's TLS, live; see the module doc.
#[derive(Debug)]
pub struct ClientTls {
    spec: ClusterTls,
    protocol: Protocol,
    config: ArcSwap<ClientConfig>,
    /// Parsed once: the name every connection verifies, when `sni` is set.
    sni: Option<ServerName<'static>>,
    stamps: Stamps,
}

impl ClientTls {
    /// Reads the files of `spec` and builds the config for a cluster speaking `protocol`.
    pub fn build(spec: &ClusterTls, protocol: Protocol) -> Result<Self, TlsError> {
        let stamps = Stamps::of(files(spec));
        let config = client_config(spec, protocol)?;
        let sni = match &spec.sni {
            Some(name) => {
                Some(ServerName::try_from(name.clone()).map_err(|e| rustls_error("tls.sni", e))?)
            }
            None => None,
        };
        Ok(Self {
            spec: spec.clone(),
            protocol,
            config: ArcSwap::from_pointee(config),
            sni,
            stamps,
        })
    }

    /// The config for the next connection.
    pub fn config(&self) -> Arc<ClientConfig> {
        self.config.load_full()
    }

    /// The name to send and verify: `sni`, else the endpoint's address.
    pub fn server_name(&self, endpoint: IpAddr) -> ServerName<'static> {
        self.sni
            .clone()
            .unwrap_or(ServerName::IpAddress(endpoint.into()))
    }

    /// Re-reads the files if any changed; a set that does not load keeps the old config.
    pub fn refresh(&self) -> bool {
        if !self.stamps.changed(files(&self.spec)) {
            return false;
        }
        match client_config(&self.spec, self.protocol) {
            Ok(config) => {
                self.config.store(Arc::new(config));
                tracing::info!(sni = ?self.spec.sni, "cluster TLS files reloaded");
                true
            }
            Err(error) => {
                tracing::error!(%error, "cluster TLS files changed but do not load; keeping the old ones");
                false
            }
        }
    }
}

fn files(spec: &ClusterTls) -> impl Iterator<Item = &std::path::PathBuf> {
    spec.ca
        .iter()
        .chain(spec.cert.iter())
        .chain(spec.key.iter())
}

fn client_config(spec: &ClusterTls, protocol: Protocol) -> Result<ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match &spec.ca {
        Some(path) => {
            for ca in load_certs(path)? {
                roots
                    .add(ca)
                    .map_err(|e| rustls_error(path.display().to_string(), e))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(super::VERSIONS)
        .map_err(|e| rustls_error("cluster tls", e))?
        .with_root_certificates(roots);
    let mut config = match (&spec.cert, &spec.key) {
        (Some(cert), Some(key)) => {
            let chain = load_certs(cert)?;
            super::record_expiry(cert, &chain[0]);
            builder
                .with_client_auth_cert(chain, load_key(key)?)
                .map_err(|e| {
                    rustls_error(format!("{} with {}", cert.display(), key.display()), e)
                })?
        }
        // Validation requires both or neither.
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![match protocol {
        Protocol::H2 => b"h2".to_vec(),
        Protocol::Http1 => b"http/1.1".to_vec(),
    }];
    Ok(config)
}
