//! Downstream TLS: a listener's `tls` table as a rustls [`ServerConfig`].
//!
//! - TLS 1.3 and 1.2 only; the server's cipher-suite order wins (`ignore_client_order`), so a
//!   client cannot steer us to its weakest common suite.
//! - ALPN `h2` then `http/1.1`. The protocol agreed is the only one served on the connection
//!   (`hygiene::Protocols`): `h2` is HTTP/2 only, `http/1.1` HTTP/1 only; without ALPN the
//!   first bytes decide (the HTTP/2 preface, or an HTTP/1 request).
//! - Several certificates, picked by SNI ([`SniResolver`]): exact DNS SAN first, then a
//!   `*.example.com` wildcard SAN, else the first configured (also for clients without SNI).
//! - `client_ca`: every client must present a certificate chaining to it, valid now, with the
//!   clientAuth usage (rustls' `WebPkiClientVerifier`; there is no "optional" mode).
//!
//! The config lives in an `ArcSwap` so that a certificate rotation swaps it for new
//! handshakes while connections already established keep their session.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

use super::{identity, load_certs, load_key, provider, rustls_error, Stamps, TlsError};
use crate::config::{CertKeyPair, ListenerTls};

/// A listener's TLS, live: the current config and what its files looked like when read.
#[derive(Debug)]
pub struct ServerTls {
    spec: ListenerTls,
    config: ArcSwap<ServerConfig>,
    stamps: Stamps,
}

impl ServerTls {
    /// Reads the files of `spec` and builds the config; any bad file is an error.
    pub fn build(spec: &ListenerTls) -> Result<Self, TlsError> {
        let stamps = Stamps::of(files(spec));
        let config = server_config(spec)?;
        Ok(Self {
            spec: spec.clone(),
            config: ArcSwap::from_pointee(config),
            stamps,
        })
    }

    /// The config for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.spec.client_ca.is_some()
    }

    /// Re-reads the files if any changed since the last read. A new set that does not load
    /// (half-written file, key not matching) keeps the old config and is logged; the next
    /// change is tried again. Returns whether a new config was installed.
    pub fn refresh(&self) -> bool {
        if !self.stamps.changed(files(&self.spec)) {
            return false;
        }
        match server_config(&self.spec) {
            Ok(config) => {
                self.config.store(Arc::new(config));
                tracing::info!(cert = %self.spec.certs[0].cert.display(), "listener certificates reloaded");
                true
            }
            Err(error) => {
                tracing::error!(%error, "listener certificates changed but do not load; keeping the old ones");
                false
            }
        }
    }
}

/// Every file a listener's TLS reads.
fn files(spec: &ListenerTls) -> impl Iterator<Item = &std::path::PathBuf> {
    spec.certs
        .iter()
        .flat_map(|p| [&p.cert, &p.key])
        .chain(spec.client_ca.iter())
}

fn server_config(spec: &ListenerTls) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let resolver = SniResolver::load(&spec.certs, &provider)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(super::VERSIONS)
        .map_err(|e| rustls_error("listener tls", e))?;
    let builder = match &spec.client_ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in load_certs(path)? {
                roots
                    .add(ca)
                    .map_err(|e| rustls_error(path.display().to_string(), e))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                    .build()
                    .map_err(|e| rustls_error(path.display().to_string(), e))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.ignore_client_order = true;
    Ok(config)
}

/// Picks a certificate by SNI. Built once per config; a lookup is one hash probe (two for a
/// wildcard), no allocation beyond lower-casing the name.
#[derive(Debug)]
pub struct SniResolver {
    default: Arc<CertifiedKey>,
    /// Exact DNS SANs, lower-case; the first certificate listing a name wins.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` SANs by their suffix `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    /// Loads every pair; the first is the default.
    pub fn load(
        pairs: &[CertKeyPair],
        provider: &rustls::crypto::CryptoProvider,
    ) -> Result<Self, TlsError> {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for pair in pairs {
            let chain = load_certs(&pair.cert)?;
            let key = load_key(&pair.key)?;
            super::record_expiry(&pair.cert, &chain[0]);
            let names = identity::dns_names(&chain[0]);
            let certified =
                Arc::new(CertifiedKey::from_der(chain, key, provider).map_err(|e| {
                    rustls_error(
                        format!("{} with {}", pair.cert.display(), pair.key.display()),
                        e,
                    )
                })?);
            for name in names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_owned()),
                    None => exact.entry(name),
                }
                .or_insert_with(|| Arc::clone(&certified));
            }
            default.get_or_insert(certified);
        }
        let default = default.ok_or_else(|| rustls_error("listener tls", "no certificate"))?;
        Ok(Self {
            default,
            exact,
            wildcard,
        })
    }

    /// The certificate for `sni` (`None`: the client sent no name).
    pub fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(str::to_ascii_lowercase) else {
            return Arc::clone(&self.default);
        };
        let found = self.exact.get(&name).or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent)
        });
        Arc::clone(found.unwrap_or(&self.default))
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(client_hello.server_name()))
    }
}

