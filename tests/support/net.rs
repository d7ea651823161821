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

/// An address nothing listens on, for connect-refused cases. The same as [`free_port`]: a port
/// just released is very unlikely to be taken again while the test runs (the kernel hands out
/// ephemeral ports in sequence).
pub fn closed_port() -> SocketAddr {
    free_port()
}
