//! One connection pool per endpoint per worker, kept in a thread-local.
//!
//! Why a thread-local and no lock: every worker is a current-thread tokio runtime pinned to its
//! own thread, so every task that touches a worker's pools runs on that thread. A `RefCell` in a
//! thread-local is then exactly "one pool per worker" and costs a borrow flag, not a lock; the
//! borrow never spans an `.await` (every access is a synchronous closure). What must be shared
//! across workers — the endpoint's open-connection count, which the cap is checked against —
//! stays in `EndpointState`'s atomics.
//!
//! HTTP/1.1: idle connections are a LIFO stack (the most recently used one is the least likely
//! to have been closed by the backend); one older than `pool.idle_timeout` is never handed out,
//! which is what keeps a POST off a connection the backend is about to close. HTTP/2: the pool
//! keeps the live connections' senders and multiplexes every request on the first usable one; a
//! connection that sent GOAWAY is retired and the next request opens a new one.
//!
//! Reuse follows the meshed table (see the module doc of [`super::dial`]): a checkout reads
//! the table generation once (one atomic load), and a pooled connection made under another
//! generation is re-checked against the current table before it is handed out; one whose route
//! (direct, or the tunnel peer) is no longer the one a new connection would take is dropped,
//! HTTP/1.1 ones closed, HTTP/2 ones removed from the pool (their streams in flight finish).
//!
//! Pools are keyed by the `EndpointState` allocation; each pool holds a `Weak` to it, which keeps
//! the allocation (not the state) alive, so the key cannot be reused by another endpoint while
//! the pool exists. A per-worker reaper closes expired idle connections and drops the pools of
//! endpoints that are gone.
//!
//! `max_connections_per_endpoint` bounds the sockets open to an endpoint across all workers,
//! idle ones included: the cap exists to protect a backend's connection slots (a server with a
//! fixed worker or `maxclients` count), and a parked keep-alive connection holds one of those
//! slots just as a busy one does. With several workers, though, the connection the cap allows
//! may sit idle in another worker's pool, which this worker cannot reach (thread-local, no
//! lock). So a request that finds the endpoint at the cap while some counted connection is idle
//! asks for one to be closed (an atomic on `EndpointState`) and wakes every worker's reaper (a
//! process-wide `Notify`); the reaper of a worker holding an idle connection of that endpoint
//! closes its oldest one, the slot frees, and the request opens its own connection. Counting
//! only busy connections instead would let idle ones push the sockets a backend sees past the
//! cap, which is what the cap is there to prevent.

use std::cell::RefCell;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hyper::client::conn::http2;
use metrics::{Label, SharedString};
use tokio::sync::Notify;

use super::connect::{self, OpenConn, Sender};
use super::dial::{Tunnels, Via};
use super::h1;
use crate::config::{ClusterConfig, Protocol};
use crate::endpoint::EndpointState;
use crate::wire::outcome::{FailureKind, UpstreamError};
use crate::wire::Body;

/// How often the reaper looks for expired idle connections: fine enough that a connection is
/// closed within a quarter second of expiring, coarse enough to cost nothing.
const REAP_EVERY: Duration = Duration::from_millis(250);
/// While waiting under the connection cap, how often to re-check the shared count: a slot
/// freed by another worker does not wake this worker's waiters.
const CAP_RECHECK: Duration = Duration::from_millis(10);

/// Wakes every worker's reaper when a request at the connection cap asks for an idle connection
/// to be closed. Process-wide rather than per endpoint: a reaper serves all its worker's pools,
/// and the asks themselves (which endpoint, how many) are counted on `EndpointState`.
/// `notify_waiters` reaches only reapers waiting at that moment; a reaper busy meanwhile still
/// sees the ask, because a waiting request repeats it at every `CAP_RECHECK`.
static CLOSE_IDLE: Notify = Notify::const_new();

/// Metric labels of one endpoint's cluster, built once when its pool is created (never per
/// request). The `{cluster,endpoint,outcome}` counter lives on `EndpointState::metrics`, which
/// also applies `[metrics] max_endpoint_series`.
#[derive(Debug)]
pub struct PoolLabels {
    /// `{cluster}`: connections gauge and connect histogram.
    pub cluster: Vec<Label>,
}

impl PoolLabels {
    fn new(endpoint: &EndpointState) -> Self {
        let cluster = SharedString::from(Arc::<str>::from(endpoint.cluster()));
        Self {
            cluster: vec![Label::new("cluster", cluster)],
        }
    }
}

struct IdleH1 {
    conn: h1::Conn,
    since: Instant,
    _parked: Parked,
}

