//! What a reload does to the proxy listeners, compared by name and configured address.
//!
//! - same name, same address: untouched — the workers keep their sockets, no accept gap;
//! - new name: bound (one `SO_REUSEPORT` socket per worker) and started;
//! - same name, new address: the new sockets are bound and started, then the old ones close
//!   and their connections drain;
//! - name gone: its sockets close and its connections drain.
//!
//! Every socket is bound before anything is published, so an address in use fails the reload
//! as a whole and the running listeners are untouched.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::ListenerConfig;
use crate::proxy::listener::bind_reuseport;
use crate::runtime::accept::ListenerCommand;

/// A proxy listener as it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveListener {
    /// The listener's name.
    pub name: String,
    /// The address in the config, which reloads compare (port 0 stays port 0).
    pub configured: SocketAddr,
    /// The bound address (the real port when configured with port 0).
    pub resolved: SocketAddr,
}

/// The listener changes of one reload, sockets already bound.
pub(super) struct Plan {
    /// Listeners to start (new or re-addressed), with one socket per worker.
    start: Vec<(Arc<str>, Vec<std::net::TcpListener>)>,
    /// Removed listeners.
    stop: Vec<Arc<str>>,
    /// The table once applied, in config order.
    next: Vec<LiveListener>,
}

/// Compares `current` with `wanted` and binds what must be bound (`workers` sockets each).
pub(super) fn plan(
    current: &[LiveListener],
    wanted: &[ListenerConfig],
    workers: usize,
) -> Result<Plan, String> {
    let mut start = Vec::new();
    let mut next = Vec::with_capacity(wanted.len());
    for listener in wanted {
        let existing = current.iter().find(|l| l.name == listener.name);
        if let Some(live) = existing.filter(|l| l.configured == listener.listen) {
            next.push(live.clone());
            continue;
        }
        let sockets = bind_reuseport(listener.listen, workers).map_err(|error| {
            format!(
                "listener {:?}: cannot listen on {}: {error}",
                listener.name, listener.listen
            )
        })?;
        let resolved = sockets
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(listener.listen);
        start.push((Arc::from(listener.name.as_str()), sockets));
        next.push(LiveListener {
            name: listener.name.clone(),
            configured: listener.listen,
            resolved,
        });
    }
    let stop = current
        .iter()
        .filter(|l| !wanted.iter().any(|w| w.name == l.name))
        .map(|l| Arc::from(l.name.as_str()))
        .collect();
    Ok(Plan { start, stop, next })
}

impl Plan {
    /// Sends each worker its commands (after the snapshot naming the new listeners is live)
    /// and returns the new listener table.
    pub(super) fn apply(
        self,
        workers: &[mpsc::UnboundedSender<ListenerCommand>],
    ) -> Vec<LiveListener> {
        for (name, sockets) in self.start {
            for (worker, socket) in workers.iter().zip(sockets) {
                // `Err`: that worker has stopped (shutdown); its sockets close with the command.
                let _ = worker.send(ListenerCommand::Start {
                    name: Arc::clone(&name),
                    socket,
                });
            }
            tracing::info!(listener = %name, "listener started");
        }
        for name in self.stop {
            for worker in workers {
                let _ = worker.send(ListenerCommand::Stop {
                    name: Arc::clone(&name),
                });
            }
            tracing::info!(listener = %name, "listener removed; draining its connections");
        }
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ListenerMode;

    fn config(name: &str, listen: &str) -> ListenerConfig {
        ListenerConfig {
            name: name.to_owned(),
            listen: listen.parse().expect("address literal"),
            tls: None,
            trusted_hops: 0,
            mode: ListenerMode::Http,
        }
    }

    fn live(name: &str, listen: &str) -> LiveListener {
        let addr = listen.parse().expect("address literal");
        LiveListener {
            name: name.to_owned(),
            configured: addr,
            resolved: addr,
        }
    }

    #[test]
    fn unchanged_listeners_bind_nothing_and_removed_ones_stop() {
        let current = [live("a", "127.0.0.1:0"), live("b", "127.0.0.1:0")];
        let plan = plan(&current, &[config("a", "127.0.0.1:0")], 2).expect("plan");
        assert!(plan.start.is_empty());
        assert_eq!(plan.stop, vec![Arc::<str>::from("b")]);
        assert_eq!(plan.next, vec![live("a", "127.0.0.1:0")]);
    }

    #[test]
    fn added_and_readdressed_listeners_are_bound_per_worker() {
        let current = [live("a", "127.0.0.1:0")];
        let wanted = [config("a", "127.0.0.2:0"), config("c", "127.0.0.1:0")];
        let plan = plan(&current, &wanted, 3).expect("plan");
        let names: Vec<&str> = plan.start.iter().map(|(n, _)| &**n).collect();
        assert_eq!(names, ["a", "c"]);
        assert!(plan.start.iter().all(|(_, sockets)| sockets.len() == 3));
        assert_eq!(
            plan.next[0].configured,
            "127.0.0.2:0".parse().expect("literal")
        );
        assert_ne!(plan.next[0].resolved.port(), 0);
        assert!(plan.stop.is_empty());
    }

    #[test]
    fn an_address_in_use_fails_the_plan() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr").to_string();
        let error = plan(&[], &[config("x", &addr)], 1)
            .err()
            .expect("bind must fail");
        assert!(
            error.contains("listener \"x\": cannot listen on"),
            "{error}"
        );
    }
}
