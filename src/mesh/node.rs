//! One mesh member: foca (SWIM) plus the shared-state exchange, driven from one task that owns
//! everything — datagrams in, foca's timers, the anti-entropy tick, and commands from the rest of
//! the proxy — and publishes a [`View`] on a `watch` channel.
//!
//! The transport is injected ([`Transport`] out, an `mpsc` inbox in) so the same node runs over a
//! UDP socket in the proxy and over the simulator's lossy in-memory network in tests. Time is
//! tokio's (`Instant`), wall-clock stamps are derived from it (see [`Clock`]), so paused time in
//! tests drives everything, seal timestamps included.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use foca::{AccumulatingRuntime, Foca, Member, OwnedNotification, PostcardCodec};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::check::Checks;
use super::codec::{self, NodeId, Wire};
use super::health::LocalHealth;
use super::seal::{Keys, Opener, Sealer};
use super::state::{
    keep_newest, trim_ejections, within_bytes, EjectionReport, MemberState, Purge, PurgeTarget,
    Service, Table, TunnelAd, BUCKETS, MAX_PURGE_TARGET, MAX_RECORD_BYTES_PER_EXCHANGE,
    MAX_REMEMBERED, PURGE_TTL_MS,
};
use super::suspicion::{self, Accusation, Gossip, Params, Suspicions};
use super::view::{MemberStatus, MemberView, View};

/// Anti-entropy: one push-pull exchange with a random live member this often. Rumors carry
/// changes at once; this only repairs what they missed (loss, late joiners, healed partitions).
pub const ANTI_ENTROPY_PERIOD: Duration = Duration::from_secs(2);
/// The fewest random members a new record is pushed to by whoever first learns it (an
/// infection-style broadcast); [`rumor_fanout`] raises it with the mesh's size.
pub const RUMOR_FANOUT: usize = 3;

/// The datagram loss [`rumor_fanout`] is budgeted for: a lossy network path (a congested
/// link, a busy host dropping UDP) rather than a healthy one, so a rumor still reaches
/// everyone when a tenth of the datagrams vanish.
pub const RUMOR_LOSS_BUDGET: f64 = 0.10;

/// How many members a node pushes a record it just learned to, for `members` live members.
///
/// Each member forwards a rumor once, so a member is missed with probability about
/// `e^(-f·(1-p))` for fanout `f` and loss `p` (Kermarrec, Massoulié and Ganesh, "Probabilistic
/// reliable dissemination in large-scale systems", IEEE TPDS 2003: an effective fanout of
/// `ln n + c` reaches all `n` with probability `e^(-e^(-c))`, and misses `e^(-c)` members on
/// average, whatever `n`). The fanout is `⌈(ln n + 2) / (1 - RUMOR_LOSS_BUDGET)⌉`: at
/// [`RUMOR_LOSS_BUDGET`] a rumor misses about 0.14 members (`e^-2`), so most announcements
/// reach every member in one spread, and the rare member missed waits for an anti-entropy
/// exchange. Without the loss budget (`ln n + 1`) the benchmark showed members of a 1,000-member
/// mesh missed at 10 % loss in most runs, and a tail of announcements waiting seconds for
/// anti-entropy (history in `docs/mesh.md`). The cost is `f` datagrams per member per changed
/// record, and records change rarely (services, ejections, purges), so steady-state gossip is
/// untouched. Re-measure with `benches/mesh/run.sh` (announcement p99 at 10 % loss).
pub fn rumor_fanout(members: usize) -> usize {
    // Truncation is intended: a whole number of targets, the ceiling taken above.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let scaled = (((members.max(1) as f64).ln() + 2.0) / (1.0 - RUMOR_LOSS_BUDGET)).ceil() as usize;
    scaled.max(RUMOR_FANOUT)
}
/// Seeds not in the live membership are announced to this often (start-up against seeds that
/// are not up yet, a lost first announce, rejoin after a partition). Live seeds cost nothing.
pub const SEED_RETRY: Duration = Duration::from_secs(1);
/// foca's membership is looked at this often for what it does not notify (suspect flips,
/// incarnations): one pass over it without allocating; the view is rebuilt only if that pass
/// saw a change (see [`Node::scan_membership`]).
const VIEW_REFRESH: Duration = Duration::from_secs(1);
/// A view with nothing changed but `last_seen` is republished this often.
const VIEW_MAX_AGE: Duration = Duration::from_secs(10);
/// A change only `/mesh/members` shows (a suspect flip, an incarnation) is published within
/// this long: at 10 % loss suspicions come and go every second in a large mesh, and a rebuild
/// per second per member was most of the simulation's CPU. Deaths, joins and records are
/// published at once (within [`VIEW_MIN_INTERVAL`]).
const VIEW_SUSPECT_DELAY: Duration = Duration::from_secs(3);
/// Views are published at most this often: a burst of changes (a large mesh joining, a record
/// per datagram) costs one rebuild per interval, not one per change. Rebuilding is O(members);
/// re-measure with `benches/mesh/run.sh` (its CPU column) when changing it.
const VIEW_MIN_INTERVAL: Duration = Duration::from_millis(200);
/// What the node remembers about departed members is pruned this often ([`Node::prune`]); the
/// retention is minutes, so a pass over foca's membership every few seconds would buy nothing.
const PRUNE_PERIOD: Duration = Duration::from_secs(30);
/// foca's packets stay under this so a sealed datagram fits a 1500-byte MTU.
const MAX_SWIM_PACKET: usize = 1200;
/// A `States` datagram is filled with records up to this many encoded bytes (a larger record
/// goes alone), so that most fit one 1500-byte MTU; versions per `Digest` datagram likewise
/// (a version is about 20 bytes; a bucket is never split, so a bucket larger than this goes
/// alone).
const STATES_BYTES_PER_DATAGRAM: usize = 1100;
const VERSIONS_PER_DATAGRAM: usize = 48;
/// Dead members listed per anti-entropy exchange (foca keeps them for `remove_down_after`).
const DOWN_PER_DATAGRAM: usize = 32;
/// What the node remembers per address (`last_seen`, `left`) about a member foca no longer
/// lists is kept this long: foca's `remove_down_after` (see [`swim_config`]), so both forget a
/// departed member together. Members foca still lists are always kept; [`MAX_REMEMBERED`] caps
/// the rest against churn.
const FORGET_AFTER_MS: u64 = 600_000;

/// Sends a sealed datagram. UDP in the proxy, an in-memory network in the simulator.
pub trait Transport: Send + 'static {
    /// Best effort, like UDP: a datagram that cannot be sent is dropped.
    fn send(&mut self, to: SocketAddr, datagram: Vec<u8>);
}

/// Wall-clock milliseconds derived from tokio's clock, so paused test time moves them too.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base_ms: u64,
    start: Instant,
}

impl Clock {
    /// A clock reading `base_ms` now.
    pub fn new(base_ms: u64) -> Self {
        Self {
            base_ms,
            start: Instant::now(),
        }
    }

    /// A clock on the real wall time.
    pub fn system() -> Self {
        Self::new(crate::wire::time::epoch_ms(SystemTime::now()))
    }

    /// Milliseconds since the epoch, now.
    pub fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.base_ms.saturating_add(elapsed)
    }
}

/// What a node needs to start.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Our identity (mesh address and generation).
    pub id: NodeId,
    /// Whom to announce to at start (and again while they are not live members).
    pub seeds: Vec<SocketAddr>,
    /// `secret_file`'s keys.
    pub keys: Keys,
    /// Our announced services.
    pub services: Vec<Service>,
    /// Our tunnel announcement (`mesh::tunnel::tunnel_ad`), if any.
    pub tunnel: Option<TunnelAd>,
    /// Our `[runtime] zone`, if any (the zone of the services we advertise).
    pub zone: Option<String>,
    /// Random per process: seal nonces and the rng seed.
    pub instance: u64,
    /// Wall-clock source.
    pub clock: Clock,
}

/// Requests from the rest of the proxy (admin, ejection bridge, shutdown).
#[derive(Debug)]
pub enum Command {
    /// Replace our ejection reports (the bridge sends the full recent list).
    Ejections(Vec<EjectionReport>),
    /// Spread a purge to every member.
    Purge(PurgeTarget),
    /// Replace our rate-limit demand (`mesh::rate_share` sends it when it changed enough).
    RateUsage(Vec<super::state::RateUsage>),
    /// Replace our tunnel announcement (the reloader sends it when the inbound listener moved,
    /// appeared or went away, so peers stop dialling a port nothing listens on).
    Tunnel(Option<TunnelAd>),
    /// Tell everyone we leave, then stop; `done` fires once the `Leave` datagrams are out.
    Leave(std::sync::mpsc::Sender<()>),
}