/// Counts a connection in `EndpointState::idle_connections` while it sits in a pool, whichever
/// way it leaves (handed out, expired, closed for another worker, the pool dropped).
struct Parked(Arc<EndpointState>);

impl Parked {
    fn new(endpoint: &Arc<EndpointState>) -> Self {
        endpoint.connection_parked();
        Self(Arc::clone(endpoint))
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.connection_unparked();
    }
}

struct LiveH2 {
    id: u64,
    sender: http2::SendRequest<Body>,
    last_used: Instant,
    /// The route it was made on, re-checked when the meshed table changes.
    via: Via,
}

struct EndpointPool {
    endpoint: Weak<EndpointState>,
    labels: Arc<PoolLabels>,
    /// Woken when a connection of this worker is released or closed.
    released: Arc<Notify>,
    idle_h1: Vec<IdleH1>,
    h2: Vec<LiveH2>,
    /// An HTTP/2 connection is being opened: requests arriving meanwhile wait for it instead of
    /// each opening their own (a burst would otherwise open one connection per request).
    h2_connecting: bool,
    /// From the cluster config at the last checkout, so a reload applies without a rebuild.
    idle_timeout: Duration,
    max_idle: usize,
    /// `max_connections_per_endpoint` (0 = none), for the reaper's close-idle decision.
    max_connections: u64,
}

#[derive(Default)]
struct Pools {
    /// Keyed by the endpoint's address in memory (see [`key`]), looked up twice per request
    /// (checkout and return). foldhash: the keys are ours, never a client's, so SipHash's
    /// flood resistance buys nothing and costs instructions on every lookup (compare with
    /// `benches/load/run.sh --instructions --baseline OLD_BINARY`).
    by_endpoint: foldhash::HashMap<usize, EndpointPool>,
    reaper_started: bool,
    next_id: u64,
}

thread_local! {
    static POOLS: RefCell<Pools> = RefCell::new(Pools::default());
}

fn key(endpoint: &Arc<EndpointState>) -> usize {
    Arc::as_ptr(endpoint) as usize
}

/// Runs `f` on this worker's pool for `endpoint`, creating it (and the reaper) on first use.
fn with_pool<R>(endpoint: &Arc<EndpointState>, f: impl FnOnce(&mut EndpointPool, u64) -> R) -> R {
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        if !pools.reaper_started {
            pools.reaper_started = true;
            tokio::spawn(reap());
        }
        pools.next_id += 1;
        let id = pools.next_id;
        let pool = pools
            .by_endpoint
            .entry(key(endpoint))
            .or_insert_with(|| EndpointPool {
                endpoint: Arc::downgrade(endpoint),
                labels: Arc::new(PoolLabels::new(endpoint)),
                released: Arc::new(Notify::new()),
                idle_h1: Vec::new(),
                h2: Vec::new(),
                h2_connecting: false,
                idle_timeout: Duration::ZERO,
                max_idle: 0,
                max_connections: 0,
            });
        f(pool, id)
    })
}

/// A connection handed to one request.
pub(crate) struct Lease {
    pub sender: Sender,
    /// HTTP/2 connection id, to retire it after a GOAWAY.
    pub h2_id: u64,
}

enum Step {
    Ready(Lease),
    Connect(OpenConn, Arc<PoolLabels>),
    /// Wait for a wake-up on the notify; `at_cap`: because of the connection cap (rather than
    /// an HTTP/2 connect in progress).
    Wait {
        released: Arc<Notify>,
        at_cap: bool,
    },
}

