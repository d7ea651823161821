//! The unbuffered stream over real loopback sockets: against itself and against buffered
//! rustls (tokio-rustls), bytes byte-exact with random chunking, half-close, `close_notify`
//! against truncation, KeyUpdate, garbage, and that an idle stream holds no buffer.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::*;
use crate::tls::fixtures;
use crate::tls::tunnel::TunnelTls;

/// Every wait of these tests ends by then.
const LIMIT: Duration = Duration::from_secs(10);

/// Client and server configs of the tunnel (mTLS, TLS 1.3) from a fresh CA in `dir`.
fn configs(dir: &Path) -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let tls = TunnelTls::load(&fixtures::me(dir)).expect("identity");
    (tls.client_config(), tls.server_config())
}

fn server_name(addr: SocketAddr) -> rustls::pki_types::ServerName<'static> {
    rustls::pki_types::ServerName::IpAddress(addr.ip().into())
}

/// A connected pair of unbuffered streams, handshakes done.
async fn pair(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
) -> (ClientStream, ServerStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let accepting = async {
        let (tcp, _) = listener.accept().await.expect("accept");
        let conn = UnbufferedServerConnection::new(server).expect("server conn");
        let mut stream = TlsStream::new(tcp, conn);
        stream.handshake().await.expect("server handshake");
        stream
    };
    let connecting = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let conn = UnbufferedClientConnection::new(client, server_name(addr)).expect("client conn");
        let mut stream = TlsStream::new(tcp, conn);
        stream.handshake().await.expect("client handshake");
        stream
    };
    let (client, server) =
        tokio::time::timeout(LIMIT, async { tokio::join!(connecting, accepting) })
            .await
            .expect("handshakes within the limit");
    (client, server)
}

/// `len` pseudo-random bytes from `seed`.
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Writes `data` in random chunks (1 byte to 100 KiB, some above a record and a burst), with
/// a flush now and then, then shuts the write half down.
async fn write_chunked<W: AsyncWrite + Unpin>(writer: &mut W, data: &[u8], seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut at = 0;
    while at < data.len() {
        let n = rng.usize(1..=100_000).min(data.len() - at);
        writer.write_all(&data[at..at + n]).await.expect("write");
        if rng.bool() {
            writer.flush().await.expect("flush");
        }
        at += n;
    }
    writer.shutdown().await.expect("shutdown");
}

/// Reads to EOF in random-sized reads (1 byte to 70 KiB).
async fn read_chunked<R: AsyncRead + Unpin>(reader: &mut R, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_000];
    loop {
        let want = rng.usize(1..=buf.len());
        let n = reader.read(&mut buf[..want]).await.expect("read");
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Polls one read of `stream` once: `true` if it would wait (no byte, no EOF).
async fn read_would_wait<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut buf = [0u8; 64];
    poll_fn(|cx| {
        let mut read = ReadBuf::new(&mut buf);
        Poll::Ready(Pin::new(&mut *stream).poll_read(cx, &mut read).is_pending())
    })
    .await
}

#[tokio::test]
async fn several_mib_both_ways_are_byte_exact_with_random_chunks_and_half_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client_config, server_config) = configs(dir.path());
    let (client, server) = pair(client_config, server_config).await;
    let up = bytes(6 << 20, 1);
    let down = bytes(5 << 20, 2);
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut server_read, mut server_write) = tokio::io::split(server);
    // Both directions at once, each ended by a half-close (close_notify, then FIN) while the
    // other still flows. The writers are tasks of their own: a read must not take the
    // writer's wake-up (a split stream's halves live in different tasks).
    let writers = {
        let (up, down) = (up.clone(), down.clone());
        (
            tokio::spawn(async move { write_chunked(&mut client_write, &up, 3).await }),
            tokio::spawn(async move { write_chunked(&mut server_write, &down, 4).await }),
        )
    };
    let work = async {
        tokio::join!(
            read_chunked(&mut server_read, 5),
            read_chunked(&mut client_read, 6),
        )
    };
    let (got_up, got_down) = tokio::time::timeout(LIMIT, work).await.expect("in time");
    writers.0.await.expect("client writer");
    writers.1.await.expect("server writer");
    assert!(
        got_up == up,
        "client -> server: {} of {} bytes, or different",
        got_up.len(),
        up.len()
    );
    assert!(
        got_down == down,
        "server -> client: {} of {} bytes, or different",
        got_down.len(),
        down.len()
    );
}