/// How a listener treats a new connection, as of one snapshot.
#[derive(Debug, Clone)]
pub enum Termination {
    /// No `tls` table: plain HTTP/1.1 and h2c.
    Plain,
    /// TLS with this live config.
    Tls(Arc<ServerTls>),
    /// A `tls` table whose files never loaded (a failed load after a good one keeps the good
    /// config instead). Connections are closed: serving plaintext in its place would be worse.
    Unavailable,
}

impl Termination {
    /// The termination for `listener`, loading (or re-checking) its files via `tls::store`.
    pub fn of(listener: &crate::config::ListenerConfig) -> Self {
        match &listener.tls {
            None => Self::Plain,
            Some(spec) => match super::store::server(spec) {
                Ok(tls) => Self::Tls(tls),
                Err(error) => {
                    tracing::error!(listener = %listener.name, %error, "listener TLS does not load; refusing its connections");
                    Self::Unavailable
                }
            },
        }
    }
}

/// Runs the TLS handshake on an accepted connection under `limit` (tokio-rustls has no timer
/// of its own, and a client that connects and stays silent would otherwise hold a connection
/// slot forever). Returns the stream and, on mTLS listeners, the client's identity; `None`
/// when the handshake failed or timed out (the connection is then closed).
pub async fn handshake(
    tls: &ServerTls,
    stream: tokio::net::TcpStream,
    limit: std::time::Duration,
    peer: std::net::SocketAddr,
) -> Option<(
    tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    Option<identity::PeerIdentity>,
)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Err(_) => {
            tracing::debug!(%peer, ?limit, "TLS handshake timed out");
            None
        }
        Ok(Err(error)) => {
            // Scanners and clients with the wrong CA are routine: debug, not warn.
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Ok(Ok(stream)) => {
            let identity = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(<[_]>::first)
                .and_then(identity::peer_identity);
            Some((stream, identity))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &std::path::Path, file: &str, names: &[&str]) -> CertKeyPair {
        let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let certified = rcgen::generate_simple_self_signed(names).expect("self-signed");
        let pair = CertKeyPair {
            cert: dir.join(format!("{file}.pem")),
            key: dir.join(format!("{file}.key")),
        };
        std::fs::write(&pair.cert, certified.cert.pem()).expect("cert");
        std::fs::write(&pair.key, certified.key_pair.serialize_pem()).expect("key");
        pair
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_the_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pairs = [
            pair(dir.path(), "default", &["default.test"]),
            pair(dir.path(), "wild", &["*.example.test"]),
            pair(dir.path(), "exact", &["api.example.test"]),
        ];
        let resolver =
            SniResolver::load(&pairs, &rustls::crypto::ring::default_provider()).expect("load");
        let der = |p: &CertKeyPair| crate::tls::load_certs(&p.cert).expect("read")[0].clone();
        let picked = |sni: Option<&str>| resolver.pick(sni).cert[0].clone();
        assert_eq!(picked(Some("API.example.test")), der(&pairs[2]));
        assert_eq!(picked(Some("web.example.test")), der(&pairs[1]));
        assert_eq!(
            picked(Some("a.b.example.test")),
            der(&pairs[0]),
            "one label only"
        );
        assert_eq!(picked(Some("unknown.test")), der(&pairs[0]));
        assert_eq!(picked(None), der(&pairs[0]));
    }

    #[test]
    fn a_key_that_does_not_match_its_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = pair(dir.path(), "a", &["a.test"]);
        let b = pair(dir.path(), "b", &["b.test"]);
        let mixed = CertKeyPair {
            cert: a.cert,
            key: b.key,
        };
        let spec = ListenerTls {
            certs: vec![mixed],
            client_ca: None,
        };
        let error = ServerTls::build(&spec).expect_err("mismatched pair");
        assert!(error.to_string().contains("a.pem"), "{error}");
    }
}
