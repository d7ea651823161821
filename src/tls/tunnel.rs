//! The mTLS tunnel between sidecars: TLS 1.3 with both sides' `[identity]` certificates, ALPN
//! [`TUNNEL_ALPN`], then an 8-byte [`TunnelHeader`], then the application's bytes.
//!
//! An outbound sidecar that sends a connection to a meshed workload (one whose IP a live mesh
//! member announces a tunnel for) connects to that peer's inbound listener instead
//! ([`connect`]), presents its own certificate, verifies the peer's chain against `[identity]
//! ca` and that the peer's URI SAN is the identity the mesh announced for that IP, and writes
//! the header: which port on the peer's workload the bytes are for, and what protocol they are
//! (a hint that spares the peer its protocol detection). The inbound sidecar ([`accept`])
//! requires and verifies the client certificate, reads the header, and hands the stream, the
//! client's identity and the header to the listener (`proxy::transparent::inbound`).
//!
//! ## Why a small header and not HBONE
//!
//! Istio's ambient mode tunnels with HBONE: HTTP/2 CONNECT over mTLS, one HTTP/2 stream per
//! tunnelled connection. We do what Linkerd does instead: one TLS connection per tunnelled
//! connection and a fixed 8-byte header.
//! - **Throughput**: no second framing layer and no HTTP/2 flow-control window on every byte
//!   of an opaque stream (the bulk target is 0.7x a direct connection).
//! - **Memory**: no HTTP/2 connection and stream state per tunnelled connection (the idle
//!   target is 4 KiB).
//! - **Reuse comes from the pools anyway**: the upstream pools keep HTTP connections per
//!   endpoint, so an HTTP cluster's tunnels are reused like any pooled connection.
//!
//! The price is a TLS handshake per pooled (or opaque) connection where HBONE multiplexes many
//! onto one; session resumption (rustls' default ticket cache) makes the repeat handshakes
//! cheap. The header is not a negotiation: no version field beyond the magic `SYT1` and the
//! ALPN name, which change together if the format ever does.
//!
//! ## Header
//!
//! `b"SYT1"`, destination port (u16, big-endian, not 0), protocol hint (0 detect, 1 HTTP/1,
//! 2 h2, 3 opaque), reserved (0). [`TunnelHeader::decode`] refuses anything else, so a peer of
//! another format version (or garbage) is closed rather than misread.
//!
//! ## Verification
//!
//! - Client side: the server's chain must verify against `ca` (webpki, serverAuth usage, valid
//!   now) and its first URI SAN must equal the expected identity. No DNS name is checked: a
//!   workload IP is not a name, and the identity is what the mesh vouches for. The check of the
//!   identity happens after the handshake (one verifier serves every peer), before a byte of
//!   the header is sent.
//! - Server side: every client must present a certificate chaining to `ca` with the
//!   clientAuth usage (rustls' `WebPkiClientVerifier`; there is no optional mode here: a
//!   client without a sidecar is a redirected plaintext connection, never a tunnel).
//! - Both sides: TLS 1.3 only and ALPN [`TUNNEL_ALPN`] only; a handshake that ends without that
//!   protocol agreed (a peer offering no ALPN) is refused by us after the handshake.
//!
//! ## Record layer
//!
//! [`connect`] and [`accept`] return `tls::unbuffered` streams (rustls' unbuffered API under a
//! tokio `AsyncRead + AsyncWrite`): a sidecar holds one tunnel per intercepted connection,
//! most of them idle, and that stream holds no buffer while idle (its module doc says why).
//!
//! The configs live in `ArcSwap`s like every TLS config here (`tls::store` re-reads the files
//! when they change), so a rotated certificate serves new tunnels without a restart. A
//! rotation may not change the identity (the mesh announced it for the process's life): such
//! files are refused and the old ones kept, with an error in the log.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::identity::{self, PeerIdentity};
use super::unbuffered::{ClientStream, ServerStream, TlsStream};
use super::{load_certs, load_key, provider, rustls_error, Stamps, TlsError};
use crate::config::IdentityConfig;
use crate::telemetry::metrics::TUNNEL_CONNECTIONS_TOTAL;

/// The one ALPN protocol of a tunnel, offered by the client and the only one the server
/// accepts: a tunnel never falls back to anything else on the inbound port.
pub const TUNNEL_ALPN: &[u8] = b"switchyard-tunnel/1";