/// Counters the simulator and the metrics read.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    rejected: u64,
}

/// Sealed bytes a node sent and received, by purpose, and the exchanges it opened: the
/// simulator (`tests/mesh_sim`) reads them to tell anti-entropy cost from SWIM's and to measure a
/// late joiner's state transfer. Shared with whoever asked ([`Node::traffic`]); relaxed atomics.
#[derive(Debug, Default)]
pub struct Traffic {
    /// foca's datagrams sent.
    pub swim_out: AtomicU64,
    /// Anti-entropy sent: summaries, digests, the records they asked for, down lists.
    pub sync_out: AtomicU64,
    /// Rumors (a changed record pushed at once), records pushed to seeds, and `Leave`.
    pub rumor_out: AtomicU64,
    /// Everything but foca's datagrams received: records, summaries, digests.
    pub state_in: AtomicU64,
    /// Anti-entropy exchanges this node opened.
    pub exchanges: AtomicU64,
}

/// What a datagram is for, to count it in [`Traffic`].
#[derive(Debug, Clone, Copy)]
enum Purpose {
    Swim,
    Sync,
    Rumor,
}

type Swim = Foca<NodeId, PostcardCodec, SmallRng, Gossip>;

/// A running member's state; see the module doc.
pub struct Node<T: Transport> {
    id: NodeId,
    foca: Swim,
    runtime: AccumulatingRuntime<NodeId>,
    transport: T,
    sealer: Sealer,
    opener: Opener,
    clock: Clock,
    rng: SmallRng,
    seeds: Vec<SocketAddr>,
    table: Table,
    /// Members that sent `Leave`, by address, with the generation that left and when (ms).
    /// These three maps are pruned every anti-entropy period ([`Node::prune`]).
    left: HashMap<SocketAddr, (u64, u64)>,
    /// When we last opened a datagram from each address (ms).
    last_seen: HashMap<SocketAddr, u64>,
    /// When each dead member was last told it is dead (see `tell_if_dead`); only the last
    /// [`SEED_RETRY`] matters.
    told_dead: HashMap<SocketAddr, Instant>,
    /// foca's timers: (due, sequence) in a min-heap, the events by sequence.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_events: HashMap<u64, foca::Timer<NodeId>>,
    timer_seq: u64,
    health: LocalHealth,
    /// Lifeguard's dynamic suspicion ([`suspicion`]), shared with foca's broadcast handler.
    suspicions: suspicion::Shared,
    /// Suspicion checks in progress ([`check`]).
    checks: Checks,
    /// The member our current probe pinged (foca's `DataSent` of a `Ping`).
    probing: Option<NodeId>,
    /// Its incarnation if foca already held it suspect just before the probe's verdict: our
    /// failed probe is then a confirmation ([`Accusation::confirms`]).
    suspect_before_verdict: Option<(NodeId, foca::Incarnation)>,
    members_seen: usize,
    /// Members foca holds down, with their incarnation, by address: refreshed by
    /// [`Node::scan_membership`], so `tell_if_dead` and the down lists need no pass over
    /// foca's membership per datagram.
    down: HashMap<SocketAddr, (NodeId, u16)>,
    /// Whether foca lists no live member: the next to come up gets an exchange at once.
    alone: bool,
    /// [`Node::scan_membership`]'s sums of foca's membership: of who is down (as last seen),
    /// and of every state and incarnation (as last published).
    liveness_sum: u64,
    membership_sum: u64,
    view: watch::Sender<Arc<View>>,
    view_dirty: bool,
    /// When the view was last published, and when a pending change is due to be.
    published: Instant,
    publish_due: Option<Instant>,
    tally: Tally,
    traffic: Arc<Traffic>,
}

impl<T: Transport> std::fmt::Debug for Node<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Node<T> {
    /// A node that has sent nothing yet; [`Node::run`] starts it.
    pub fn new(setup: Setup, transport: T) -> (Self, watch::Receiver<Arc<View>>) {
        let rng = SmallRng::seed_from_u64(setup.instance);
        let suspicions =
            suspicion::Shared::new(Suspicions::new(setup.id, Params::for_cluster(1, 1)));
        let foca = Foca::with_custom_broadcast(
            setup.id,
            swim_config(1, 1),
            rng.clone(),
            PostcardCodec,
            Gossip(suspicions.clone()),
        );
        let mut table = Table::default();
        table.merge(MemberState {
            services: setup.services,
            tunnel: setup.tunnel,
            zone: setup.zone,
            ..MemberState::new(setup.id)
        });
        let (view, view_rx) = watch::channel(Arc::new(View::default()));
        let node = Self {
            id: setup.id,
            foca,
            runtime: AccumulatingRuntime::new(),
            transport,
            sealer: Sealer::new(setup.keys.clone(), setup.instance),
            opener: Opener::new(setup.keys),
            clock: setup.clock,
            rng,
            seeds: setup.seeds,
            table,
            left: HashMap::new(),
            last_seen: HashMap::new(),
            told_dead: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_events: HashMap::new(),
            timer_seq: 0,
            health: LocalHealth::default(),
            suspicions,
            checks: Checks::default(),
            probing: None,
            suspect_before_verdict: None,
            members_seen: 1,
            down: HashMap::new(),
            alone: true,
            liveness_sum: 0,
            membership_sum: 0,
            view,
            view_dirty: true,
            // The first view goes out at once.
            published: Instant::now()
                .checked_sub(VIEW_MIN_INTERVAL)
                .unwrap_or_else(Instant::now),
            publish_due: None,
            tally: Tally::default(),
            traffic: Arc::new(Traffic::default()),
        };
        (node, view_rx)
    }

    /// The node's traffic counters (see [`Traffic`]).
    pub fn traffic(&self) -> Arc<Traffic> {
        Arc::clone(&self.traffic)
    }

    /// Runs until `commands` closes, `inbox` closes, or a `Leave` command is done.
    pub async fn run(
        mut self,
        mut inbox: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        self.announce_to_seeds();
        self.flush();
        // Spread the members' exchanges over the period instead of all at one instant.
        let offset = Duration::from_millis(self.rng.random_range(0..2000));
        let mut anti_entropy =
            tokio::time::interval_at(Instant::now() + offset, ANTI_ENTROPY_PERIOD);
        let mut seeds = tokio::time::interval_at(Instant::now() + SEED_RETRY, SEED_RETRY);
        let mut refresh = tokio::time::interval(VIEW_REFRESH);
        let mut prune = tokio::time::interval_at(Instant::now() + PRUNE_PERIOD, PRUNE_PERIOD);
        for tick in [&mut anti_entropy, &mut seeds, &mut refresh, &mut prune] {
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let next_suspicion = self.suspicions.lock().next_deadline();
            let next_check = self.checks.next_at();
            tokio::select! {
                received = inbox.recv() => match received {
                    Some((from, datagram)) => self.on_datagram(from, &datagram),
                    None => break,
                },
                () = sleep_until(next_timer) => self.fire_timers(),
                () = sleep_until(self.publish_due) => self.publish_due = None,
                () = sleep_until(next_suspicion) => self.declare_due(),
                () = sleep_until(next_check) => self.run_checks(),
                _ = anti_entropy.tick() => self.anti_entropy(),
                _ = seeds.tick() => self.announce_to_seeds(),
                _ = refresh.tick() => self.scan_membership(),
                _ = prune.tick() => self.prune(),
                command = commands.recv() => match command {
                    None => break,
                    Some(Command::Leave(done)) => {
                        self.leave();
                        let _ = done.send(());
                        break;
                    }
                    Some(command) => self.on_command(command),
                },
            }
            self.flush();
        }
    }

