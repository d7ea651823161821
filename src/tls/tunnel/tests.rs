use super::*;

#[test]
fn header_round_trips_every_protocol_and_port() {
    for protocol in [
        TunnelProtocol::Detect,
        TunnelProtocol::Http1,
        TunnelProtocol::Http2,
        TunnelProtocol::Opaque,
    ] {
        for port in [1, 80, 8080, 15006, u16::MAX] {
            let header = TunnelHeader { port, protocol };
            let bytes = header.encode();
            assert_eq!(&bytes[..4], b"SYT1");
            assert_eq!(u16::from_be_bytes([bytes[4], bytes[5]]), port);
            assert_eq!(bytes[7], 0);
            assert_eq!(TunnelHeader::decode(&bytes), Ok(header));
        }
    }
    let h2 = TunnelHeader {
        port: 0x1f90,
        protocol: TunnelProtocol::Http2,
    };
    assert_eq!(h2.encode(), *b"SYT1\x1f\x90\x02\x00");
}

#[test]
fn header_decode_rejects_anything_else() {
    let good = TunnelHeader {
        port: 8080,
        protocol: TunnelProtocol::Http1,
    }
    .encode();
    let with = |i: usize, byte: u8| {
        let mut bytes = good;
        bytes[i] = byte;
        bytes
    };
    assert_eq!(
        TunnelHeader::decode(&with(3, b'2')),
        Err(HeaderError::Magic(*b"SYT2"))
    );
    assert_eq!(
        TunnelHeader::decode(b"GET / HT"),
        Err(HeaderError::Magic(*b"GET "))
    );
    assert_eq!(
        TunnelHeader::decode(&with(6, 4)),
        Err(HeaderError::Protocol(4))
    );
    assert_eq!(
        TunnelHeader::decode(&with(6, 0xff)),
        Err(HeaderError::Protocol(0xff))
    );
    assert_eq!(
        TunnelHeader::decode(&with(7, 1)),
        Err(HeaderError::Reserved(1))
    );
    let mut port0 = with(4, 0);
    port0[5] = 0;
    assert_eq!(TunnelHeader::decode(&port0), Err(HeaderError::Port));
    assert_eq!(
        TunnelHeader::decode(&[0; 8]),
        Err(HeaderError::Magic([0; 4]))
    );
}

use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

use crate::tls::certs_cli;
use crate::tls::fixtures::{ca, identity};

const LIMIT: Duration = Duration::from_secs(5);

/// A listener whose one connection goes through [`accept`]; the result comes back on the
/// join handle, after the server echoed one read back (when accepted).
async fn server(
    tls: TunnelTls,
) -> (
    SocketAddr,
    tokio::task::JoinHandle<io::Result<(PeerIdentity, TunnelHeader)>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await?;
        let (mut stream, peer, header) = accept(&tls, stream, LIMIT).await?;
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await?;
        stream.write_all(&buf).await?;
        stream.flush().await?;
        Ok((peer, header))
    });
    (addr, task)
}

const HEADER: TunnelHeader = TunnelHeader {
    port: 8080,
    protocol: TunnelProtocol::Http1,
};

#[tokio::test]
async fn the_right_identity_tunnels_and_both_sides_learn_who_the_other_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = ca(dir.path(), "mesh");
    let a = TunnelTls::load(&identity(&ca_dir, "a", Some("spiffe://local/a"), &ca_dir)).expect("a");
    let b = TunnelTls::load(&identity(&ca_dir, "b", Some("spiffe://local/b"), &ca_dir)).expect("b");
    assert_eq!(a.identity(), "spiffe://local/a");
    let (addr, served) = server(b).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut tunnel = connect(&a, stream, "spiffe://local/b", HEADER, LIMIT)
        .await
        .expect("tunnel");
    tunnel.write_all(b"hello").await.expect("write");
    let mut echo = [0u8; 5];
    tunnel.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"hello");
    let (peer, header) = served.await.expect("join").expect("accepted");
    assert_eq!(peer.id, "spiffe://local/a");
    assert_eq!(header, HEADER);
}

