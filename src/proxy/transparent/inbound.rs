//! Inbound dispatch: a connection to the workload, either our mTLS tunnel from a peer sidecar
//! (addressed to the inbound listener itself) or plaintext from a client without a sidecar
//! (redirected here). See the module doc of [`super`] for the steps.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::detect::{self, Prefixed};
use super::opaque::{self, ConnRecord, Copied};
use super::{original_dst, Conn};
use crate::config::InboundConfig;
use crate::proxy::handler::InterceptedConn;
use crate::router::Destination;
use crate::telemetry::intercept::{Direction, Protocol, Refusal};
use crate::tls::identity::PeerIdentity;
use crate::tls::tunnel::{self, TunnelProtocol};

/// The target label of connections forwarded byte for byte to the app.
const LOCAL: &str = "local";
/// Connect timeout to the app on loopback.
const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a refused HTTP/1 client gets to read its 403 before the connection closes.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

pub(super) async fn serve(conn: Conn, stream: TcpStream, settings: &InboundConfig) {
    match original_dst::redirected(&stream) {
        Some(dst) => {
            let peer = Arrival {
                identity: None,
                port: dst.port(),
                hint: TunnelProtocol::Detect,
                original_dst: dst,
            };
            dispatch(conn, stream, settings, peer).await;
        }
        None => tunnelled(conn, stream, settings).await,
    }
}

/// Who a connection is from and what it is for, once the tunnel (if any) is open.
struct Arrival {
    /// The peer sidecar's verified identity; `None` for plaintext.
    identity: Option<PeerIdentity>,
    /// The workload port the connection is for.
    port: u16,
    /// The protocol the peer's header announced (`Detect` for plaintext).
    hint: TunnelProtocol,
    /// The destination as the client addressed it (for the tunnel: our address, the port).
    original_dst: SocketAddr,
}

/// A connection addressed to the inbound listener: our mTLS tunnel, or refused.
async fn tunnelled(conn: Conn, stream: TcpStream, settings: &InboundConfig) {
    let local = stream.local_addr().ok();
    let tls = conn.ctx.shared.snapshot().tunnel_tls().cloned();
    let Some(tls) = tls else {
        // No `[identity]`: no tunnel can be accepted here.
        return conn.refuse(Refusal::TunnelHandshake);
    };
    let timeout = settings.interception.detect_timeout;
    // Boxed, as the other one-off phases of a connection (`super::Conn::http_boxed` says
    // why): the handshake's state goes when it is done instead of sizing the whole task.
    let (stream, identity, header) = match Box::pin(tunnel::accept(&tls, stream, timeout)).await {
        Ok(accepted) => accepted,
        Err(error) => {
            tracing::debug!(%error, peer = %conn.ctx.peer, "tunnel refused");
            return conn.refuse(refusal_of(&error));
        }
    };
    let mut original_dst = local.unwrap_or_else(|| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    original_dst.set_port(header.port);
    let arrival = Arrival {
        identity: Some(identity),
        port: header.port,
        hint: header.protocol,
        original_dst,
    };
    // Boxed (by `tunnel::accept`): the stream (rustls' connection state inline) is moved into
    // the dispatch, the replaying wrapper and the copy, and each move kept a slot of its size
    // in the task's future; behind a box each is a pointer.
    dispatch(conn, stream, settings, arrival).await;
}

/// Which refusal a failed `tunnel::accept` counts as: the header, or the handshake.
fn refusal_of(error: &std::io::Error) -> Refusal {
    if tunnel::is_header_error(error) {
        Refusal::TunnelHeader
    } else {
        Refusal::TunnelHandshake
    }
}

/// Policy, protocol, then the HTTP stack (declared port) or the bytes to the app.
async fn dispatch<S>(conn: Conn, mut stream: S, settings: &InboundConfig, arrival: Arrival)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let port = arrival.port;
    let app = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    if conn.is_own(app) {
        return conn.refuse(Refusal::Loop);
    }
    let protocol = match arrival.hint {
        TunnelProtocol::Http1 => Some(Protocol::Http1),
        TunnelProtocol::Http2 => Some(Protocol::H2),
        TunnelProtocol::Opaque => Some(Protocol::Opaque),
        TunnelProtocol::Detect if settings.interception.is_opaque_port(port) => {
            Some(Protocol::Opaque)
        }
        TunnelProtocol::Detect => None,
    };
    let (protocol, prefix) = match protocol {
        Some(protocol) => (protocol, Vec::new()),
        None => {
            let timeout = settings.interception.detect_timeout;
            match Box::pin(detect::detect(&mut stream, timeout)).await {
                Ok(found) => found,
                Err(error) => {
                    tracing::debug!(%error, peer = %conn.ctx.peer, "detection failed");
                    return;
                }
            }
        }
    };
    let identity = arrival.identity.as_ref().map(|id| id.id.as_str());
    if let Err(reason) = settings.policy(port).admits(identity) {
        conn.refuse(Refusal::from_policy(reason));
        match protocol {
            Protocol::Http1 => Box::pin(forbid(stream, FORBIDDEN_HTTP1)).await,
            Protocol::H2 => Box::pin(forbid(stream, &goaway_forbidden())).await,
            Protocol::Opaque => {}
        }
        return;
    }
    let mtls = arrival.identity.is_some();
    let client = Prefixed::new(prefix, stream);
    let http = matches!(protocol, Protocol::Http1 | Protocol::H2);
    if http && settings.ports.contains_key(&port) {
        let target = format!("inbound:{port}");
        conn.served(protocol, &target, identity, mtls);
        let mut conn = conn;
        conn.ctx.port = port;
        conn.ctx.client_identity = arrival.identity.map(Arc::new);
        let intercepted = InterceptedConn {
            destination: Destination::Port(port),
            identity_header: settings.identity_header.clone(),
            // The app's client is the tunnel's (or plaintext) peer: its forwarding headers
            // are ours to add, as an `http` listener's.
            adds_forwarding: true,
        };
        // Boxed: see `super::Conn::http_boxed`.
        return conn.http_boxed(client, intercepted).await;
    }
    let record = ConnRecord {
        listener: &conn.ctx.listener,
        direction: Direction::Inbound,
        peer: conn.ctx.peer,
        original_dst: arrival.original_dst,
        target: LOCAL,
        upstream: Some(app),
        protocol,
        identity,
    };
    match tokio::time::timeout(LOCAL_CONNECT_TIMEOUT, TcpStream::connect(app)).await {
        Ok(Ok(upstream)) => {
            let _ = upstream.set_nodelay(true);
            conn.served(protocol, LOCAL, identity, mtls);
            conn.opaque(client, upstream, &record).await;
        }
        Ok(Err(error)) => refused_by_app(&conn, &record, error.kind()),
        Err(_) => refused_by_app(&conn, &record, std::io::ErrorKind::TimedOut),
    }
}

