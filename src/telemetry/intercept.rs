//! What the transparent listeners count: the metric names of issue 27, the per-listener
//! series built with the snapshot, and the per-proxy tallies the admin API's `/upstreams`
//! (`intercepted`) and the status page show.
//!
//! Per connection, not per request: an intercepted connection costs one registry lookup for
//! `intercepted_connections_total` (its labels, a cluster among them, are known only once the
//! destination is resolved) and one short lock of the tallies; everything a listener knows in
//! advance (its refusal reasons, its opaque byte counters and duration histogram) is built
//! once per snapshot in [`ListenerSeries`].

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics::{Counter, Histogram, Label};

/// `intercepted_connections_total{listener,direction,protocol,target,tls}`.
pub const INTERCEPTED_CONNECTIONS_TOTAL: &str = "switchyard_intercepted_connections_total";
/// `intercepted_refused_total{listener,reason}`.
pub const INTERCEPTED_REFUSED_TOTAL: &str = "switchyard_intercepted_refused_total";
/// `opaque_bytes_total{listener,direction,way}`.
pub const OPAQUE_BYTES_TOTAL: &str = "switchyard_opaque_bytes_total";
/// `opaque_connection_duration_seconds{listener,direction}`.
pub const OPAQUE_CONNECTION_DURATION_SECONDS: &str =
    "switchyard_opaque_connection_duration_seconds";

/// Which side of the workload a connection is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// To the workload (inbound listener).
    Inbound,
    /// From the workload (outbound listener).
    Outbound,
}

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// What an intercepted connection turned out to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 connection preface.
    H2,
    /// Anything else, or nothing before the detect timeout: bytes are copied.
    Opaque,
}

impl Protocol {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http1",
            Self::H2 => "h2",
            Self::Opaque => "opaque",
        }
    }
}

/// Why an intercepted connection was refused (closed, or 403 then closed for HTTP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// Outbound: no original destination (the connection was addressed to the listener).
    NotRedirected,
    /// Outbound: the original destination is one of our own listeners.
    Loop,
    /// Inbound: plaintext on a `strict` port.
    Plaintext,
    /// Inbound or route: the identity (or its absence) is not in `allow`.
    NotAllowed,
    /// Inbound: the tunnel's TLS handshake failed or timed out (or no `[identity]`).
    TunnelHandshake,
    /// Inbound: the tunnel's header was malformed or missing.
    TunnelHeader,
}

impl Refusal {
    /// Every reason, in label order.
    pub const ALL: [Refusal; 6] = [
        Self::NotRedirected,
        Self::Loop,
        Self::Plaintext,
        Self::NotAllowed,
        Self::TunnelHandshake,
        Self::TunnelHeader,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRedirected => "not_redirected",
            Self::Loop => "loop",
            Self::Plaintext => "plaintext",
            Self::NotAllowed => "not_allowed",
            Self::TunnelHandshake => "tunnel_handshake",
            Self::TunnelHeader => "tunnel_header",
        }
    }

    /// The reason a `config::PortPolicy::admits` refusal names.
    pub fn from_policy(reason: &str) -> Self {
        if reason == "plaintext" {
            Self::Plaintext
        } else {
            Self::NotAllowed
        }
    }
}

/// The series one intercepting listener records through, built with its snapshot.
#[derive(Debug)]
pub struct ListenerSeries {
    listener: String,
    direction: Direction,
    refused: [Counter; Refusal::ALL.len()],
    sent: Counter,
    received: Counter,
    duration: Histogram,
}

