//! Loopback ports for tests that must name an address before anything listens on it.

use std::net::{SocketAddr, TcpListener, UdpSocket};

/// A TCP port on 127.0.0.1 that was free a moment ago: bound to port 0, read, released. For a
/// listener another process or config file must name before it starts (etcd, a mesh member).
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free TCP port")
}

/// [`free_port`] for UDP (the mesh's gossip socket).
pub fn free_udp_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind a free UDP port")
}

/// An address nothing listens on, for connect-refused cases: a socket bound to a port on
/// 127.0.0.1 and never listening, so every connect to it is refused. The socket is leaked on
/// purpose: while this test process lives no other process can take the port (a port merely
/// released, as [`free_port`] gives, can be, and a connect to it then succeeds).
pub fn closed_port() -> SocketAddr {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    socket.bind(&loopback.into()).expect("bind a loopback port");
    let addr = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .expect("the bound address");
    std::mem::forget(socket);
    addr
}
