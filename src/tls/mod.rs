//! TLS on both sides of the proxy, with rustls and its `ring` provider.
//!
//! - [`server`]: a listener's `tls` table becomes a [`server::ServerTls`]: TLS 1.2 and 1.3
//!   only, ALPN `h2` and `http/1.1`, certificates chosen by SNI (the first is the default), an
//!   optional `client_ca` that makes client certificates mandatory (mTLS).
//! - [`client`]: a cluster's `tls` table becomes a [`client::ClientTls`]: the cluster's CA (or
//!   Mozilla's roots), SNI, ALPN matching the cluster protocol, an optional client certificate.
//! - [`identity`]: the identity of a verified peer certificate (URI SAN, else DNS SAN, else CN),
//!   and the `x-forwarded-client-cert` value sent upstream.
//! - [`store`]: one live config per distinct `tls` table, re-read when its files change.
//! - [`tunnel`]: the mTLS tunnel between sidecars (`[identity]`): [`tunnel::TunnelTls`], the
//!   8-byte header, `connect` and `accept`.
//! - [`certs_cli`]: `switchyard certs init|issue`, a development CA and leaves (rcgen).
//!
//! Everything verifies its peer; there is no option to turn verification off.

pub mod certs_cli;
pub mod client;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod identity;
pub mod server;
pub mod store;
pub mod tunnel;
pub mod unbuffered;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

// Metric names live with every other in `telemetry`, the one list the scrape describes.
pub use crate::telemetry::metrics::CERT_EXPIRY_TIMESTAMP_SECONDS;

/// Why a TLS config could not be built. Carries the file, so the log line says which one.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file has no PEM item of the kind needed.
    #[error("{path}: no {what} found (PEM expected)")]
    Empty { path: PathBuf, what: &'static str },
    /// A PEM item could not be decoded.
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    /// rustls refused the material (key does not match, unsupported key type, bad CA).
    #[error("{context}: {message}")]
    Rustls { context: String, message: String },
}

/// Reads every certificate of a PEM file (a chain: leaf first), or every CA of a bundle.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            path: path.to_owned(),
            what: "private key",
        },
        other => TlsError::Pem {
            path: path.to_owned(),
            message: other.to_string(),
        },
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Publishes the expiry of `cert` (the leaf of the chain read from `path`) in
/// [`CERT_EXPIRY_TIMESTAMP_SECONDS`]. A certificate that does not parse is skipped: rustls has
/// already accepted or refused it, and the gauge is only a warning aid.
pub fn record_expiry(path: &Path, cert: &CertificateDer<'_>) {
    if let Some(at) = identity::not_after(cert) {
        let name = path.display().to_string();
        metrics::gauge!(CERT_EXPIRY_TIMESTAMP_SECONDS, "name" => name.clone()).set(at as f64);
        expiries()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, at);
    }
}

/// Sets the expiry gauge again for every certificate loaded so far. Certificates are first
/// loaded before `run` installs the metrics recorder (which would drop those values), so the
/// watcher re-publishes them every poll.
pub fn publish_expiries() {
    let known = expiries()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    for (name, at) in known {
        metrics::gauge!(CERT_EXPIRY_TIMESTAMP_SECONDS, "name" => name).set(at as f64);
    }
}

fn expiries() -> &'static std::sync::Mutex<std::collections::BTreeMap<String, i64>> {
    static EXPIRIES: std::sync::OnceLock<
        std::sync::Mutex<std::collections::BTreeMap<String, i64>>,
    > = std::sync::OnceLock::new();
    EXPIRIES.get_or_init(Default::default)
}

/// What a file looked like when it was read: modification time and length. A change of
/// either means "read it again"; comparing contents would read every file every poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStamp(Option<(SystemTime, u64)>);

impl FileStamp {
    /// The file's current stamp (`None` inside when it cannot be inspected, e.g. mid-rename).
    pub fn of(path: &Path) -> Self {
        Self(
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len()))),
        )
    }
}

/// The stamps of `paths`, in order.
fn stamps<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Vec<FileStamp> {
    paths.into_iter().map(|p| FileStamp::of(p)).collect()
}

/// The stamps of a config's files as last read: what the listener, upstream and tunnel TLS
/// configs compare with to decide whether to read their files again.
#[derive(Debug)]
pub struct Stamps(std::sync::Mutex<Vec<FileStamp>>);

impl Stamps {
    /// The current stamps of `paths` (taken before the files are read, so a change during the
    /// read is seen by the next check).
    pub fn of<'a>(paths: impl IntoIterator<Item = &'a PathBuf>) -> Self {
        Self(std::sync::Mutex::new(stamps(paths)))
    }

    /// Whether any of `paths` changed since the last check (or [`Stamps::of`]); records the
    /// new stamps, so a change is reported once.
    pub fn changed<'a>(&self, paths: impl IntoIterator<Item = &'a PathBuf>) -> bool {
        let now = stamps(paths);
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *seen == now {
            return false;
        }
        *seen = now;
        true
    }
}

/// The rustls provider every config here is built with: `ring`, named explicitly so that no
/// process-wide default (or its absence) can change what we negotiate.
pub(crate) fn provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS 1.3 and 1.2, nothing older (rustls has no older versions; this keeps it explicit).
pub(crate) static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Wraps a rustls error with what was being built.
pub(crate) fn rustls_error(context: impl Into<String>, e: impl std::fmt::Display) -> TlsError {
    TlsError::Rustls {
        context: context.into(),
        message: e.to_string(),
    }
}
