//! The first step of a start: every socket the proxy accepts on, bound here or handed in
//! already bound ([`Prebound`]), before anything else is made — so an address in use fails the
//! start with nothing to undo, and an embedder or a test can choose the sockets itself.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use super::reload::LiveListener;
use super::start::StartError;
use crate::config::Config;
use crate::proxy::listener::bind_reuseport;

/// Sockets bound before the proxy starts, by whoever runs it: a test that wants to know its
/// addresses up front, a supervisor handing over descriptors. Each replaces the bind of the
/// listener of that name (or of the admin API); listeners without one are bound from the
/// config as usual.
///
/// A handed-in socket is one accept queue: every worker accepts from it (a duplicate of the
/// descriptor each), where a socket the proxy binds itself is one `SO_REUSEPORT` socket per
/// worker. A reload that keeps the listener's configured address keeps the socket; one that
/// changes it binds the new address itself and closes the handed-in socket.
#[derive(Debug, Default)]
pub struct Prebound {
    listeners: BTreeMap<String, TcpListener>,
    admin: Option<TcpListener>,
}

impl Prebound {
    /// No sockets handed in: every listener is bound from the config.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves listener `name` (as named in the config) on `socket`, which must be listening.
    /// A second socket for the same name replaces the first.
    #[must_use]
    pub fn listener(mut self, name: impl Into<String>, socket: TcpListener) -> Self {
        self.listeners.insert(name.into(), socket);
        self
    }

    /// Serves the admin API on `socket`, which must be listening.
    #[must_use]
    pub fn admin(mut self, socket: TcpListener) -> Self {
        self.admin = Some(socket);
        self
    }
}

/// Every socket of one start, with the addresses they resolved to.
#[derive(Debug)]
pub(super) struct Bound {
    pub admin: TcpListener,
    pub admin_addr: SocketAddr,
    /// The listener table the reloader starts from, in config order.
    pub listeners: Vec<LiveListener>,
    /// `sockets[w]`: worker `w`'s socket for every listener, in config order.
    pub sockets: Vec<Vec<(Arc<str>, TcpListener)>>,
}

/// Binds what `config` asks for, one socket per worker and listener, taking the sockets in
/// `prebound` instead where given. Port 0 resolves once: every worker shares the port.
pub(super) fn bind(
    config: &Config,
    workers: usize,
    prebound: Prebound,
) -> Result<Bound, StartError> {
    let Prebound {
        listeners: mut handed_in,
        admin,
    } = prebound;
    if let Some(name) = handed_in
        .keys()
        .find(|name| !config.listeners.iter().any(|l| &l.name == *name))
    {
        return Err(StartError::UnknownListener(name.clone()));
    }
    let admin_error = |source| StartError::Bind {
        listener: "admin".to_owned(),
        address: config.admin.listen,
        source,
    };
    let admin = match admin {
        Some(socket) => {
            socket.set_nonblocking(true).map_err(admin_error)?;
            socket
        }
        None => crate::admin::server::bind(config.admin.listen).map_err(admin_error)?,
    };
    let admin_addr = admin.local_addr().map_err(admin_error)?;
    // Validation refuses a non-loopback `admin.listen` without a token; a handed-in socket
    // gets the same rule, or it would be a way around it.
    if !admin_addr.ip().is_loopback() && config.admin.token.is_none() {
        return Err(StartError::AdminWithoutToken(admin_addr));
    }

    let mut sockets: Vec<Vec<(Arc<str>, TcpListener)>> = (0..workers).map(|_| Vec::new()).collect();
    let mut listeners = Vec::with_capacity(config.listeners.len());
    for listener in &config.listeners {
        let bind_error = |source| StartError::Bind {
            listener: listener.name.clone(),
            address: listener.listen,
            source,
        };
        let bound = match handed_in.remove(&listener.name) {
            Some(socket) => share(socket, workers).map_err(bind_error)?,
            None => bind_reuseport(listener.listen, workers).map_err(bind_error)?,
        };
        let resolved = bound
            .first()
            .map(TcpListener::local_addr)
            .transpose()
            .map_err(bind_error)?
            .unwrap_or(listener.listen);
        listeners.push(LiveListener {
            name: listener.name.clone(),
            configured: listener.listen,
            resolved,
        });
        let name: Arc<str> = Arc::from(listener.name.as_str());
        for (slot, socket) in sockets.iter_mut().zip(bound) {
            slot.push((Arc::clone(&name), socket));
        }
    }
    Ok(Bound {
        admin,
        admin_addr,
        listeners,
        sockets,
    })
}

/// One handed-in socket as `workers` sockets: the socket and duplicates of its descriptor,
/// non-blocking as the workers' reactors need.
fn share(socket: TcpListener, workers: usize) -> io::Result<Vec<TcpListener>> {
    socket.set_nonblocking(true)?;
    let mut shared = Vec::with_capacity(workers.max(1));
    for _ in 1..workers.max(1) {
        shared.push(socket.try_clone()?);
    }
    shared.insert(0, socket);
    Ok(shared)
}
