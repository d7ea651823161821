//! TLS helpers for the `tls_*` tests: a CA and leaves made with rcgen in a temp folder, a
//! rustls client that speaks HTTP/1.1 or HTTP/2 over one connection, and a TLS backend.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

/// A certificate authority whose files live in a temp folder.
pub struct Ca {
    pub dir: PathBuf,
    pub cert_path: PathBuf,
    cert: Certificate,
    key: KeyPair,
}

/// What a leaf should look like.
#[derive(Clone)]
pub struct Leaf {
    pub dns: Vec<String>,
    pub uri: Option<String>,
    pub ips: Vec<std::net::IpAddr>,
    pub server: bool,
    pub client: bool,
    /// Validity window relative to now, in seconds (negative: in the past).
    pub from: i64,
    pub to: i64,
}

impl Leaf {
    /// A leaf for `dns`, server and client usage, valid from an hour ago for a day.
    pub fn named(dns: &str) -> Self {
        Self {
            dns: vec![dns.to_owned()],
            uri: None,
            ips: Vec::new(),
            server: true,
            client: true,
            from: -3600,
            to: 86_400,
        }
    }

    /// With a URI SAN (the identity).
    pub fn uri(mut self, uri: &str) -> Self {
        self.uri = Some(uri.to_owned());
        self
    }
}

fn at(offset: i64) -> SystemTime {
    let now = SystemTime::now();
    if offset >= 0 {
        now + Duration::from_secs(offset.unsigned_abs())
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    }
}

impl Ca {
    /// A new CA named `name` in `dir`.
    pub fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).expect("ca dir");
        let key = KeyPair::generate().expect("ca key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("ca cert");
        let cert_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert_path, cert.pem()).expect("write ca");
        Self {
            dir: dir.to_owned(),
            cert_path,
            cert,
            key,
        }
    }

    /// Issues `leaf` and writes `{file}.pem` / `{file}.key`; returns their paths.
    pub fn issue(&self, file: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params = CertificateParams::new(leaf.dns.clone()).expect("dns names");
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, file);
        if let Some(uri) = &leaf.uri {
            let uri = uri.clone().try_into().expect("ascii uri");
            params.subject_alt_names.insert(0, SanType::URI(uri));
        }
        params
            .subject_alt_names
            .extend(leaf.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.extended_key_usages = [
            leaf.server.then_some(ExtendedKeyUsagePurpose::ServerAuth),
            leaf.client.then_some(ExtendedKeyUsagePurpose::ClientAuth),
        ]
        .into_iter()
        .flatten()
        .collect();
        params.not_before = at(leaf.from).into();
        params.not_after = at(leaf.to).into();
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign leaf");
        let cert_path = self.dir.join(format!("{file}.pem"));
        let key_path = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert_path, cert.pem()).expect("write leaf");
        std::fs::write(&key_path, key.serialize_pem()).expect("write key");
        (cert_path, key_path)
    }
}

/// A rustls client config trusting `ca`, offering `alpn`, with an optional client pair.
pub fn client_config(
    ca: &Path,
    pair: Option<&(PathBuf, PathBuf)>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca file") {
        roots.add(cert.expect("ca pem")).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut config = match pair {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .expect("cert file")
                .collect::<Result<Vec<_>, _>>()
                .expect("cert pem");
            let key = PrivateKeyDer::from_pem_file(key).expect("key pem");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client auth")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// The answer of [`tls_get`]: status, headers, body, negotiated ALPN, the server's leaf.
pub struct TlsResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
    pub alpn: Option<Vec<u8>>,
    pub server_cert: Vec<u8>,
}

/// Connects to `addr` with TLS (SNI `sni`; `None` sends none) and GETs `path` with `host`,
/// over HTTP/2 when ALPN picked `h2`, else HTTP/1.1.
pub async fn tls_get(
    addr: SocketAddr,
    sni: Option<&str>,
    config: Arc<rustls::ClientConfig>,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Result<TlsResponse, String> {
    let mut config = (*config).clone();
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?,
        None => {
            // No SNI: connect by IP (rustls sends no SNI for an IP address).
            config.enable_sni = false;
            ServerName::IpAddress(addr.ip().into())
        }
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let server_cert = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let io = TokioIo::new(tls);
    let mut req = Request::get(path).header("host", host);
    for (name, value) in extra {
        req = req.header(*name, *value);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = format!("https://{host}{path}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        sender.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        sender.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(TlsResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        alpn,
        server_cert,
    })
}

/// The DER of the first certificate in a PEM file.
pub fn der_of(pem: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(pem)
        .expect("pem file")
        .next()
        .expect("a certificate")
        .expect("pem")
        .as_ref()
        .to_vec()
}

/// A TLS backend on its own thread: answers 200 with `tls-backend <version>` and records the
/// `x-forwarded-client-cert` it saw; requires client certificates when `client_ca` is given.
pub struct TlsBackend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Option<String>>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsBackend {
    /// Starts on 127.0.0.1 with `pair`; ALPN offers h2 and http/1.1.
    pub fn start(pair: &(PathBuf, PathBuf), client_ca: Option<&Path>) -> Self {
        let chain = CertificateDer::pem_file_iter(&pair.0)
            .expect("cert file")
            .collect::<Result<Vec<_>, _>>()
            .expect("cert pem");
        let key = PrivateKeyDer::from_pem_file(&pair.1).expect("key pem");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("versions");
        let builder = match client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(ca).expect("ca") {
                    roots.add(cert.expect("pem")).expect("add");
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .expect("verifier");
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).expect("server cert");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let seen_task = Arc::clone(&seen);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
                loop {
                    let (tcp, _) = tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => match accepted {
                            Ok(pair) => pair,
                            Err(_) => continue,
                        },
                    };
                    let acceptor = acceptor.clone();
                    let seen = Arc::clone(&seen_task);
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let xfcc = req
                                .headers()
                                .get("x-forwarded-client-cert")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            seen.lock().expect("seen").push(xfcc);
                            let body = format!("tls-backend {:?}", req.version());
                            async move {
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                            }
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        Self {
            addr,
            seen,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An open HTTP/1.1 connection over TLS, for tests that reuse one connection.
pub struct H1Conn {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    pub server_cert: Vec<u8>,
}

impl H1Conn {
    /// Connects with SNI `sni` and ALPN http/1.1 only.
    pub async fn open(addr: SocketAddr, sni: &str, config: Arc<rustls::ClientConfig>) -> Self {
        let connector = tokio_rustls::TlsConnector::from(config);
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from(sni.to_owned()).expect("sni");
        let tls = connector.connect(name, tcp).await.expect("handshake");
        let server_cert = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .unwrap_or_default();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        Self {
            sender,
            server_cert,
        }
    }

    /// GETs `path` on this connection; returns the status.
    pub async fn get(&mut self, host: &str, path: &str) -> u16 {
        self.sender.ready().await.expect("connection usable");
        let req = Request::get(path)
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .expect("request");
        let response = self.sender.send_request(req).await.expect("response");
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await;
        status
    }
}