    fn on_datagram(&mut self, from: SocketAddr, datagram: &[u8]) {
        metrics::counter!(super::MESSAGES_TOTAL, "direction" => "in").increment(1);
        metrics::counter!(super::BYTES_TOTAL, "direction" => "in").increment(datagram.len() as u64);
        let now = self.clock.now_ms();
        let payload = match self.opener.open(datagram, now) {
            Ok(payload) => payload,
            Err(reason) => {
                self.tally.rejected += 1;
                metrics::counter!(super::REJECTED_TOTAL).increment(1);
                tracing::debug!(%from, %reason, "mesh datagram rejected");
                return;
            }
        };
        let Some(wire) = codec::decode(&payload) else {
            self.tally.rejected += 1;
            metrics::counter!(super::REJECTED_TOTAL).increment(1);
            return;
        };
        self.last_seen.insert(from, now);
        keep_newest(&mut self.last_seen, MAX_REMEMBERED, |&at| at);
        if !matches!(wire, Wire::Swim(_) | Wire::Check(_) | Wire::CheckAck(_)) {
            self.traffic
                .state_in
                .fetch_add(datagram.len() as u64, Ordering::Relaxed);
        }
        match wire {
            Wire::Swim(bytes) => {
                self.tell_if_dead(from);
                if let Err(error) = self.foca.handle_data(&bytes, &mut self.runtime) {
                    tracing::debug!(%from, %error, "foca refused a message");
                }
            }
            Wire::Summary(theirs) => {
                let theirs: Vec<u64> = theirs.into_iter().map(u64::from_le_bytes).collect();
                let start = self.rng.random_range(0..BUCKETS);
                let Some((direct, expand)) = self.table.answer(&theirs, start) else {
                    self.tally.rejected += 1;
                    metrics::counter!(super::REJECTED_TOTAL).increment(1);
                    return;
                };
                self.send_states(from, direct);
                self.send_versions(from, &expand, true);
            }
            Wire::Digest {
                versions,
                buckets,
                reply,
            } => {
                let buckets: Vec<usize> = buckets
                    .into_iter()
                    .map(usize::from)
                    .filter(|&b| b < BUCKETS)
                    .collect();
                let newer = self.table.newer_in(&versions, &buckets);
                self.send_states(from, within_bytes(newer, MAX_RECORD_BYTES_PER_EXCHANGE));
                if reply {
                    self.send_versions(from, &buckets, false);
                }
            }
            Wire::States(states) => {
                for mut state in states {
                    if !state.within_bounds() {
                        // Refused whole: a correct member never sends one (it trims its own).
                        self.tally.rejected += 1;
                        metrics::counter!(super::REJECTED_TOTAL).increment(1);
                        tracing::debug!(%from, owner = %state.id.addr, "mesh record over the bounds");
                        continue;
                    }
                    state.clamp_stamps(now);
                    self.accept(state, Some(from));
                }
            }
            Wire::Check(nonce) => self.send_wire(from, &Wire::CheckAck(nonce), Purpose::Swim),
            Wire::CheckAck(nonce) => {
                self.checks.answered(nonce);
            }
            Wire::Down(members) => {
                let updates = members
                    .into_iter()
                    .map(|(id, incarnation)| Member::new(id, incarnation, foca::State::Down));
                if let Err(error) = self.foca.apply_many(updates, false, &mut self.runtime) {
                    tracing::debug!(%error, "foca refused a down list");
                }
            }
            Wire::Leave(id) => {
                let left = self.left.entry(id.addr).or_insert((id.generation, now));
                *left = (left.0.max(id.generation), now);
                keep_newest(&mut self.left, MAX_REMEMBERED, |&(_, at)| at);
                self.table.forget(id, now);
                let incarnation = self
                    .foca
                    .iter_membership_state()
                    .find(|m| *m.id() == id)
                    .map_or(0, Member::incarnation);
                let down = Member::new(id, incarnation, foca::State::Down);
                if let Err(error) =
                    self.foca
                        .apply_many(std::iter::once(down), false, &mut self.runtime)
                {
                    tracing::debug!(%error, "foca refused a leave");
                }
                self.view_dirty = true;
            }
        }
    }

    /// A member we hold as dead is talking to us (it was cut off, or paused): tell it, at most
    /// once per [`SEED_RETRY`], so it rejoins as its next generation. This replaces foca's
    /// `notify_down_members`, which also fires when a suspicion was refuted in time and so
    /// turned every refuted suspicion into a death (seen in the simulation at 10 % loss:
    /// `tests/mesh_sim/mesh_sim.rs` counts false deaths; docs/mesh.md).
    fn tell_if_dead(&mut self, from: SocketAddr) {
        let Some(&dead) = self.down.get(&from) else {
            return;
        };
        let now = Instant::now();
        if self
            .told_dead
            .get(&from)
            .is_some_and(|&at| now.duration_since(at) < SEED_RETRY)
        {
            return;
        }
        // Bounded without a cap: only members foca lists as dead get an entry, and `prune`
        // drops each after SEED_RETRY.
        self.told_dead.insert(from, now);
        self.send_wire(from, &Wire::Down(vec![dead]), Purpose::Sync);
    }

    /// Merges a record; a record that is new to us is passed on (rumor) and refreshes the view.
    fn accept(&mut self, state: MemberState, from: Option<SocketAddr>) {
        if state.id.addr == self.id.addr {
            // Someone holds a record of ours newer than what we have (a previous life at this
            // address): jump past it so ours wins again.
            let ours = self.table.get(self.id.addr).map_or(0, |s| s.version);
            let newer = (state.id.generation, state.version) > (self.id.generation, ours);
            if newer {
                self.update_own(|own| own.version = state.version);
            }
            return;
        }
        let owner = state.id.addr;
        let id = state.id;
        let first_of_member = self.table.get(owner).is_none_or(|held| held.id != id);
        let rumor = state.clone();
        if self.table.merge(state) {
            self.view_dirty = true;
            if first_of_member {
                self.introduce(id);
            }
            self.spread(rumor, from.into_iter().chain([owner]).collect());
        }
    }

