//! Reading identities out of certificates that rustls has already verified.
//!
//! The identity of a peer is its first URI SAN (a SPIFFE ID such as `spiffe://local/web` in a
//! mesh), else its first DNS SAN, else its subject CN: the most specific name the certificate
//! carries. Routes match it (`match.client_identity`) and the backend receives it in
//! `x-forwarded-client-cert`.

use std::fmt::Write as _;

use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::wire::headers::{Present, Watched};

/// The verified client's identity as the request path needs it, computed once per connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// URI SAN, else DNS SAN, else CN.
    pub id: String,
    /// The `x-forwarded-client-cert` value: `Hash=<sha256 of the DER>;URI=<id>` (or `DNS=`,
    /// `Subject=`), the subset of Envoy's format that says who the client is.
    pub forwarded: String,
}

/// The identity of `cert`, or `None` when it names nothing we can use.
pub fn peer_identity(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let (kind, id) = san_identity(&parsed).or_else(|| {
        let cn = parsed.subject().iter_common_name().next()?.as_str().ok()?;
        Some(("Subject", format!("CN={cn}")))
    })?;
    let id = match kind {
        "Subject" => id.trim_start_matches("CN=").to_owned(),
        _ => id,
    };
    let mut forwarded = String::from("Hash=");
    for byte in Sha256::digest(cert.as_ref()) {
        let _ = write!(forwarded, "{byte:02x}");
    }
    // Quoted so that `;`, `,` or `=` in a name cannot split the element.
    let value = if kind == "Subject" {
        format!("CN={id}")
    } else {
        id.clone()
    };
    let _ = write!(forwarded, ";{kind}=\"{}\"", value.replace('"', "\\\""));
    Some(PeerIdentity { id, forwarded })
}

/// First URI SAN, else first DNS SAN, with the element name used in `x-forwarded-client-cert`.
fn san_identity(cert: &X509Certificate<'_>) -> Option<(&'static str, String)> {
    let san = cert.subject_alternative_name().ok()??;
    let names = &san.value.general_names;
    names
        .iter()
        .find_map(|n| match n {
            GeneralName::URI(uri) => Some(("URI", (*uri).to_owned())),
            _ => None,
        })
        .or_else(|| {
            names.iter().find_map(|n| match n {
                GeneralName::DNSName(dns) => Some(("DNS", (*dns).to_owned())),
                _ => None,
            })
        })
}

/// The first URI SAN of `cert` (a SPIFFE ID in a mesh): the identity a sidecar's tunnel
/// certificate must carry, and the one its peers check against what the mesh announced. Unlike
/// [`peer_identity`] there is no fallback to a DNS name or CN: a tunnel identity is a URI.
pub fn uri_san(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        GeneralName::URI(uri) => Some((*uri).to_owned()),
        _ => None,
    })
}

/// The DNS SANs of `cert`, lower-cased: the names an SNI lookup may select it by.
pub fn dns_names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = X509Certificate::from_der(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// When `cert` expires, in Unix seconds.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, parsed) = X509Certificate::from_der(cert.as_ref()).ok()?;
    Some(parsed.validity().not_after.timestamp())
}

/// The header carrying the client certificate's identity to the backend.
pub static X_FORWARDED_CLIENT_CERT: http::HeaderName =
    http::HeaderName::from_static("x-forwarded-client-cert");

/// `x-forwarded-client-cert` from the verified certificate. A client-sent one is always
/// removed first, whatever `trusted_hops` says: only we may vouch for an identity. `present`
/// is `headers` scanned before any of them were set.
pub fn set_forwarded_client_cert(
    headers: &mut http::HeaderMap,
    present: Present,
    identity: Option<&PeerIdentity>,
) {
    if present.has(Watched::XForwardedClientCert) {
        headers.remove(&X_FORWARDED_CLIENT_CERT);
    }
    if let Some(value) = identity.and_then(|id| http::HeaderValue::from_str(&id.forwarded).ok()) {
        headers.insert(X_FORWARDED_CLIENT_CERT.clone(), value);
    }
}