/// A connection to `endpoint`: a pooled one unless `fresh`, else a new one; under
/// `max_connections_per_endpoint`, waits up to `connect_timeout` for a slot (then 503).
pub(crate) async fn checkout(
    cluster: &ClusterConfig,
    endpoint: &Arc<EndpointState>,
    fresh: bool,
    tunnels: Option<&Tunnels>,
) -> Result<Lease, UpstreamError> {
    // Read only once a wait starts: most checkouts find a pooled connection at once.
    let mut deadline = None;
    let max = cluster.pool.max_connections_per_endpoint as u64;
    let mesh = connect::deciding(cluster, tunnels);
    // Bounded by the deadline: every iteration either returns or waits until it passes.
    loop {
        // One atomic load: the table itself is loaded only for a connection made under another
        // generation (see the module doc).
        let route = mesh.map(|tunnels| Route {
            tunnels,
            generation: tunnels.generation(),
            ip: endpoint.address().ip(),
        });
        let step = with_pool(endpoint, |pool, _| {
            pool.idle_timeout = cluster.pool.idle_timeout;
            pool.max_idle = cluster.pool.max_idle_per_endpoint;
            pool.max_connections = max;
            if !fresh {
                if let Some(lease) = pool.take_pooled(route.as_ref()) {
                    return Step::Ready(lease);
                }
            }
            let h2 = cluster.protocol == Protocol::H2;
            let wait = |at_cap| Step::Wait {
                released: Arc::clone(&pool.released),
                at_cap,
            };
            if h2 && !fresh && pool.h2_connecting {
                return wait(false);
            }
            if max > 0 && endpoint.connections() >= max {
                // A request that wants a fresh connection (a retry) frees one of this worker's
                // own idle ones; its close wakes `released`.
                if fresh && !pool.idle_h1.is_empty() {
                    drop(pool.idle_h1.remove(0));
                }
                return wait(true);
            }
            let slot = OpenConn::open(endpoint, &pool.labels, &pool.released);
            // Checked again after counting ourselves in, so racing workers can only both back
            // off, never both exceed the cap.
            if max > 0 && endpoint.connections() > max {
                slot.abandon();
                return wait(true);
            }
            pool.h2_connecting |= h2;
            Step::Connect(slot, Arc::clone(&pool.labels))
        });
        match step {
            Step::Ready(lease) => return Ok(lease),
            Step::Connect(slot, labels) => {
                // Clears `h2_connecting` however this ends: success, failure, or this future
                // dropped mid-connect by a timeout (else later requests would wait forever).
                let _connecting = (cluster.protocol == Protocol::H2).then(|| Connecting {
                    endpoint: Arc::clone(endpoint),
                });
                // Boxed: the connect future (TCP, TLS handshake, HTTP/2 handshake) is several
                // KiB, and inline it would make every request's future that large, copied on
                // each move, though most requests find a pooled connection.
                let (sender, via) =
                    Box::pin(connect::connect(cluster, endpoint, &labels, slot, tunnels)).await?;
                return Ok(with_pool(endpoint, |pool, id| pool.adopt(sender, via, id)));
            }
            Step::Wait { released, at_cap } => {
                // The cap may be held by connections idle in other workers' pools: ask for one
                // to be closed (repeated at every recheck; the ask count stays bounded).
                if at_cap && endpoint.idle_connections() > 0 {
                    endpoint.want_idle_closed();
                    CLOSE_IDLE.notify_waiters();
                }
                let now = tokio::time::Instant::now();
                let deadline = *deadline.get_or_insert(now + cluster.connect_timeout);
                if now >= deadline {
                    return Err(UpstreamError::unsent(
                        FailureKind::PoolExhausted,
                        endpoint.address(),
                        format!("{max} connections open for {:?}", cluster.connect_timeout),
                    ));
                }
                let recheck = (now + CAP_RECHECK).min(deadline);
                tokio::select! {
                    () = released.notified() => {}
                    () = tokio::time::sleep_until(recheck) => {}
                }
            }
        }
    }
}

/// Marks the end of an HTTP/2 connect on drop; the requests that waited for it look again.
struct Connecting {
    endpoint: Arc<EndpointState>,
}

impl Drop for Connecting {
    fn drop(&mut self) {
        // `try_with`: during thread teardown the pools may already be gone, and then so is
        // everyone who could be waiting.
        let _ = POOLS.try_with(|pools| {
            if let Some(pool) = pools.borrow_mut().by_endpoint.get_mut(&key(&self.endpoint)) {
                pool.h2_connecting = false;
                pool.released.notify_waiters();
            }
        });
    }
}

/// What one checkout re-checks pooled connections against: the tunnels deciding the
/// cluster's routes, the generation read for this checkout, and the endpoint's IP.
struct Route<'a> {
    tunnels: &'a Tunnels,
    generation: u64,
    ip: std::net::IpAddr,
}

impl Route<'_> {
    /// Whether a pooled connection made as `via` may still be used (see the module doc);
    /// no table is loaded unless its generation is not this checkout's.
    fn keeps(&self, via: &mut Via) -> bool {
        let keep = self.tunnels.still_right(via, self.ip, self.generation);
        if !keep {
            tracing::debug!(endpoint = %self.ip, "pooled connection dropped: the meshed table changed its route");
        }
        keep
    }
}