    /// Tells foca about a member whose record we just learned (from a rumor or an exchange),
    /// as alive at incarnation 0. SWIM alone spreads a join through piggybacked updates, a few
    /// per datagram, with every member's backlog holding every other's join: when hundreds
    /// start at once, membership then takes minutes to converge (the simulation at 200
    /// members did not within 60 s). Records spread faster (rumors, and exchanges that repair
    /// whole buckets), so they feed foca's membership too. Safe by foca's own rules: an alive
    /// update at incarnation 0 changes nothing foca already holds (a suspect or higher
    /// incarnation wins, a dead member stays dead: foca never revives an identity it holds
    /// down), and records of members we hold dead are refused before this (`Table::merge`).
    /// Not rebroadcast: every member learns the record itself.
    fn introduce(&mut self, id: NodeId) {
        let member = Member::new(id, 0, foca::State::Alive);
        if let Err(error) = self
            .foca
            .apply_many(std::iter::once(member), false, &mut self.runtime)
        {
            tracing::debug!(%error, "foca refused a member learned from its record");
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = self.clock.now_ms();
        match command {
            Command::Ejections(mut reports) => {
                // Trimmed before comparing, so a list over the bound does not read as a change
                // every round.
                trim_ejections(&mut reports);
                self.update_own_field(|own| &mut own.ejections, reports);
            }
            Command::Purge(target) if target.len() > MAX_PURGE_TARGET => {
                tracing::warn!(
                    bytes = target.len(),
                    "mesh: purge target over {MAX_PURGE_TARGET} bytes; applied here only"
                );
            }
            Command::Purge(target) => self.update_own(|own| {
                own.purges
                    .retain(|p| now.saturating_sub(p.at_ms) < PURGE_TTL_MS);
                own.purges.push(Purge {
                    id: own.version + 1,
                    at_ms: now,
                    target,
                });
            }),
            Command::RateUsage(usage) => self.update_own_field(|own| &mut own.rate_usage, usage),
            Command::Tunnel(tunnel) => self.update_own_field(|own| &mut own.tunnel, tunnel),
            Command::Leave(_) => {}
        }
    }

    /// Sets one field of our own record to `value` through [`Node::update_own`], unless it holds
    /// that already: commands repeat the current value every round, and an unchanged record is
    /// not news to spread.
    fn update_own_field<V: PartialEq>(
        &mut self,
        field: impl Fn(&mut MemberState) -> &mut V,
        value: V,
    ) {
        // Compared on a copy (one record, a command a second at most): `field` serves both
        // the comparison and the change.
        let mut held = self.table.get(self.id.addr).cloned();
        if held.as_mut().is_some_and(|own| *field(own) == value) {
            return;
        }
        self.update_own(|own| *field(own) = value);
    }

    /// Changes our own record, bumps its version and pushes it out at once.
    fn update_own(&mut self, change: impl FnOnce(&mut MemberState)) {
        let Some(mut own) = self.table.get(self.id.addr).cloned() else {
            return;
        };
        change(&mut own);
        own.trim();
        own.id = self.id;
        own.version += 1;
        self.table.merge(own.clone());
        self.view_dirty = true;
        self.spread(own, Vec::new());
    }

    /// Pushes `state` to [`rumor_fanout`] random live members other than `skip`.
    fn spread(&mut self, state: MemberState, skip: Vec<SocketAddr>) {
        // `skip.len()` extra picks cover the skipped; one pass over foca's members, no copy of
        // them (this runs once per new record, so per member of a joining mesh).
        let live = self.foca.num_members();
        let fanout = rumor_fanout(live + 1);
        let wanted = (fanout + skip.len()).min(live);
        let mut picks = rand::seq::index::sample(&mut self.rng, live, wanted).into_vec();
        picks.sort_unstable();
        let mut picks = picks.into_iter().peekable();
        let mut chosen = Vec::with_capacity(fanout);
        for (i, member) in self.foca.iter_members().enumerate() {
            if picks.peek() == Some(&i) {
                picks.next();
                if !skip.contains(&member.id().addr) {
                    chosen.push(member.id().addr);
                }
            }
        }
        chosen.shuffle(&mut self.rng);
        chosen.truncate(fanout);
        let wire = Wire::States(vec![state]);
        for to in chosen {
            self.send_wire(to, &wire, Purpose::Rumor);
        }
    }

    /// A random live member, by one pass over foca's members (no copy of them).
    fn random_member(&mut self) -> Option<SocketAddr> {
        let live = self.foca.num_members();
        if live == 0 {
            return None;
        }
        let pick = self.rng.random_range(0..live);
        self.foca.iter_members().nth(pick).map(|m| m.id().addr)
    }

    /// Whether foca lists a live member at `addr`.
    fn is_live(&self, addr: SocketAddr) -> bool {
        self.foca.iter_members().any(|m| m.id().addr == addr)
    }

    /// One pass over foca's membership, for what foca does not notify (suspect flips,
    /// incarnations, members forgotten after `remove_down_after`): sums of one hash per member
    /// tell whether anything changed. A change in who is down lists the dead members again and
    /// rebuilds the view; a change in suspects or incarnations only is published within
    /// [`VIEW_SUSPECT_DELAY`]; and the view is republished every [`VIEW_MAX_AGE`] for
    /// `last_seen`.
    fn scan_membership(&mut self) {
        let (liveness, full) =
            self.foca
                .iter_membership_state()
                .fold((0u64, 0u64), |(liveness, full), m| {
                    let state = match m.state() {
                        foca::State::Alive => 0u8,
                        foca::State::Suspect => 1,
                        foca::State::Down => 2,
                    };
                    let down = u64::from(state == 2);
                    let detail = u64::from(m.incarnation()) << 8 | u64::from(state);
                    (
                        liveness.wrapping_add(super::state::member_hash(m.id(), down)),
                        full.wrapping_add(super::state::member_hash(m.id(), detail)),
                    )
                });
        if liveness != self.liveness_sum {
            self.liveness_sum = liveness;
            self.down = self
                .foca
                .iter_membership_state()
                .filter(|m| m.state() == foca::State::Down)
                .map(|m| (m.id().addr, (*m.id(), m.incarnation())))
                .collect();
            self.view_dirty = true;
        }
        let age = self.published.elapsed();
        if (full != self.membership_sum && age >= VIEW_SUSPECT_DELAY) || age >= VIEW_MAX_AGE {
            self.view_dirty = true;
        }
        if self.view_dirty {
            self.membership_sum = full;
        }
    }

    /// Forgets what is no longer needed about departed members (see [`FORGET_AFTER_MS`]).
    fn prune(&mut self) {
        let now = self.clock.now_ms();
        let listed: std::collections::HashSet<SocketAddr> = self
            .foca
            .iter_membership_state()
            .map(|m| m.id().addr)
            .collect();
        let keep = |addr: &SocketAddr, at: u64| {
            listed.contains(addr) || now.saturating_sub(at) < FORGET_AFTER_MS
        };
        self.last_seen.retain(|addr, &mut at| keep(addr, at));
        self.left.retain(|addr, &mut (_, at)| keep(addr, at));
        let instant = Instant::now();
        self.told_dead
            .retain(|_, &mut at| instant.duration_since(at) < SEED_RETRY);
        self.table.prune(now);
    }

    fn anti_entropy(&mut self) {
        self.settle_suspicions();
        if let Some(peer) = self.random_member() {
            self.traffic.exchanges.fetch_add(1, Ordering::Relaxed);
            self.open_exchange(peer);
        }
        // Our own reports and purges age out even when nothing else changes.
        let now = self.clock.now_ms();
        let expired = self.table.get(self.id.addr).is_some_and(|own| {
            own.purges
                .iter()
                .any(|p| now.saturating_sub(p.at_ms) >= PURGE_TTL_MS)
        });
        if expired {
            self.update_own(|own| {
                own.purges
                    .retain(|p| now.saturating_sub(p.at_ms) < PURGE_TTL_MS);
            });
        }
    }

    /// Opens an exchange with `to` (see `state`'s module doc): the members we hold dead, then
    /// our summary.
    fn open_exchange(&mut self, to: SocketAddr) {
        let down: Vec<(NodeId, u16)> = self
            .down
            .values()
            .take(DOWN_PER_DATAGRAM)
            .copied()
            .collect();
        if !down.is_empty() {
            self.send_wire(to, &Wire::Down(down), Purpose::Sync);
        }
        let summary = self
            .table
            .summary()
            .iter()
            .map(|f| f.to_le_bytes())
            .collect();
        self.send_wire(to, &Wire::Summary(summary), Purpose::Sync);
    }

    /// Our versions of `buckets`, in datagrams of whole buckets.
    fn send_versions(&mut self, to: SocketAddr, buckets: &[usize], reply: bool) {
        let mut part: Vec<u16> = Vec::new();
        let mut versions = Vec::new();
        for &b in buckets {
            let more = self.table.versions_in(&[b]);
            if !part.is_empty() && versions.len() + more.len() > VERSIONS_PER_DATAGRAM {
                let wire = Wire::Digest {
                    versions: std::mem::take(&mut versions),
                    buckets: std::mem::take(&mut part),
                    reply,
                };
                self.send_wire(to, &wire, Purpose::Sync);
            }
            versions.extend(more);
            // BUCKETS is far below u16::MAX.
            part.push(u16::try_from(b).unwrap_or(u16::MAX));
        }
        if !part.is_empty() {
            let wire = Wire::Digest {
                versions,
                buckets: part,
                reply,
            };
            self.send_wire(to, &wire, Purpose::Sync);
        }
    }

    /// `states` in datagrams of up to [`STATES_BYTES_PER_DATAGRAM`] encoded bytes each.
    fn send_states(&mut self, to: SocketAddr, states: Vec<MemberState>) {
        let mut batch = Vec::new();
        let mut bytes = 0;
        for state in states {
            let len = state.encoded_len();
            if !batch.is_empty() && bytes + len > STATES_BYTES_PER_DATAGRAM {
                let full = std::mem::take(&mut batch);
                self.send_wire(to, &Wire::States(full), Purpose::Sync);
                bytes = 0;
            }
            bytes += len;
            batch.push(state);
        }
        if !batch.is_empty() {
            self.send_wire(to, &Wire::States(batch), Purpose::Sync);
        }
    }

    fn announce_to_seeds(&mut self) {
        for seed in self.seeds.clone() {
            if seed != self.id.addr && !self.is_live(seed) {
                // foca accepts an announce addressed to any identity at its address.
                let dst = NodeId {
                    addr: seed,
                    generation: 0,
                };
                if let Err(error) = self.foca.announce(dst, &mut self.runtime) {
                    tracing::debug!(%error, %seed, "announce failed");
                }
                // Our record goes with it, so a seed that answers learns our services at once.
                if let Some(own) = self.table.get(self.id.addr).cloned() {
                    self.send_wire(seed, &Wire::States(vec![own]), Purpose::Rumor);
                }
            }
        }
    }

    fn leave(&mut self) {
        let live: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for to in live {
            self.send_wire(to, &Wire::Leave(self.id), Purpose::Rumor);
        }
        if let Err(error) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(%error, "foca leave failed");
        }
        self.flush();
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, seq))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(event) = self.timer_events.remove(&seq) else {
                continue;
            };
            if matches!(event, foca::Timer::ProbeRandomMember(_)) {
                // Lifeguard's local health: a probe timer that fires late means this process is
                // what is slow, so its suspicions of others deserve more time to be refuted.
                if self.health.observe_lateness(now.duration_since(at)) {
                    self.reconfigure();
                }
                // This timer gives the verdict on the current probe (foca marks a failed one
                // suspect in the same call): note whether someone else's suspicion got there
                // first. One lookup per probe period.
                self.suspect_before_verdict = self.probing.take().and_then(|target| {
                    self.foca
                        .iter_membership_state()
                        .find(|m| *m.id() == target && m.state() == foca::State::Suspect)
                        .map(|m| (target, m.incarnation()))
                });
            }
            if let Err(error) = self.foca.handle_timer(event, &mut self.runtime) {
                tracing::debug!(%error, "foca timer failed");
            }
        }
    }

    /// foca's settings for the current membership size and local health.
    fn reconfigure(&mut self) {
        self.suspicions.lock().set_params(Params::for_cluster(
            self.members_seen,
            self.health.multiplier(),
        ));
        let config = swim_config(self.members_seen, self.health.multiplier());
        if let Err(error) = self.foca.set_config(config) {
            tracing::debug!(%error, "foca refused a config");
        }
    }

    fn send_wire(&mut self, to: SocketAddr, wire: &Wire, purpose: Purpose) {
        let sealed = self.sealer.seal(&codec::encode(wire), self.clock.now_ms());
        let counter = match purpose {
            Purpose::Swim => &self.traffic.swim_out,
            Purpose::Sync => &self.traffic.sync_out,
            Purpose::Rumor => &self.traffic.rumor_out,
        };
        counter.fetch_add(sealed.len() as u64, Ordering::Relaxed);

        metrics::counter!(super::MESSAGES_TOTAL, "direction" => "out").increment(1);
        metrics::counter!(super::BYTES_TOTAL, "direction" => "out").increment(sealed.len() as u64);
        self.transport.send(to, sealed);
    }

    /// Sends what foca queued, schedules its timers, applies its notifications, hands foca the
    /// suspicions learnt from accusations, and republishes the view when anything it shows
    /// changed.
    fn flush(&mut self) {
        self.drain_runtime();
        if self.apply_fresh_suspicions() {
            self.drain_runtime();
        }
        let to_check = self.suspicions.lock().take_to_check();
        if !to_check.is_empty() {
            let now = Instant::now();
            for (member, incarnation) in to_check {
                self.checks.start(member, incarnation, now);
            }
            // The first pings go out now; `run_checks` sends them itself and hands any
            // confirmation to foca's broadcast backlog, so foca's runtime has nothing to drain.
            self.run_checks();
        }
        let backlog = self.foca.custom_broadcast_backlog();
        self.suspicions.lock().set_backlog(backlog);
        if self.view_dirty && self.publish_due.is_none() {
            let due = self.published + VIEW_MIN_INTERVAL;
            if Instant::now() >= due {
                self.view_dirty = false;
                self.publish_view();
            } else {
                // Coalesced: published when `run`'s timer fires, with whatever else changed.
                self.publish_due = Some(due);
            }
        }
    }

    fn drain_runtime(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            self.send_wire(to.addr, &Wire::Swim(data.to_vec()), Purpose::Swim);
        }
        while let Some((after, event)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers
                .push(Reverse((Instant::now() + after, self.timer_seq)));
            self.timer_events.insert(self.timer_seq, event);
        }
        let mut first_peer = None;
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(id) => {
                    tracing::info!(generation = id.generation, "mesh: member {} up", id.addr);
                    self.down.remove(&id.addr);
                    if self.alone {
                        // Our first live member (we just joined, or came back from being
                        // alone): take the whole state from it now rather than at our next
                        // anti-entropy tick.
                        self.alone = false;
                        first_peer = Some(id.addr);
                    }
                }
                OwnedNotification::MemberDown(id) => {
                    tracing::info!(generation = id.generation, "mesh: member {} down", id.addr);
                    self.table.forget(id, self.clock.now_ms());
                    // Listed at once for `tell_if_dead` and the down lists (a pass over foca's
                    // membership, once per death).
                    let incarnation = self
                        .foca
                        .iter_membership_state()
                        .find(|m| *m.id() == id)
                        .map_or(0, Member::incarnation);
                    self.down.insert(id.addr, (id, incarnation));
                    self.alone = self.foca.num_members() == 0;
                }
                OwnedNotification::Rename(_, id) => {
                    self.down.remove(&id.addr);
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(generation = id.generation, "mesh: declared down; rejoined");
                    self.id = id;
                    self.suspicions.lock().set_own(id);
                    self.update_own(|_| {});
                }
                OwnedNotification::Defunct => tracing::warn!("mesh: this member was declared down"),
                OwnedNotification::Idle => self.alone = true,
                OwnedNotification::ProbeFailed(_, id) => {
                    self.accuse(id);
                    // Not shown in the view (foca's suspect state is, when the view refreshes).
                    continue;
                }
                OwnedNotification::DataSent(header) => {
                    if let foca::Message::Ping(_) = header.message {
                        // Only a probe pings (foca's indirect probes use other messages).
                        self.probing = Some(header.dst);
                    }
                    continue;
                }
                // Per-datagram: nothing the view shows.
                OwnedNotification::DataReceived(_) => continue,
                _ => {}
            }
            self.view_dirty = true;
        }
        if let Some(peer) = first_peer {
            self.traffic.exchanges.fetch_add(1, Ordering::Relaxed);
            self.open_exchange(peer);
        }
    }

    /// Our probe of `member` failed (directly and through the indirect probers): foca now holds
    /// it suspect; tell the others, whose deadlines shorten with each independent accuser. It
    /// is a confirmation if the suspicion was already known here (foca held the member suspect
    /// before the verdict, or an accusation arrived): then every member relays it.
    fn accuse(&mut self, member: NodeId) {
        let Some(incarnation) = self
            .foca
            .iter_membership_state()
            .find(|m| *m.id() == member && m.state() == foca::State::Suspect)
            .map(Member::incarnation)
        else {
            // Refuted or declared down meanwhile: nothing to accuse.
            return;
        };
        let confirms = self.suspect_before_verdict.take() == Some((member, incarnation))
            || self.suspicions.lock().knows(member, incarnation);
        let accusation = Accusation {
            member,
            incarnation,
            accuser: self.id,
            confirms,
        };
        if let Err(error) = self.foca.add_broadcast(&accusation.encode()) {
            tracing::debug!(%error, "foca refused an accusation");
        }
    }

    /// Sends the suspicion checks' pings now due; a check that got no answer confirms the
    /// suspicion if foca still holds the member suspect at that incarnation (not refuted, not
    /// declared down meanwhile).
    fn run_checks(&mut self) {
        let due = self.checks.due(Instant::now());
        for (member, nonce) in due.pings {
            self.send_wire(member.addr, &Wire::Check(nonce), Purpose::Swim);
        }
        for (member, incarnation) in due.failed {
            if !self.holds_suspect(member, incarnation) {
                continue;
            }
            let accusation = Accusation {
                member,
                incarnation,
                accuser: self.id,
                confirms: true,
            };
            if let Err(error) = self.foca.add_broadcast(&accusation.encode()) {
                tracing::debug!(%error, "foca refused a confirmation");
            }
        }
    }

    /// Whether foca holds `member` suspect at `incarnation` (a pass over its membership: called
    /// per suspicion that comes due, a few a second at most).
    fn holds_suspect(&self, member: NodeId, incarnation: foca::Incarnation) -> bool {
        self.foca.iter_membership_state().any(|m| {
            *m.id() == member && m.state() == foca::State::Suspect && m.incarnation() == incarnation
        })
    }

    /// Hands foca, as `Suspect`, the suspicions first heard of through accusations (foca's own
    /// update may have been lost) and accusations of ourselves (foca then refutes at once).
    /// Returns whether there were any.
    fn apply_fresh_suspicions(&mut self) -> bool {
        let fresh = self.suspicions.lock().take_fresh();
        if fresh.is_empty() {
            return false;
        }
        let updates = fresh
            .into_iter()
            .map(|(id, incarnation)| Member::new(id, incarnation, foca::State::Suspect));
        if let Err(error) = self.foca.apply_many(updates, true, &mut self.runtime) {
            tracing::debug!(%error, "foca refused a suspicion");
        }
        true
    }

    /// Lifeguard's deadline passed for some suspicions: declare down each member foca still
    /// holds suspect at the suspected incarnation (a refuted one holds a higher incarnation).
    fn declare_due(&mut self) {
        let due = self.suspicions.lock().take_due(Instant::now());
        let mut down = Vec::new();
        for (member, incarnation, confirmations) in due {
            if self.holds_suspect(member, incarnation) {
                tracing::debug!(
                    confirmations,
                    "mesh: suspicion of {} timed out; declaring it down",
                    member.addr
                );
                down.push(Member::new(member, incarnation, foca::State::Down));
            }
        }
        if !down.is_empty() {
            if let Err(error) = self
                .foca
                .apply_many(down.into_iter(), true, &mut self.runtime)
            {
                tracing::debug!(%error, "foca refused a down update");
            }
        }
    }

    /// Settles suspicions foca has moved past (refuted: a higher incarnation; or down) and
    /// forgets old ones, so the table holds only what is still open or recent.
    fn settle_suspicions(&mut self) {
        let mut table = self.suspicions.lock();
        let mut open: HashSet<NodeId> = table.open().into_iter().map(|(m, _)| m).collect();
        // One pass over foca's membership for all of them.
        if !open.is_empty() {
            for m in self.foca.iter_membership_state() {
                if open.remove(m.id()) {
                    table.settle(*m.id(), m.incarnation(), m.state() == foca::State::Down);
                }
            }
        }
        // Forgotten by foca (or replaced by a newer generation): nothing left to decide.
        for member in open {
            table.settle(member, foca::Incarnation::MAX, true);
        }
        table.forget_old(Instant::now());
    }

    /// Builds and publishes the view: one pass over foca's membership, each member's record
    /// looked up once (its services and tunnel for the member list, the whole record for the
    /// live members' records). O(members), which is why it is coalesced (see
    /// [`VIEW_MIN_INTERVAL`]).
    fn publish_view(&mut self) {
        let own = self.table.get_shared(self.id.addr);
        let mut members = Vec::with_capacity(self.foca.iter_membership_state().len() + 1);
        let mut records = Vec::with_capacity(members.capacity());
        members.push(MemberView {
            id: self.id,
            state: MemberStatus::Alive,
            incarnation: 0,
            record: own.cloned(),
            last_seen_ms: self.clock.now_ms(),
        });
        records.extend(own.cloned());
        for member in self.foca.iter_membership_state() {
            let id = *member.id();
            let state = if self
                .left
                .get(&id.addr)
                .is_some_and(|&(g, _)| g >= id.generation)
            {
                MemberStatus::Left
            } else {
                match member.state() {
                    foca::State::Alive => MemberStatus::Alive,
                    foca::State::Suspect => MemberStatus::Suspect,
                    foca::State::Down => MemberStatus::Dead,
                }
            };
            let record = self.table.get_shared(id.addr).filter(|s| s.id == id);
            if state.is_live() {
                records.extend(record.cloned());
            }
            members.push(MemberView {
                id,
                state,
                incarnation: member.incarnation(),
                record: record.cloned(),
                last_seen_ms: self.last_seen.get(&id.addr).copied().unwrap_or(0),
            });
        }
        // Stable (ours first among equal addresses, as `View::status` expects). Records stay in
        // foca's order, as arbitrary as the table's was.
        members.sort_by_key(|m| m.id.addr);
        let live = members.iter().filter(|m| m.state.is_live()).count();
        if live != self.members_seen {
            self.members_seen = live;
            self.reconfigure();
        }
        let view = View::new(self.id, members, records, self.tally.rejected);
        view.record_metrics();
        self.view.send_replace(Arc::new(view));
        self.published = Instant::now();
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// foca's settings: memberlist's LAN profile (1 s probes, 500 ms probe timeout) for `members`
/// live members, with changes chosen in the simulation
/// (`cargo test --test mesh_sim -- --nocapture`; docs/mesh.md, "Why these SWIM settings") to
/// remove false deaths at 10 % loss:
/// five indirect probes instead of three, the suspicion timeout of Lifeguard's dynamic
/// suspicion at its longest ([`Params::max`]: the node declares a confirmed suspect down
/// sooner, see [`suspicion`]), and updates retransmitted twice as often (foca's
/// 4 × log10(n + 1)) so a refutation or a death reaches every member despite loss.
/// Lifeguard's local health `multiplier` (≥ 1) stretches the suspicion timeouts: foca cannot
/// change the probe period or timeout of a running instance, which Lifeguard stretches instead.
pub fn swim_config(members: usize, multiplier: u32) -> foca::Config {
    let size = NonZeroU32::new(u32::try_from(members.max(2)).unwrap_or(u32::MAX))
        .unwrap_or(NonZeroU32::MIN);
    let mut config = foca::Config::new_lan(size);
    // foca's own timer is the fallback for a suspicion nobody confirms; the node's deadline
    // (`Node::declare_due`) is shorter once others confirm.
    config.suspect_to_down_after = Params::for_cluster(members, multiplier).max;
    // Five indirect probes instead of three: at 10 % loss an indirect path (4 datagrams) fails
    // a third of the time, so each extra path cuts false suspicions about threefold.
    config.num_indirect_probes =
        std::num::NonZeroUsize::new(5).unwrap_or(config.num_indirect_probes);
    let retransmit = config.max_transmissions.get().saturating_mul(2);
    config.max_transmissions =
        std::num::NonZeroU8::new(retransmit).unwrap_or(config.max_transmissions);

    config.max_packet_size =
        std::num::NonZeroUsize::new(MAX_SWIM_PACKET).unwrap_or(std::num::NonZeroUsize::MIN);
    // Periodic gossip at 300 ms rather than memberlist's 200 ms: a third fewer datagrams while
    // updates are pending, and dissemination stays well under a second (`tests/mesh_sim/mesh_sim.rs`
    // measures both: announcement spread and gossip bytes per member).
    if let Some(gossip) = config.periodic_gossip.as_mut() {
        gossip.frequency = Duration::from_millis(300);
    }
    // Rejoin after a partition: members declared down are re-announced to every 10 s (not
    // memberlist's 65 s), and forgotten after 10 minutes rather than a day.
    if let Some(down) = config.periodic_announce_to_down_members.as_mut() {
        down.frequency = Duration::from_secs(10);
    }
    config.remove_down_after = Duration::from_secs(600);
    // foca sends its "you are down" courtesy message even when the suspicion was refuted before
    // the timer fired, which makes the member renew: every refuted suspicion became a death.
    // The node tells dead members itself (`Node::tell_if_dead`), only when they are.
    config.notify_down_members = false;
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::seal::Sealer;

    /// Sends nowhere: these tests look at the node's memory, not its traffic.
    struct Nowhere;

    impl Transport for Nowhere {
        fn send(&mut self, _: SocketAddr, _: Vec<u8>) {}
    }

    const BASE_MS: u64 = 1_700_000_000_000;
    const KEY: &str = "node unit test key, thirty-two bytes or more";

    fn node() -> Node<Nowhere> {
        let setup = Setup {
            id: NodeId {
                addr: SocketAddr::from(([127, 0, 0, 1], 7946)),
                generation: 1,
            },
            seeds: Vec::new(),
            keys: Keys::from_text(KEY).expect("key"),
            services: Vec::new(),
            tunnel: None,
            zone: None,
            instance: 1,
            clock: Clock::new(BASE_MS),
        };
        Node::new(setup, Nowhere).0
    }

    fn peer(i: u32) -> NodeId {
        NodeId::test_member(i)
    }

    /// `wire` as peer `sender` seals it now.
    fn sealed(sender: &mut Sealer, clock: Clock, wire: &Wire) -> Vec<u8> {
        sender.seal(&codec::encode(wire), clock.now_ms())
    }

    #[test]
    fn rumor_fanout_grows_with_the_log_of_the_mesh() {
        assert_eq!(rumor_fanout(0), RUMOR_FANOUT);
        assert_eq!(rumor_fanout(5), 5);
        assert_eq!(rumor_fanout(50), 7);
        assert_eq!(rumor_fanout(1000), 10);
        assert_eq!(rumor_fanout(10_000), 13);
        let mut last = 0;
        for n in 0..20_000 {
            let f = rumor_fanout(n);
            assert!(f >= last, "fanout fell from {last} to {f} at {n} members");
            last = f;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn departed_members_are_forgotten_and_the_maps_stay_capped() {
        let mut n = node();
        let mut sender = Sealer::new(Keys::from_text(KEY).expect("key"), 2);
        // Churn far beyond a fleet: every address says hello and leaves.
        let churn = u32::try_from(MAX_REMEMBERED).expect("cap") + 1000;
        for i in 1..=churn {
            // A millisecond apart, so "oldest" is well defined.
            tokio::time::advance(Duration::from_millis(1)).await;
            let leave = sealed(&mut sender, n.clock, &Wire::Leave(peer(i)));
            n.on_datagram(peer(i).addr, &leave);
        }
        assert_eq!(n.tally.rejected, 0);
        assert_eq!(n.last_seen.len(), MAX_REMEMBERED);
        assert_eq!(n.left.len(), MAX_REMEMBERED);
        assert_eq!(n.table.gone_len(), MAX_REMEMBERED);
        assert!(
            n.left.contains_key(&peer(churn).addr),
            "the newest departure is kept"
        );
        assert!(!n.left.contains_key(&peer(1).addr), "the oldest went first");
        // Within the retention nothing more goes; after it, everything foca no longer lists.
        n.prune();
        assert_eq!(n.last_seen.len(), MAX_REMEMBERED);
        // foca forgets the departed after the same time (its `remove_down_after` timers).
        n.flush();
        tokio::time::advance(Duration::from_millis(FORGET_AFTER_MS)).await;
        n.fire_timers();
        n.flush();
        n.prune();
        assert_eq!(n.foca.iter_membership_state().count(), 0);
        assert!(n.last_seen.is_empty(), "{} left", n.last_seen.len());
        assert!(n.left.is_empty(), "{} left", n.left.len());
        assert_eq!(n.table.gone_len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn told_dead_keeps_only_the_last_retry_period() {
        let mut n = node();
        for i in 1..=100 {
            n.told_dead.insert(peer(i).addr, Instant::now());
        }
        n.prune();
        assert_eq!(n.told_dead.len(), 100);
        tokio::time::advance(SEED_RETRY).await;
        n.prune();
        assert!(n.told_dead.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_report_stamped_in_the_future_expires_on_the_usual_schedule() {
        let mut n = node();
        let mut sender = Sealer::new(Keys::from_text(KEY).expect("key"), 2);
        let endpoint = SocketAddr::from(([127, 0, 0, 9], 80));
        let now = n.clock.now_ms();
        let record = MemberState {
            id: peer(1),
            version: 1,
            services: Vec::new(),
            // A year ahead: without the clamp it would count as fresh for a year.
            ejections: vec![EjectionReport {
                endpoint,
                at_ms: now + 365 * 24 * 3600 * 1000,
            }],
            purges: Vec::new(),
            tunnel: None,
            zone: None,
            rate_usage: Vec::new(),
        };
        let states = sealed(&mut sender, n.clock, &Wire::States(vec![record]));
        n.on_datagram(peer(1).addr, &states);
        let held = n.table.get(peer(1).addr).expect("record kept");
        assert_eq!(held.ejections[0].at_ms, now, "clamped to our clock");
        let window_ms = 30_000;
        let fresh = |n: &Node<Nowhere>| {
            let now = n.clock.now_ms();
            n.table.get(peer(1).addr).is_some_and(|s| {
                s.ejections
                    .iter()
                    .any(|e| now.saturating_sub(e.at_ms) < window_ms)
            })
        };
        assert!(fresh(&n));
        tokio::time::advance(Duration::from_millis(window_ms)).await;
        assert!(!fresh(&n), "expired one window after it arrived");
    }

    #[test]
    fn a_record_introduces_an_unknown_member_to_foca_but_never_revives_a_dead_one() {
        let mut n = node();
        let mut sender = Sealer::new(Keys::from_text(KEY).expect("key"), 2);
        let live = |n: &Node<Nowhere>, id: NodeId| n.foca.iter_members().any(|m| *m.id() == id);
        let states = sealed(
            &mut sender,
            n.clock,
            &Wire::States(vec![MemberState::new(peer(1))]),
        );
        n.on_datagram(peer(1).addr, &states);
        n.flush();
        assert!(live(&n, peer(1)), "learned from its record");

        // foca holds peer 2 down (never seen alive, so no notification forgot its record).
        let down = Member::new(peer(2), 3, foca::State::Down);
        n.foca
            .apply_many(std::iter::once(down), false, &mut n.runtime)
            .expect("apply");
        n.flush();
        let states = sealed(
            &mut sender,
            n.clock,
            &Wire::States(vec![MemberState::new(peer(2))]),
        );
        n.on_datagram(peer(3).addr, &states);
        n.flush();
        assert!(
            !live(&n, peer(2)),
            "a record does not revive a member foca holds down"
        );
        assert!(n
            .foca
            .iter_membership_state()
            .any(|m| *m.id() == peer(2) && m.state() == foca::State::Down));
        // Its next generation (a restart) is a new member.
        let renewed = NodeId {
            generation: 2,
            ..peer(2)
        };
        let states = sealed(
            &mut sender,
            n.clock,
            &Wire::States(vec![MemberState::new(renewed)]),
        );
        n.on_datagram(peer(3).addr, &states);
        n.flush();
        assert!(live(&n, renewed));
    }

    #[test]
    fn an_oversized_record_from_a_peer_is_refused() {
        let mut n = node();
        let mut sender = Sealer::new(Keys::from_text(KEY).expect("key"), 2);
        let reports = (0..200u16)
            .map(|i| EjectionReport {
                endpoint: SocketAddr::from(([127, 0, 0, 9], i + 1)),
                at_ms: 1,
            })
            .collect();
        let record = MemberState {
            id: peer(1),
            version: 1,
            services: Vec::new(),
            ejections: reports,
            purges: Vec::new(),
            tunnel: None,
            zone: None,
            rate_usage: Vec::new(),
        };
        let states = sealed(&mut sender, n.clock, &Wire::States(vec![record]));
        n.on_datagram(peer(1).addr, &states);
        assert!(n.table.get(peer(1).addr).is_none());
        assert_eq!(n.tally.rejected, 1);
    }

    #[test]
    fn our_own_record_never_exceeds_the_bounds() {
        let mut n = node();
        let reports: Vec<EjectionReport> = (0..500u16)
            .map(|i| EjectionReport {
                endpoint: SocketAddr::from(([127, 0, 0, 9], i + 1)),
                at_ms: u64::from(i),
            })
            .collect();
        n.on_command(Command::Ejections(reports));
        for i in 0..100 {
            n.on_command(Command::Purge(PurgeTarget::Prefix(format!(
                "/{i}/{}",
                "p".repeat(900)
            ))));
        }
        let own = n.table.get(n.id.addr).expect("own record");
        assert!(own.within_bounds(), "{} bytes", own.encoded_len());
        assert!(!own.ejections.is_empty() && !own.purges.is_empty());
        let version = own.version;
        n.on_command(Command::Purge(PurgeTarget::Key(
            "x".repeat(MAX_PURGE_TARGET + 1),
        )));
        assert_eq!(
            n.table.get(n.id.addr).map(|s| s.version),
            Some(version),
            "a purge over the bound is not spread"
        );
    }

    /// `n` knows `count` alive peers, and its suspicion range is for that cluster.
    fn with_peers(n: &mut Node<Nowhere>, count: u32) -> Vec<NodeId> {
        let peers: Vec<NodeId> = (1..=count).map(peer).collect();
        let alive = peers.iter().map(|&p| Member::alive(p));
        n.foca
            .apply_many(alive, false, &mut n.runtime)
            .expect("alive peers");
        n.flush();
        assert_eq!(n.members_seen, count as usize + 1, "the view counts them");
        peers
    }

    /// Accusations as they arrive: a peer's foca gossips them to `n`, sealed like any datagram.
    fn deliver_accusations(n: &mut Node<Nowhere>, accusations: &[Accusation]) {
        let from = peer(1);
        let table = Suspicions::new(from, n.suspicions.lock().params());
        let mut other = Foca::with_custom_broadcast(
            from,
            swim_config(n.members_seen, 1),
            SmallRng::seed_from_u64(9),
            PostcardCodec,
            Gossip(suspicion::Shared::new(table)),
        );
        let mut runtime = AccumulatingRuntime::new();
        other
            .apply_many(std::iter::once(Member::alive(n.id)), false, &mut runtime)
            .expect("knows n");
        for accusation in accusations {
            assert!(other.add_broadcast(&accusation.encode()).expect("added"));
        }
        other.gossip(&mut runtime).expect("gossip");
        let mut sender = Sealer::new(Keys::from_text(KEY).expect("key"), 3);
        let mut sent = 0;
        while let Some((to, data)) = runtime.to_send() {
            assert_eq!(to, n.id);
            let datagram = sealed(&mut sender, n.clock, &Wire::Swim(data.to_vec()));
            n.on_datagram(from.addr, &datagram);
            sent += 1;
        }
        assert_eq!(sent, 1, "one gossip datagram carries them all");
        n.flush();
    }

    fn state_of(n: &Node<Nowhere>, id: NodeId) -> Option<(foca::State, foca::Incarnation)> {
        n.foca
            .iter_membership_state()
            .find(|m| *m.id() == id)
            .map(|m| (m.state(), m.incarnation()))
    }

    #[tokio::test(start_paused = true)]
    async fn confirmed_suspicions_are_declared_down_at_the_shrunk_deadline_refuted_ones_are_not() {
        let mut n = node();
        let peers = with_peers(&mut n, 30);
        let params = n.suspicions.lock().params();
        assert_eq!(
            swim_config(n.members_seen, 1).suspect_to_down_after,
            params.max
        );
        assert!(params.k >= 1 && params.min < params.max, "{params:?}");
        let (victim, refuter, lonely) = (peers[29], peers[28], peers[27]);
        // k + 1 distinct accusers (the first starts the suspicion, k confirm) of the victim and
        // of the refuter; one accuser, sent twice, of the lonely one.
        let mut accusations = Vec::new();
        for (i, accuser) in peers[1..=params.k + 1].iter().enumerate() {
            for member in [victim, refuter] {
                accusations.push(Accusation {
                    member,
                    incarnation: 0,
                    accuser: *accuser,
                    confirms: i > 0,
                });
            }
        }
        let lonely_accusation = Accusation {
            member: lonely,
            incarnation: 0,
            accuser: peers[1],
            confirms: false,
        };
        accusations.push(lonely_accusation);
        deliver_accusations(&mut n, &accusations);
        deliver_accusations(&mut n, &[lonely_accusation]);
        // foca learnt the suspicions from the accusations alone.
        for member in [victim, refuter, lonely] {
            assert_eq!(state_of(&n, member), Some((foca::State::Suspect, 0)));
        }
        {
            let table = n.suspicions.lock();
            assert_eq!(table.confirmations(victim), Some(params.k));
            assert_eq!(
                table.confirmations(lonely),
                Some(0),
                "a duplicate counts once"
            );
            assert_eq!(table.deadline(victim), Some(Instant::now() + params.min));
            assert_eq!(table.deadline(lonely), Some(Instant::now() + params.max));
        }
        assert_eq!(
            n.foca.custom_broadcast_backlog(),
            2 * params.k,
            "the confirmations are relayed; first accusations (foca's Suspect spreads them) not"
        );
        // The refuter refutes (foca hears its higher incarnation) before the deadline.
        n.foca
            .apply_many(
                std::iter::once(Member::new(refuter, 1, foca::State::Alive)),
                true,
                &mut n.runtime,
            )
            .expect("refutation");
        n.flush();
        tokio::time::advance(params.min).await;
        n.declare_due();
        n.flush();
        assert_eq!(state_of(&n, victim), Some((foca::State::Down, 0)));
        assert_eq!(
            n.view.borrow().status(victim.addr),
            Some(MemberStatus::Dead)
        );
        assert_eq!(state_of(&n, refuter), Some((foca::State::Alive, 1)));
        assert_eq!(
            state_of(&n, lonely),
            Some((foca::State::Suspect, 0)),
            "unconfirmed: still has until the maximum"
        );
        n.settle_suspicions();
        assert_eq!(n.suspicions.lock().open(), vec![(lonely, 0)]);
    }

    #[tokio::test(start_paused = true)]
    async fn our_failed_probe_becomes_an_accusation_in_foca_broadcasts() {
        let mut n = node();
        with_peers(&mut n, 5);
        // Nothing answers (`Nowhere`): the first probe fails; foca says so at the next probe.
        let mut accused = None;
        for _ in 0..50 {
            tokio::time::advance(Duration::from_millis(100)).await;
            n.fire_timers();
            n.flush();
            let table = n.suspicions.lock();
            if let Some((member, _)) = table.open().first().copied() {
                accused = Some(member);
                break;
            }
        }
        let member = accused.expect("a failed probe within 5 s");
        assert_eq!(
            state_of(&n, member).map(|s| s.0),
            Some(foca::State::Suspect)
        );
        assert_eq!(n.suspicions.lock().confirmations(member), Some(0));
        assert_eq!(n.foca.custom_broadcast_backlog(), 1, "ready to piggyback");
    }

    #[tokio::test(start_paused = true)]
    async fn our_failed_probe_of_a_member_already_suspect_is_a_confirmation() {
        let mut n = node();
        let peers = with_peers(&mut n, 5);
        // Someone else's suspicion of every peer reached us (foca's Suspect updates) before
        // our probe: whichever we probe, its failure confirms a suspicion we knew of.
        let suspects = peers
            .iter()
            .map(|&p| Member::new(p, 0, foca::State::Suspect));
        n.foca
            .apply_many(suspects, true, &mut n.runtime)
            .expect("suspects");
        n.flush();
        let mut accused = None;
        for _ in 0..50 {
            tokio::time::advance(Duration::from_millis(100)).await;
            n.fire_timers();
            n.flush();
            if let Some((member, _)) = n.suspicions.lock().open().first().copied() {
                accused = Some(member);
                break;
            }
        }
        let member = accused.expect("a failed probe within 5 s");
        assert_eq!(
            n.suspicions.lock().confirmations(member),
            Some(1),
            "ours plus the unknown first accuser"
        );
        assert_eq!(n.foca.custom_broadcast_backlog(), 1, "ready to piggyback");
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_accusation_heard_is_checked_and_an_unanswered_check_confirms_it() {
        let mut n = node();
        let peers = with_peers(&mut n, 30);
        let (silent, answering) = (peers[29], peers[28]);
        let first = |member| Accusation {
            member,
            incarnation: 0,
            accuser: peers[1],
            confirms: false,
        };
        deliver_accusations(&mut n, &[first(silent), first(answering)]);
        assert_eq!(n.checks.len(), 2, "both suspects are being checked");
        // The answering suspect answers the ping it was sent.
        let nonce = n.checks.nonce_of(answering).expect("checking it");
        let mut sender = Sealer::new(Keys::from_text(KEY).expect("key"), 5);
        let ack = sealed(&mut sender, n.clock, &Wire::CheckAck(nonce));
        n.on_datagram(answering.addr, &ack);
        assert_eq!(n.checks.len(), 1, "the answered check ended");
        tokio::time::advance(crate::mesh::check::WINDOW).await;
        n.run_checks();
        n.flush();
        let table = n.suspicions.lock();
        assert_eq!(
            table.confirmations(silent),
            Some(1),
            "the unanswered check is our confirmation"
        );
        assert_eq!(table.confirmations(answering), Some(0), "no confirmation");
        drop(table);
        assert!(n.checks.is_empty());
        assert_eq!(
            n.foca.custom_broadcast_backlog(),
            1,
            "our confirmation, to relay"
        );
    }

    #[test]
    fn a_new_tunnel_announcement_bumps_our_record_and_an_equal_one_does_not() {
        let mut n = node();
        let version = |n: &Node<Nowhere>| n.table.get(n.id.addr).map(|s| s.version);
        let tunnel = |n: &Node<Nowhere>| n.table.get(n.id.addr).and_then(|s| s.tunnel.clone());
        let start = version(&n);
        let ad = TunnelAd {
            identity: "spiffe://local/a".to_owned(),
            port: 15006,
        };
        n.on_command(Command::Tunnel(Some(ad.clone())));
        assert_eq!(tunnel(&n), Some(ad.clone()));
        let announced = version(&n);
        assert!(announced > start, "{announced:?} after {start:?}");
        n.on_command(Command::Tunnel(Some(ad)));
        assert_eq!(
            version(&n),
            announced,
            "the same announcement is not spread again"
        );
        n.on_command(Command::Tunnel(None));
        assert_eq!(
            tunnel(&n),
            None,
            "a removed inbound listener announces nothing"
        );
        assert!(version(&n) > announced);
    }
}