#[tokio::test]
async fn a_peer_other_than_the_announced_identity_is_refused_before_the_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = ca(dir.path(), "mesh");
    let a = TunnelTls::load(&identity(&ca_dir, "a", Some("spiffe://local/a"), &ca_dir)).expect("a");
    let b = TunnelTls::load(&identity(&ca_dir, "b", Some("spiffe://local/b"), &ca_dir)).expect("b");
    let (addr, served) = server(b).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let error = connect(&a, stream, "spiffe://local/orders", HEADER, LIMIT)
        .await
        .expect_err("wrong identity");
    assert_eq!(error.kind(), io::ErrorKind::PermissionDenied, "{error}");
    assert!(error.to_string().contains("spiffe://local/b"), "{error}");
    let error = served.await.expect("join").expect_err("no header came");
    assert!(is_header_error(&error), "{error}");
}

/// A plain rustls client that trusts `ca_dir`'s CA, offers `alpn`, and presents no
/// certificate: what a sidecar-less client (or a scanner) looks like to the inbound port.
fn anonymous_client(ca_dir: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = RootCertStore::empty();
    for ca in load_certs(&ca_dir.join(certs_cli::CA_CERT)).expect("ca") {
        roots.add(ca).expect("root");
    }
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused_at_the_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = ca(dir.path(), "mesh");
    let b = TunnelTls::load(&identity(&ca_dir, "b", Some("spiffe://local/b"), &ca_dir)).expect("b");
    let (addr, served) = server(b).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("b").expect("name");
    // TLS 1.3: the client's side may finish before the server refuses; the first read fails.
    if let Ok(mut tls) = anonymous_client(&ca_dir, &[TUNNEL_ALPN])
        .connect(name, stream)
        .await
    {
        let _ = tls.write_all(&HEADER.encode()).await;
        let mut buf = [0u8; 1];
        assert!(
            !matches!(tls.read(&mut buf).await, Ok(n) if n > 0),
            "no byte comes back"
        );
    }
    let error = served.await.expect("join").expect_err("refused");
    assert!(!is_header_error(&error), "a handshake failure: {error}");
}

#[tokio::test]
async fn certificates_of_another_ca_are_refused_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mesh = ca(dir.path(), "mesh");
    let other = ca(dir.path(), "other");
    let b_spec = identity(&mesh, "b", Some("spiffe://local/b"), &mesh);

    // A client whose certificate another CA signed (it trusts ours, so only we can refuse).
    let intruder =
        TunnelTls::load(&identity(&other, "x", Some("spiffe://local/a"), &mesh)).expect("x");
    let (addr, served) = server(TunnelTls::load(&b_spec).expect("b")).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    if let Ok(mut tls) = connect(&intruder, stream, "spiffe://local/b", HEADER, LIMIT).await {
        let mut buf = [0u8; 1];
        assert!(
            !matches!(tls.read(&mut buf).await, Ok(n) if n > 0),
            "no byte comes back"
        );
    }
    let error = served.await.expect("join").expect_err("refused");
    assert!(!is_header_error(&error), "a handshake failure: {error}");

    // A server whose certificate another CA signed, though it carries the expected identity.
    let a = TunnelTls::load(&identity(&mesh, "a", Some("spiffe://local/a"), &mesh)).expect("a");
    let impostor =
        TunnelTls::load(&identity(&other, "y", Some("spiffe://local/b"), &other)).expect("y");
    let (addr, served) = server(impostor).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let error = connect(&a, stream, "spiffe://local/b", HEADER, LIMIT)
        .await
        .expect_err("unknown issuer");
    // Both development CAs have the same subject name, so webpki finds "the" issuer and the
    // signature does not verify (BadSignature); with distinct names it is UnknownIssuer.
    assert!(
        error.to_string().contains("invalid peer certificate"),
        "{error}"
    );
    assert!(served.await.expect("join").is_err());
}