#[tokio::test]
async fn after_the_peers_half_close_we_still_write_and_read_ends_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client_config, server_config) = configs(dir.path());
    let (mut client, mut server) = pair(client_config, server_config).await;
    let work = async {
        client.write_all(b"request").await.expect("write");
        client.shutdown().await.expect("client half-close");
        let mut request = Vec::new();
        server
            .read_to_end(&mut request)
            .await
            .expect("close_notify is a clean EOF");
        assert_eq!(request, b"request");
        // Reads stay at EOF.
        assert_eq!(server.read(&mut [0u8; 8]).await.expect("read after EOF"), 0);
        server
            .write_all(b"response after the client's close_notify")
            .await
            .expect("write");
        server.shutdown().await.expect("server close");
        let mut response = Vec::new();
        client
            .read_to_end(&mut response)
            .await
            .expect("client read");
        assert_eq!(response, b"response after the client's close_notify");
        // Writing after our own close_notify is an error, not a panic.
        assert!(client.write_all(b"late").await.is_err());
    };
    tokio::time::timeout(LIMIT, work).await.expect("in time");
}

#[tokio::test]
async fn a_tcp_end_without_close_notify_is_unexpected_eof() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client_config, server_config) = configs(dir.path());
    let (mut client, mut server) = pair(client_config, server_config).await;
    let work = async {
        server.write_all(b"partial").await.expect("write");
        server.flush().await.expect("flush");
        // Dropped: the socket closes with no close_notify (a truncation, to the client).
        drop(server);
        let mut got = [0u8; 7];
        client
            .read_exact(&mut got)
            .await
            .expect("the bytes before the end");
        assert_eq!(&got, b"partial");
        let error = client.read(&mut [0u8; 8]).await.expect_err("truncation");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    };
    tokio::time::timeout(LIMIT, work).await.expect("in time");
}

#[tokio::test]
async fn an_idle_stream_holds_no_buffer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client_config, server_config) = configs(dir.path());
    let (mut client, mut server) = pair(client_config, server_config).await;
    let work = async {
        // Handshakes done, nothing read yet: the handshake's buffers are gone.
        assert_eq!(client.buffer_capacity(), 0, "client after its handshake");
        let up = bytes(1 << 20, 7);
        let down = bytes(300_000, 8);
        // Read while writing: a megabyte does not fit the sockets' buffers.
        let (wrote, got) = tokio::join!(
            async {
                client.write_all(&up).await.expect("write");
                client.flush().await.expect("flush");
            },
            async {
                let mut got = vec![0u8; up.len()];
                server.read_exact(&mut got).await.expect("read");
                got
            }
        );
        let () = wrote;
        assert!(got == up);
        assert!(
            read_would_wait(&mut server).await,
            "server has nothing more to read"
        );
        assert_eq!(server.buffer_capacity(), 0, "server after its read waits");
        assert!(
            read_would_wait(&mut client).await,
            "client has nothing to read"
        );
        assert_eq!(
            client.buffer_capacity(),
            0,
            "client after its flush and a waiting read"
        );

        // The other way; a write that is not flushed keeps its buffer until the flush.
        server.write_all(&down).await.ok();
        let mut got = vec![0u8; down.len()];
        let (flushed, read) = tokio::join!(server.flush(), client.read_exact(&mut got));
        flushed.expect("flush");
        read.expect("read");
        assert!(got == down);
        assert!(read_would_wait(&mut client).await);
        assert_eq!(
            client.buffer_capacity(),
            0,
            "client after reading and waiting"
        );
        assert!(read_would_wait(&mut server).await);
        assert_eq!(
            server.buffer_capacity(),
            0,
            "server after flushing and waiting"
        );
    };
    tokio::time::timeout(LIMIT, work).await.expect("in time");
}