/// Bytes of a [`TunnelHeader`] on the wire.
pub const HEADER_LEN: usize = 8;

/// The first four bytes of every header (the format's version is in the last digit).
const MAGIC: &[u8; 4] = b"SYT1";

/// What the tunnelled bytes are, as the sending sidecar knows it: the receiving sidecar skips
/// its own detection unless told [`TunnelProtocol::Detect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelProtocol {
    /// Unknown: the receiver detects it as for a redirected connection.
    Detect,
    /// HTTP/1.x requests.
    Http1,
    /// HTTP/2 (prior knowledge: the client preface comes first).
    Http2,
    /// Bytes to copy as they are (a server-speaks-first protocol, or anything not HTTP).
    Opaque,
}

impl TunnelProtocol {
    fn to_byte(self) -> u8 {
        match self {
            Self::Detect => 0,
            Self::Http1 => 1,
            Self::Http2 => 2,
            Self::Opaque => 3,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Detect,
            1 => Self::Http1,
            2 => Self::Http2,
            3 => Self::Opaque,
            _ => return None,
        })
    }

    /// The name used in logs and metric labels (`detect`, `http1`, `h2`, `opaque`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Detect => "detect",
            Self::Http1 => "http1",
            Self::Http2 => "h2",
            Self::Opaque => "opaque",
        }
    }
}

/// The 8 bytes a tunnel client writes after the handshake: which port of the peer's workload
/// the connection is for and what it carries. See the module doc for the layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelHeader {
    /// The destination port on the peer's workload (the original destination's port).
    pub port: u16,
    /// What the bytes after the header are.
    pub protocol: TunnelProtocol,
}

/// Why 8 bytes are not a [`TunnelHeader`]. The inbound listener closes such a connection and
/// counts it (`reason="tunnel_header"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The first four bytes are not `SYT1` (another format version, or not a tunnel at all).
    #[error("tunnel header: bad magic {0:02x?}")]
    Magic([u8; 4]),
    /// Port 0: no workload listens there.
    #[error("tunnel header: port 0")]
    Port,
    /// A protocol hint this version does not know.
    #[error("tunnel header: unknown protocol {0}")]
    Protocol(u8),
    /// The reserved byte is not 0 (reserved for a later format, which changes the magic too).
    #[error("tunnel header: reserved byte {0}, expected 0")]
    Reserved(u8),
}

impl TunnelHeader {
    /// The header's wire form.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [high, low] = self.port.to_be_bytes();
        let [m0, m1, m2, m3] = *MAGIC;
        [m0, m1, m2, m3, high, low, self.protocol.to_byte(), 0]
    }

    /// Reads a header; anything but exactly the layout of [`Self::encode`] is an error.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, HeaderError> {
        let [m0, m1, m2, m3, high, low, protocol, reserved] = *bytes;
        let magic = [m0, m1, m2, m3];
        if &magic != MAGIC {
            return Err(HeaderError::Magic(magic));
        }
        let port = u16::from_be_bytes([high, low]);
        if port == 0 {
            return Err(HeaderError::Port);
        }
        let protocol =
            TunnelProtocol::from_byte(protocol).ok_or(HeaderError::Protocol(protocol))?;
        if reserved != 0 {
            return Err(HeaderError::Reserved(reserved));
        }
        Ok(Self { port, protocol })
    }
}

/// This sidecar's identity: client and server rustls configs built from `[identity]`, live
/// (re-read by `tls::store` when the files change; see the module doc).
#[derive(Debug)]
pub struct TunnelTls {
    spec: IdentityConfig,
    /// Our certificate's URI SAN; fixed for the value's life (a rotation must keep it).
    identity: String,
    client: ArcSwap<ClientConfig>,
    server: ArcSwap<ServerConfig>,
    stamps: Stamps,
}

/// What one read of the files makes.
struct Material {
    identity: String,
    client: ClientConfig,
    server: ServerConfig,
}

impl TunnelTls {
    /// Reads `[identity]`'s files and builds both configs. Errors name the file: unreadable,
    /// no PEM item, a key that does not match, a CA rustls refuses, or a certificate without a
    /// URI SAN (a tunnel identity is a URI, `switchyard certs issue --spiffe`).
    pub fn load(config: &IdentityConfig) -> anyhow::Result<Self> {
        Ok(Self::build(config)?)
    }

