//! WebSocket / HTTP/1.1 Upgrade: the handshake is forwarded, then both sides are one byte
//! tunnel under the route's `idle_timeout`; `websocket = false` strips the Upgrade.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::backend::{Backend, Behavior};
use crate::support::config::ProxyConfig;
use crate::support::launcher::TestProxy;
use crate::support::{wait_until_async, DEADLINE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HANDSHAKE: &[u8] = b"GET /chat HTTP/1.1\r\nhost: test\r\nconnection: Upgrade\r\n\
upgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n";

/// Answers an upgrade request with 101 and then echoes every byte; anything else gets 400.
async fn echo_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                if !head.to_ascii_lowercase().contains("upgrade: websocket") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let answer = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
connection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    addr
}

/// Reads up to the end of a head, byte by byte so nothing after it is consumed.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The file's config: one worker, `route` lines.
fn config(endpoint: SocketAddr, route: &str) -> ProxyConfig {
    ProxyConfig::new([endpoint]).workers(1).route(route)
}

async fn handshake(proxy: &TestProxy) -> (TcpStream, String) {
    let mut client = TcpStream::connect(proxy.addr("public"))
        .await
        .expect("connect");
    client.write_all(HANDSHAKE).await.expect("handshake");
    let head = tokio::time::timeout(DEADLINE, read_head(&mut client))
        .await
        .expect("101 in time");
    (client, head)
}

#[tokio::test]
async fn websocket_echo_through_the_tunnel() {
    let backend = echo_backend().await;
    let proxy = config(backend, "").start();
    let (mut client, head) = handshake(&proxy).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{head}");
    assert!(lower.contains("connection: upgrade"), "{head}");
    assert!(lower.contains("sec-websocket-accept"), "{head}");

    // Several round trips both ways, including bytes that would confuse an HTTP parser.
    for message in [
        &b"hello"[..],
        b"GET / HTTP/1.1\r\n\r\n",
        &[0x81, 0x02, 0xff, 0x00],
    ] {
        client.write_all(message).await.expect("write");
        let mut echoed = vec![0u8; message.len()];
        tokio::time::timeout(DEADLINE, client.read_exact(&mut echoed))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(echoed, message);
    }
    // The tunnel counts as an open upstream connection while it lives, and not after.
    let state = proxy
        .handle()
        .shared()
        .registry()
        .get("app", backend)
        .expect("endpoint");
    assert!(wait_until_async(DEADLINE, || state.connections() == 1).await);
    drop(client);
    assert!(wait_until_async(DEADLINE, || state.connections() == 0).await);
    proxy.shutdown();
}

/// An upgrade on a keep-alive connection that idled long enough to be parked (its first HTTP
/// session ended): the new session must still hand the socket to the tunnel.
#[tokio::test]
async fn an_upgrade_after_the_connection_was_parked_still_tunnels() {
    let backend = echo_backend().await;
    let proxy = config(backend, "").start();
    let mut client = TcpStream::connect(proxy.addr("public"))
        .await
        .expect("connect");
    client
        .write_all(b"GET /plain HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("request");
    let head = tokio::time::timeout(DEADLINE, read_head(&mut client))
        .await
        .expect("answer in time");
    // The echo backend refuses plain requests, with an empty body.
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // Well past the 20 ms park delay.
    tokio::time::sleep(Duration::from_millis(150)).await;
    client.write_all(HANDSHAKE).await.expect("handshake");
    let head = tokio::time::timeout(DEADLINE, read_head(&mut client))
        .await
        .expect("101 in time");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    client.write_all(b"ping").await.expect("write");
    let mut echoed = [0u8; 4];
    tokio::time::timeout(DEADLINE, client.read_exact(&mut echoed))
        .await
        .expect("echo in time")
        .expect("echo");
    assert_eq!(&echoed, b"ping");
    proxy.shutdown();
}

#[tokio::test]
async fn a_silent_tunnel_is_closed_at_the_idle_timeout() {
    let backend = echo_backend().await;
    let proxy = config(backend, "idle_timeout = \"300ms\"").start();
    let (mut client, head) = handshake(&proxy).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // Traffic keeps it alive past the timeout...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        client.write_all(b"ping").await.expect("write");
        let mut echoed = [0u8; 4];
        client.read_exact(&mut echoed).await.expect("still open");
    }
    // ...silence ends it.
    let started = Instant::now();
    let mut rest = Vec::new();
    // A close or a reset both end the read; only the deadline passing would fail here.
    let _ = tokio::time::timeout(DEADLINE, client.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(rest.is_empty());
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    proxy.shutdown();
}

#[tokio::test]
async fn websocket_false_strips_the_upgrade() {
    let backend = Backend::start(Behavior::fixed(200, "plain"));
    let proxy = config(backend.addr(), "websocket = false").start();
    let (mut client, head) = handshake(&proxy).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = [0u8; 5];
    client.read_exact(&mut body).await.expect("body");
    assert_eq!(&body, b"plain");
    let seen = &backend.requests()[0].headers;
    assert!(!seen.contains_key("upgrade"), "{seen:?}");
    proxy.shutdown();
}