/// The app did not take the connection: the client's connection closes, logged.
fn refused_by_app(conn: &Conn, record: &ConnRecord<'_>, kind: std::io::ErrorKind) {
    let copied = Copied {
        sent: 0,
        received: 0,
        end: opaque::End::Error(kind),
        lasted: Duration::ZERO,
    };
    conn.log(record, &copied);
}

/// The refusal of an HTTP/1 client: 403, then the connection closes.
const FORBIDDEN_HTTP1: &[u8] = b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 10\r\nconnection: close\r\n\r\nforbidden\n";

/// The refusal of an HTTP/2 client, before any of its streams is read: our (empty) SETTINGS,
/// then GOAWAY with last stream 0 and `REFUSED_STREAM` (nothing was processed) and the debug
/// text `forbidden`. A 403 would need the client's first stream read and answered through
/// HPACK; the GOAWAY says the same without taking a request from a refused peer.
fn goaway_forbidden() -> Vec<u8> {
    const DEBUG: &[u8] = b"forbidden";
    const REFUSED_STREAM: u32 = 0x7;
    let mut frames = vec![0, 0, 0, 0x4, 0, 0, 0, 0, 0];
    let length = u32::try_from(8 + DEBUG.len()).unwrap_or(8).to_be_bytes();
    frames.extend_from_slice(&length[1..]);
    frames.extend_from_slice(&[0x7, 0, 0, 0, 0, 0]);
    frames.extend_from_slice(&0u32.to_be_bytes());
    frames.extend_from_slice(&REFUSED_STREAM.to_be_bytes());
    frames.extend_from_slice(DEBUG);
    frames
}

/// Answers a refused HTTP client with `answer` and closes: the answer, our write side shut,
/// then what the client still sends is read and dropped for a moment so that closing with
/// unread bytes does not reset the connection before the client has read its answer.
async fn forbid<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, answer: &[u8]) {
    let answered = async {
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 1024];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_LINGER, answered).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_h2_refusal_is_settings_then_goaway_refused_stream() {
        let frames = goaway_forbidden();
        assert_eq!(&frames[..9], &[0, 0, 0, 4, 0, 0, 0, 0, 0], "empty SETTINGS");
        let goaway = &frames[9..];
        assert_eq!(&goaway[..3], &[0, 0, 17], "length: 8 + debug text");
        assert_eq!(goaway[3], 7, "GOAWAY");
        assert_eq!(&goaway[5..9], &[0, 0, 0, 0], "stream 0");
        assert_eq!(&goaway[9..13], &[0, 0, 0, 0], "last stream 0");
        assert_eq!(&goaway[13..17], &[0, 0, 0, 7], "REFUSED_STREAM");
        assert_eq!(&goaway[17..], b"forbidden");
    }
}