    /// [`Self::load`] with the TLS module's own error type, for `tls::store`.
    pub fn build(spec: &IdentityConfig) -> Result<Self, TlsError> {
        let stamps = Stamps::of(files(spec));
        let material = material(spec)?;
        Ok(Self {
            spec: spec.clone(),
            identity: material.identity,
            client: ArcSwap::from_pointee(material.client),
            server: ArcSwap::from_pointee(material.server),
            stamps,
        })
    }

    /// Our identity: the URI SAN of `[identity] cert`, what the mesh announces for us.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The `[identity]` section this was built from.
    pub fn spec(&self) -> &IdentityConfig {
        &self.spec
    }

    /// The client config for the next tunnel we open.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.load_full()
    }

    /// The server config for the next tunnel we accept.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.load_full()
    }

    /// Re-reads the files if any changed since the last read. A set that does not load, or
    /// whose certificate names another identity, keeps the old configs and is logged. Returns
    /// whether new configs were installed.
    pub fn refresh(&self) -> bool {
        if !self.stamps.changed(files(&self.spec)) {
            return false;
        }
        match material(&self.spec) {
            Ok(material) if material.identity != self.identity => {
                tracing::error!(
                    old = %self.identity,
                    new = %material.identity,
                    "identity certificate changed its identity; keeping the old one (the mesh \
                     announces it until restart)"
                );
                false
            }
            Ok(material) => {
                self.client.store(Arc::new(material.client));
                self.server.store(Arc::new(material.server));
                tracing::info!(identity = %self.identity, "identity certificate reloaded");
                true
            }
            Err(error) => {
                tracing::error!(%error, "identity files changed but do not load; keeping the old ones");
                false
            }
        }
    }
}

/// Every file `[identity]` reads.
fn files(spec: &IdentityConfig) -> [&std::path::PathBuf; 3] {
    [&spec.cert, &spec.key, &spec.ca]
}

fn material(spec: &IdentityConfig) -> Result<Material, TlsError> {
    let chain = load_certs(&spec.cert)?;
    let key = load_key(&spec.key)?;
    super::record_expiry(&spec.cert, &chain[0]);
    let identity = identity::uri_san(&chain[0]).ok_or_else(|| {
        rustls_error(
            spec.cert.display().to_string(),
            "no URI SAN: a tunnel identity is a URI (`switchyard certs issue --spiffe ...`)",
        )
    })?;
    let mut roots = RootCertStore::empty();
    for ca in load_certs(&spec.ca)? {
        roots
            .add(ca)
            .map_err(|e| rustls_error(spec.ca.display().to_string(), e))?;
    }
    let roots = Arc::new(roots);
    let provider = provider();
    let pair = format!("{} with {}", spec.cert.display(), spec.key.display());

    let verifier = ChainOnly {
        roots: Arc::clone(&roots),
        algorithms: provider.signature_verification_algorithms,
    };
    let mut client = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| rustls_error("identity (client)", e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(chain.clone(), key.clone_key())
        .map_err(|e| rustls_error(pair.clone(), e))?;
    client.alpn_protocols = vec![TUNNEL_ALPN.to_vec()];

    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, Arc::clone(&provider))
        .build()
        .map_err(|e| rustls_error(spec.ca.display().to_string(), e))?;
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| rustls_error("identity (server)", e))?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(chain, key)
        .map_err(|e| rustls_error(pair, e))?;
    server.alpn_protocols = vec![TUNNEL_ALPN.to_vec()];
    server.ignore_client_order = true;
    Ok(Material {
        identity,
        client,
        server,
    })
}

/// Verifies a tunnel server's chain against `[identity] ca` and nothing else: the name check
/// is replaced by [`connect`]'s URI SAN comparison after the handshake, because the expected
/// identity differs per peer while the config is shared.
#[derive(Debug)]
struct ChainOnly {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable with TLS 1.3 only; verified properly all the same.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The error [`accept`] returns when the handshake succeeded but the header did not come or
/// does not decode: the inbound listener counts those apart (`reason="tunnel_header"`) from
/// handshake failures. Test with [`is_header_error`].
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HeaderFailure(String);

/// Whether an error from [`accept`] happened at the header (after a good handshake) rather
/// than during the handshake or its timeout.
pub fn is_header_error(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<HeaderFailure>())
}