#[tokio::test]
async fn key_updates_from_a_buffered_rustls_peer_are_followed_both_ways() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client_config, server_config) = configs(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(server_config);
    let peer = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let mut stream = acceptor.accept(tcp).await.expect("buffered handshake");
        let mut echoed = Vec::new();
        for round in 0..4u64 {
            // Our keys change (with a request that the unbuffered side changes its own).
            stream
                .get_mut()
                .1
                .refresh_traffic_keys()
                .expect("key update");
            let chunk = bytes(100_000, 10 + round);
            stream.write_all(&chunk).await.expect("write");
            stream.flush().await.expect("flush");
            let mut back = vec![0u8; chunk.len()];
            stream
                .read_exact(&mut back)
                .await
                .expect("read the echo under new keys");
            echoed.push(back == chunk);
        }
        stream.shutdown().await.expect("close");
        echoed
    });
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let conn = UnbufferedClientConnection::new(client_config, server_name(addr)).expect("conn");
    let mut client = TlsStream::new(tcp, conn);
    let work = async {
        client
            .handshake()
            .await
            .expect("handshake with buffered rustls");
        let mut buf = vec![0u8; 100_000];
        for _ in 0..4 {
            client
                .read_exact(&mut buf)
                .await
                .expect("read after the peer's key update");
            client.write_all(&buf).await.expect("echo");
            client.flush().await.expect("flush");
        }
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.expect("clean end");
        assert!(rest.is_empty());
        peer.await.expect("peer task")
    };
    let echoed = tokio::time::timeout(LIMIT, work).await.expect("in time");
    assert_eq!(echoed, [true; 4]);
}

#[tokio::test]
async fn a_buffered_rustls_client_talks_to_the_unbuffered_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client_config, server_config) = configs(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        let conn = UnbufferedServerConnection::new(server_config).expect("conn");
        let mut stream = TlsStream::new(tcp, conn);
        stream.handshake().await.expect("handshake");
        let got = read_chunked(&mut stream, 20).await;
        write_chunked(&mut stream, &got, 21).await;
    });
    let connector = tokio_rustls::TlsConnector::from(client_config);
    let work = async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut stream = connector
            .connect(server_name(addr), tcp)
            .await
            .expect("handshake");
        let data = bytes(2 << 20, 22);
        write_chunked(&mut stream, &data, 23).await;
        let echoed = read_chunked(&mut stream, 24).await;
        server.await.expect("server task");
        echoed == data
    };
    assert!(tokio::time::timeout(LIMIT, work).await.expect("in time"));
}

#[tokio::test]
async fn garbage_from_the_peer_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (client_config, server_config) = configs(dir.path());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let work = async {
        // During the handshake: not TLS at all.
        let (mut raw, accepted) = tokio::join!(
            async { TcpStream::connect(addr).await.expect("connect") },
            async { listener.accept().await.expect("accept").0 }
        );
        raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("garbage");
        let conn = UnbufferedServerConnection::new(Arc::clone(&server_config)).expect("conn");
        let mut server = TlsStream::new(accepted, conn);
        let error = server.handshake().await.expect_err("not TLS");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);

        // After the handshake: a well-formed record header with bytes that do not decrypt.
        let connector = tokio_rustls::TlsConnector::from(client_config);
        let (client, accepted) = tokio::join!(
            async { TcpStream::connect(addr).await.expect("connect") },
            async { listener.accept().await.expect("accept").0 }
        );
        let conn = UnbufferedServerConnection::new(Arc::clone(&server_config)).expect("conn");
        let mut server = TlsStream::new(accepted, conn);
        let (client, handshake) = tokio::join!(
            connector.connect(server_name(addr), client),
            server.handshake()
        );
        handshake.expect("server handshake");
        let mut client = client.expect("client handshake");
        client.write_all(b"fine").await.expect("write");
        client.flush().await.expect("flush");
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"fine");
        let mut forged = vec![0x17, 0x03, 0x03, 0x01, 0x00];
        forged.extend_from_slice(&[0xab; 256]);
        client
            .get_mut()
            .0
            .write_all(&forged)
            .await
            .expect("forged record");
        let error = server
            .read(&mut [0u8; 16])
            .await
            .expect_err("a record that does not decrypt");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);

        // And one that claims more than a record may hold.
        let (mut raw, accepted) = tokio::join!(
            async { TcpStream::connect(addr).await.expect("connect") },
            async { listener.accept().await.expect("accept").0 }
        );
        raw.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff])
            .await
            .expect("oversized header");
        let conn = UnbufferedServerConnection::new(server_config).expect("conn");
        let mut server = TlsStream::new(accepted, conn);
        assert!(server.handshake().await.is_err());
    };
    tokio::time::timeout(LIMIT, work).await.expect("in time");
}