#[tokio::test]
async fn only_the_tunnel_alpn_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = ca(dir.path(), "mesh");
    for alpn in [&[b"h2".as_slice()][..], &[]] {
        let b =
            TunnelTls::load(&identity(&ca_dir, "b", Some("spiffe://local/b"), &ca_dir)).expect("b");
        let (addr, served) = server(b).await;
        let stream = TcpStream::connect(addr).await.expect("connect");
        let name = ServerName::try_from("b").expect("name");
        if let Ok(mut tls) = anonymous_client(&ca_dir, alpn).connect(name, stream).await {
            let mut buf = [0u8; 1];
            assert!(
                !matches!(tls.read(&mut buf).await, Ok(n) if n > 0),
                "no byte comes back"
            );
        }
        let error = served.await.expect("join").expect_err("refused");
        assert!(!is_header_error(&error), "{alpn:?}: {error}");
    }
}

#[tokio::test]
async fn a_client_offering_another_alpn_with_a_good_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = ca(dir.path(), "mesh");
    let a_spec = identity(&ca_dir, "a", Some("spiffe://local/a"), &ca_dir);
    let b = TunnelTls::load(&identity(&ca_dir, "b", Some("spiffe://local/b"), &ca_dir)).expect("b");
    let a = TunnelTls::load(&a_spec).expect("a");
    let mut config = (*a.client_config()).clone();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (addr, served) = server(b).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let result = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(addr.ip().into()), stream)
        .await;
    assert!(result.is_err(), "no common protocol: the server alerts");
    let error = served.await.expect("join").expect_err("refused");
    assert!(!is_header_error(&error), "{error}");
}

#[tokio::test]
async fn a_bad_header_after_a_good_handshake_is_a_header_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = ca(dir.path(), "mesh");
    let a = TunnelTls::load(&identity(&ca_dir, "a", Some("spiffe://local/a"), &ca_dir)).expect("a");
    let b = TunnelTls::load(&identity(&ca_dir, "b", Some("spiffe://local/b"), &ca_dir)).expect("b");
    let (addr, served) = server(b).await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut tls = tokio_rustls::TlsConnector::from(a.client_config())
        .connect(ServerName::IpAddress(addr.ip().into()), stream)
        .await
        .expect("handshake");
    tls.write_all(b"SYT2\x1f\x90\x01\x00").await.expect("write");
    tls.flush().await.expect("flush");
    let error = served.await.expect("join").expect_err("refused");
    assert!(is_header_error(&error), "{error}");
    assert!(error.to_string().contains("magic"), "{error}");
}

#[test]
fn an_identity_certificate_needs_a_uri_san() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = ca(dir.path(), "mesh");
    let error = TunnelTls::load(&identity(&ca_dir, "plain", None, &ca_dir)).expect_err("no URI");
    assert!(error.to_string().contains("no URI SAN"), "{error}");
    assert!(error.to_string().contains("plain.pem"), "{error}");
}

#[test]
fn a_rotation_keeps_the_identity_or_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = ca(dir.path(), "mesh");
    let spec = identity(&ca_dir, "a", Some("spiffe://local/a"), &ca_dir);
    let tls = TunnelTls::load(&spec).expect("a");
    let before = tls.client_config();
    // Same name, same identity, new key: installed. (Sizes differ at least sometimes; the
    // stamp includes the modification time, which a rewrite also moves.)
    std::thread::sleep(Duration::from_millis(20));
    identity(&ca_dir, "a", Some("spiffe://local/a"), &ca_dir);
    assert!(tls.refresh(), "same identity: rotated");
    assert!(!Arc::ptr_eq(&before, &tls.client_config()));
    std::thread::sleep(Duration::from_millis(20));
    identity(&ca_dir, "a", Some("spiffe://local/other"), &ca_dir);
    assert!(!tls.refresh(), "another identity: kept the old");
    assert_eq!(tls.identity(), "spiffe://local/a");
}