/// Server side: the TLS handshake (client certificate required and verified against `ca`,
/// ALPN [`TUNNEL_ALPN`]) and the header, all within `timeout`. Returns the stream (the
/// application's bytes follow), the client's identity and the header; counts
/// `switchyard_tunnel_connections_total{direction="server"}`.
pub async fn accept(
    tls: &TunnelTls,
    stream: TcpStream,
    timeout: Duration,
) -> io::Result<(Box<ServerStream>, PeerIdentity, TunnelHeader)> {
    let conn = rustls::server::UnbufferedServerConnection::new(tls.server_config())
        .map_err(io::Error::other)?;
    let work = async {
        // Boxed from the start: the stream is moved into the dispatch, the replaying wrapper
        // and the copy (`proxy::transparent::inbound`), a pointer each time.
        let mut stream = Box::new(TlsStream::new(stream, conn));
        stream.handshake().await?;
        let session = stream.session();
        if session.alpn_protocol() != Some(TUNNEL_ALPN) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "tunnel client did not agree to ALPN switchyard-tunnel/1",
            ));
        }
        // The verifier required a certificate; one without any usable name is refused too.
        let peer = session
            .peer_certificates()
            .and_then(<[_]>::first)
            .and_then(identity::peer_identity)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "tunnel client certificate names no identity",
                )
            })?;
        let mut bytes = [0u8; HEADER_LEN];
        stream.read_exact(&mut bytes).await.map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                HeaderFailure(format!("tunnel header not read: {e}")),
            )
        })?;
        let header = TunnelHeader::decode(&bytes).map_err(|e| {
            io::Error::new(io::ErrorKind::InvalidData, HeaderFailure(e.to_string()))
        })?;
        metrics::counter!(
            TUNNEL_CONNECTIONS_TOTAL,
            "direction" => "server",
            "peer_identity" => peer.id.clone()
        )
        .increment(1);
        Ok((stream, peer, header))
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("tunnel handshake and header not done within {timeout:?}"),
        )
    })?
}

/// Client side: the TLS handshake with a peer sidecar's inbound listener (our certificate
/// presented, the peer's chain verified against `ca`, its URI SAN required to equal
/// `expected`), then `header`, all within `timeout`. Counts
/// `switchyard_tunnel_connections_total{direction="client"}`.
///
/// With TLS 1.3 the client finishes its handshake before the server has checked the client
/// certificate, so a peer that refuses ours shows as a failed first read, not as an error here.
pub async fn connect(
    tls: &TunnelTls,
    stream: TcpStream,
    expected: &str,
    header: TunnelHeader,
    timeout: Duration,
) -> io::Result<Box<ClientStream>> {
    // The peer's address as the server name: no SNI is sent for an IP, and the name only keys
    // the session cache (resumption per peer); the identity check below is what authenticates.
    let name = ServerName::IpAddress(stream.peer_addr()?.ip().into());
    let conn = rustls::client::UnbufferedClientConnection::new(tls.client_config(), name)
        .map_err(io::Error::other)?;
    let work = async {
        let mut stream = Box::new(TlsStream::new(stream, conn));
        stream.handshake().await?;
        let session = stream.session();
        if session.alpn_protocol() != Some(TUNNEL_ALPN) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "tunnel server did not agree to ALPN switchyard-tunnel/1",
            ));
        }
        let found = session
            .peer_certificates()
            .and_then(<[_]>::first)
            .and_then(identity::uri_san);
        if found.as_deref() != Some(expected) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "tunnel peer is {}, the mesh announced {expected}",
                    found.as_deref().unwrap_or("(no URI SAN)")
                ),
            ));
        }
        stream.write_all(&header.encode()).await?;
        // Out now, not with the first application write: for a server-speaks-first protocol
        // the client writes nothing until the peer's workload has spoken, and the peer waits
        // for this header to know which workload port to connect to.
        stream.flush().await?;
        metrics::counter!(
            TUNNEL_CONNECTIONS_TOTAL,
            "direction" => "client",
            "peer_identity" => expected.to_owned()
        )
        .increment(1);
        Ok(stream)
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("tunnel handshake not done within {timeout:?}"),
        )
    })?
}

#[cfg(test)]
mod tests;
