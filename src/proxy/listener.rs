//! Listening sockets: one per worker per listener, all bound to the same address with
//! `SO_REUSEPORT`, so the kernel spreads new connections over the workers and no accept lock or
//! hand-off between threads exists.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Accept backlog. 1024 matches nginx's default on Linux and is what `somaxconn` allows by
/// default on current kernels.
const BACKLOG: i32 = 1024;

/// Binds `count` sockets on `addr`. When the port is 0 the first socket takes an ephemeral port
/// and the rest bind that same port, so every worker serves the one resolved address.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let mut sockets = Vec::with_capacity(count);
    let mut resolved = addr;
    for _ in 0..count.max(1) {
        let listener = bind_one(resolved)?;
        resolved = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(sockets)
}

fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        // `[::]:80` must not also claim IPv4: a separate `0.0.0.0:80` listener would then fail.
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_resolves_once_for_every_socket() {
        let sockets =
            bind_reuseport(SocketAddr::from(([127, 0, 0, 1], 0)), 3).expect("bind on loopback");
        let ports: Vec<u16> = sockets
            .iter()
            .map(|s| s.local_addr().expect("local addr").port())
            .collect();
        assert_ne!(ports[0], 0);
        assert!(ports.iter().all(|&p| p == ports[0]), "{ports:?}");
    }

    #[test]
    fn ipv6_loopback_binds_when_available() {
        // Hosts without IPv6 fail at bind with AddrNotAvailable; that is not our bug.
        match bind_reuseport("[::1]:0".parse().expect("literal"), 2) {
            Ok(sockets) => assert_eq!(sockets.len(), 2),
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    io::ErrorKind::AddrNotAvailable | io::ErrorKind::Unsupported
                ) || e.raw_os_error() == Some(97),
                "{e}"
            ),
        }
    }
}
