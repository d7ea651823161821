//! The address a redirected connection was going to before `switchyard redirect`'s nftables
//! `REDIRECT` rule sent it to us: `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for IPv6), which
//! conntrack keeps for a NATed connection. socket2 exposes both safely; no `unsafe` here.

use std::net::SocketAddr;

use socket2::SockRef;
use tokio::net::TcpStream;

/// The original destination of `stream` when it was redirected to us; `None` when it was not
/// (no NAT entry: the socket option fails) or the "original" destination is the socket's own
/// local address (conntrack without a redirect answers with the address itself).
pub fn redirected(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let original = original_dst(stream, local)?;
    (original != local).then_some(original)
}

/// `SO_ORIGINAL_DST` of `stream`, whose local address is `local` (which family to ask for).
fn original_dst(stream: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    let socket = SockRef::from(stream);
    let original = match local {
        SocketAddr::V4(_) => socket.original_dst(),
        SocketAddr::V6(_) => socket.original_dst_ipv6(),
    };
    original.ok()?.as_socket()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_addressed_to_the_listener_is_not_redirected() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let client = tokio::spawn(TcpStream::connect(addr));
        let (server, _) = listener.accept().await.expect("accept");
        assert_eq!(redirected(&server), None);
        drop(client.await);
    }
}