impl ListenerSeries {
    /// The series of listener `listener`, which intercepts in `direction`.
    pub fn new(listener: &str, direction: Direction) -> Self {
        let name = Label::new("listener", listener.to_owned());
        let dir = Label::new("direction", direction.as_str());
        let refused = Refusal::ALL.map(|reason| {
            let labels = [name.clone(), Label::new("reason", reason.as_str())];
            metrics::counter!(INTERCEPTED_REFUSED_TOTAL, labels.iter())
        });
        let bytes = |way: &'static str| {
            let labels = [name.clone(), dir.clone(), Label::new("way", way)];
            metrics::counter!(OPAQUE_BYTES_TOTAL, labels.iter())
        };
        let labels = [name.clone(), dir.clone()];
        Self {
            listener: listener.to_owned(),
            direction,
            refused,
            sent: bytes("sent"),
            received: bytes("received"),
            duration: metrics::histogram!(OPAQUE_CONNECTION_DURATION_SECONDS, labels.iter()),
        }
    }

    /// The listener's direction.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Counts one refused connection.
    pub fn refused(&self, reason: Refusal) {
        if let Some(slot) = Refusal::ALL.iter().position(|r| *r == reason) {
            self.refused[slot].increment(1);
        }
    }

    /// Counts one intercepted connection once its protocol and target are known.
    pub fn connection(&self, protocol: Protocol, target: &str, mtls: bool) {
        let labels = [
            Label::new("listener", self.listener.clone()),
            Label::new("direction", self.direction.as_str()),
            Label::new("protocol", protocol.as_str()),
            Label::new("target", target.to_owned()),
            Label::new("tls", if mtls { "mtls" } else { "plain" }),
        ];
        metrics::counter!(INTERCEPTED_CONNECTIONS_TOTAL, labels.iter()).increment(1);
    }

    /// Records an opaque connection's bytes (sent = to the target, received = from it) and
    /// how long it lasted.
    pub fn opaque(&self, sent: u64, received: u64, lasted: Duration) {
        self.sent.increment(sent);
        self.received.increment(received);
        self.duration.record(lasted.as_secs_f64());
    }
}

/// Most distinct keys one tally keeps; later ones are counted under `other` (identities and
/// targets are bounded by the mesh and the config, but a tally must not grow without bound
/// whatever feeds it).
const MAX_KEYS: usize = 256;

/// The proxy's tallies of intercepted connections, for `/upstreams` and the status page.
/// One short lock per connection; never held across an `.await`.
#[derive(Debug, Default)]
pub struct InterceptTallies {
    inner: Mutex<Tallies>,
}

/// The tallies themselves, as `/upstreams` shows them.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Tallies {
    /// Every intercepted connection that was served (not refused).
    pub total: u64,
    /// By `inbound` / `outbound`.
    pub by_direction: BTreeMap<String, u64>,
    /// By `http1` / `h2` / `opaque`.
    pub by_protocol: BTreeMap<String, u64>,
    /// By cluster, `passthrough` or `local`.
    pub by_target: BTreeMap<String, u64>,
    /// By the peer's mesh identity (`none` for plaintext).
    pub by_peer_identity: BTreeMap<String, u64>,
    /// Refused connections by reason.
    pub refused: BTreeMap<String, u64>,
}

impl InterceptTallies {
    /// Counts one served connection.
    pub fn served(
        &self,
        direction: Direction,
        protocol: Protocol,
        target: &str,
        identity: Option<&str>,
    ) {
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        t.total += 1;
        bump(&mut t.by_direction, direction.as_str());
        bump(&mut t.by_protocol, protocol.as_str());
        bump(&mut t.by_target, target);
        bump(&mut t.by_peer_identity, identity.unwrap_or("none"));
    }

    /// Counts one refused connection.
    pub fn refused(&self, reason: Refusal) {
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        bump(&mut t.refused, reason.as_str());
    }

    /// A copy of the tallies now.
    pub fn read(&self) -> Tallies {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if map.len() < MAX_KEYS {
        map.insert(key.to_owned(), 1);
    } else {
        *map.entry("other".to_owned()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_count_and_fold_past_the_key_bound() {
        let tallies = InterceptTallies::default();
        for i in 0..(MAX_KEYS + 10) {
            tallies.served(
                Direction::Outbound,
                Protocol::Opaque,
                &format!("c{i}"),
                None,
            );
        }
        tallies.refused(Refusal::Loop);
        let t = tallies.read();
        assert_eq!(t.total, (MAX_KEYS + 10) as u64);
        assert_eq!(t.by_target.len(), MAX_KEYS + 1);
        assert_eq!(t.by_target.get("other"), Some(&10));
        assert_eq!(
            t.by_peer_identity.get("none"),
            Some(&((MAX_KEYS + 10) as u64))
        );
        assert_eq!(t.refused.get("loop"), Some(&1));
    }
}