impl EndpointPool {
    /// A pooled connection for a request. `route`: the meshed table check, absent when no
    /// table decides this cluster's routes.
    fn take_pooled(&mut self, route: Option<&Route<'_>>) -> Option<Lease> {
        let now = Instant::now();
        // Bounded by the stack's length: each pass pops one entry.
        // A connection the backend closed (or sent stray bytes on) is dropped here, before
        // anything was written to it, and the next one is tried; so is one whose route the
        // meshed table changed.
        while let Some(mut idle) = self.idle_h1.pop() {
            if now.duration_since(idle.since) < self.idle_timeout
                && idle.conn.is_idle_clean()
                && route.is_none_or(|route| route.keeps(idle.conn.via_mut()))
            {
                return Some(self.lease(Sender::H1(idle.conn), 0));
            }
        }
        // A removed sender stops getting requests; the connection's driver ends once its
        // streams in flight finish and the last handle is gone.
        self.h2.retain_mut(|c| {
            !c.sender.is_closed() && route.is_none_or(|route| route.keeps(&mut c.via))
        });
        let live = self.h2.first_mut()?;
        live.last_used = now;
        let (sender, id) = (live.sender.clone(), live.id);
        Some(self.lease(Sender::H2(sender), id))
    }

    /// A new connection: HTTP/2 ones join the pool for other requests to share, with the
    /// route they were made on (an HTTP/1.1 one carries its own).
    fn adopt(&mut self, sender: Sender, via: Via, id: u64) -> Lease {
        if let Sender::H2(h2) = &sender {
            self.h2.push(LiveH2 {
                id,
                sender: h2.clone(),
                last_used: Instant::now(),
                via,
            });
        }
        self.lease(sender, id)
    }

    fn lease(&self, sender: Sender, h2_id: u64) -> Lease {
        Lease { sender, h2_id }
    }
}

/// Returns an HTTP/1.1 connection whose exchange finished cleanly (its response read to the
/// end, nothing after it) to this worker's pool, or closes it when the pool is full.
pub(crate) fn release_h1(endpoint: &Arc<EndpointState>, conn: h1::Conn) {
    put_idle(endpoint, conn);
}

fn put_idle(endpoint: &Arc<EndpointState>, conn: h1::Conn) {
    with_pool(endpoint, |pool, _| {
        if pool.idle_h1.len() < pool.max_idle && !pool.idle_timeout.is_zero() {
            pool.idle_h1.push(IdleH1 {
                conn,
                since: Instant::now(),
                _parked: Parked::new(endpoint),
            });
            pool.released.notify_one();
        }
        // Otherwise the connection drops here, which closes it.
    });
}

/// Stops handing out HTTP/2 connection `id` (it sent GOAWAY); its open streams finish.
pub(crate) fn retire_h2(endpoint: &Arc<EndpointState>, id: u64) {
    with_pool(endpoint, |pool, _| pool.h2.retain(|c| c.id != id));
}

/// The reaper: drops expired or closed idle connections and the pools of vanished endpoints,
/// and closes idle connections that a request of another worker, at the connection cap, asked
/// for. Runs until the worker's runtime is dropped.
async fn reap() {
    let mut tick = tokio::time::interval(REAP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = CLOSE_IDLE.notified() => {}
        }
        let now = Instant::now();
        POOLS.with(|pools| {
            pools.borrow_mut().by_endpoint.retain(|_, pool| {
                close_asked_idle(pool);
                let timeout = pool.idle_timeout;
                // `is_idle_clean` polls each socket without a syscall unless it turned readable:
                // a backend's close is noticed here, without a task per connection.
                pool.idle_h1.retain_mut(|c| {
                    now.duration_since(c.since) < timeout && c.conn.is_idle_clean()
                });
                // An HTTP/2 connection unused for the idle timeout is let go; requests still
                // streaming on it hold their own handles, so they are not cut.
                pool.h2
                    .retain(|c| now.duration_since(c.last_used) < timeout && !c.sender.is_closed());
                let empty = pool.idle_h1.is_empty() && pool.h2.is_empty();
                !(empty && pool.endpoint.strong_count() == 0)
            });
        });
    }
}

/// Closes this pool's oldest idle connections while a request at the cap is asking for them.
/// Dropping the connection closes it and frees its slot; the asking request sees the count
/// drop at its next recheck.
fn close_asked_idle(pool: &mut EndpointPool) {
    if pool.idle_h1.is_empty() {
        return;
    }
    let Some(endpoint) = pool.endpoint.upgrade() else {
        return;
    };
    // Bounded by the stack's length: each pass removes one entry.
    while !pool.idle_h1.is_empty() && endpoint.take_close_idle(pool.max_connections) {
        drop(pool.idle_h1.remove(0));
    }
}
