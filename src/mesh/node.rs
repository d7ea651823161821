//! One mesh member: foca (SWIM) plus the shared-state exchange, driven from one task that owns
//! everything — datagrams in, foca's timers, the anti-entropy tick, and commands from the rest of
//! the proxy — and publishes a [`View`] on a `watch` channel.
//!
//! The transport is injected ([`Transport`] out, an `mpsc` inbox in) so the same node runs over a
//! UDP socket in the proxy and over the simulator's lossy in-memory network in tests. Time is
//! tokio's (`Instant`), wall-clock stamps are derived from it (see [`Clock`]), so paused time in
//! tests drives everything, seal timestamps included.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use foca::{AccumulatingRuntime, Foca, Member, OwnedNotification, PostcardCodec};
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::codec::{self, NodeId, Wire};
use super::health::LocalHealth;
use super::seal::{Keys, Opener, Sealer};
use super::state::{
    keep_newest, trim_ejections, EjectionReport, MemberState, Purge, PurgeTarget, Service, Table,
    TunnelAd, MAX_PURGE_TARGET, MAX_REMEMBERED, PURGE_TTL_MS,
};
use super::suspicion::{self, Accusation, Gossip, Params, Suspicions};
use super::view::{MemberStatus, MemberView, View};

/// Anti-entropy: one push-pull exchange with a random live member this often. Rumors carry
/// changes at once; this only repairs what they missed (loss, late joiners, healed partitions).
pub const ANTI_ENTROPY_PERIOD: Duration = Duration::from_secs(2);
/// Each new record is pushed to this many random members by whoever first learns it (an
/// infection-style broadcast: with 50 members ~4 hops reach everyone).
pub const RUMOR_FANOUT: usize = 3;
/// Seeds not in the live membership are announced to this often (start-up against seeds that
/// are not up yet, a lost first announce, rejoin after a partition). Live seeds cost nothing.
pub const SEED_RETRY: Duration = Duration::from_secs(1);
/// The view is rebuilt at least this often even without a notification (suspect flips and
/// `last_seen` are not notified by foca).
const VIEW_REFRESH: Duration = Duration::from_secs(1);
/// foca's packets stay under this so a sealed datagram fits a 1500-byte MTU.
const MAX_SWIM_PACKET: usize = 1200;
/// Records per `States` datagram and versions per `Digest` datagram.
const STATES_PER_DATAGRAM: usize = 6;
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
    members_seen: usize,
    view: watch::Sender<Arc<View>>,
    view_dirty: bool,
    tally: Tally,
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
            id: setup.id,
            version: 1,
            services: setup.services,
            ejections: Vec::new(),
            purges: Vec::new(),
            tunnel: setup.tunnel,
            zone: setup.zone,
            rate_usage: Vec::new(),
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
            members_seen: 1,
            view,
            view_dirty: true,
            tally: Tally::default(),
        };
        (node, view_rx)
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
        for tick in [&mut anti_entropy, &mut seeds, &mut refresh] {
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _))| *at);
            let next_suspicion = self.suspicions.lock().next_deadline();
            tokio::select! {
                received = inbox.recv() => match received {
                    Some((from, datagram)) => self.on_datagram(from, &datagram),
                    None => break,
                },
                () = sleep_until(next_timer) => self.fire_timers(),
                () = sleep_until(next_suspicion) => self.declare_due(),
                _ = anti_entropy.tick() => self.anti_entropy(),
                _ = seeds.tick() => self.announce_to_seeds(),
                _ = refresh.tick() => self.view_dirty = true,
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
        match wire {
            Wire::Swim(bytes) => {
                self.tell_if_dead(from);
                if let Err(error) = self.foca.handle_data(&bytes, &mut self.runtime) {
                    tracing::debug!(%from, %error, "foca refused a message");
                }
            }
            Wire::Digest {
                versions,
                range,
                reply,
            } => {
                self.send_states(from, self.table.newer_in(&versions, range));
                if reply {
                    self.send_digest(from, false);
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
        let Some(dead) = self
            .foca
            .iter_membership_state()
            .find(|m| m.id().addr == from && m.state() == foca::State::Down)
            .map(|m| (*m.id(), m.incarnation()))
        else {
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
        self.send_wire(from, &Wire::Down(vec![dead]));
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
        let rumor = state.clone();
        if self.table.merge(state) {
            self.view_dirty = true;
            self.spread(rumor, from.into_iter().chain([owner]).collect());
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = self.clock.now_ms();
        match command {
            Command::Ejections(mut reports) => {
                // Trimmed before comparing, so a list over the bound does not read as a change
                // every round.
                trim_ejections(&mut reports);
                let same = self
                    .table
                    .get(self.id.addr)
                    .is_some_and(|s| s.ejections == reports);
                if !same {
                    self.update_own(|own| own.ejections = reports);
                }
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
            Command::RateUsage(usage) => {
                let same = self
                    .table
                    .get(self.id.addr)
                    .is_some_and(|s| s.rate_usage == usage);
                if !same {
                    self.update_own(|own| own.rate_usage = usage);
                }
            }
            Command::Tunnel(tunnel) => {
                let same = self
                    .table
                    .get(self.id.addr)
                    .is_some_and(|s| s.tunnel == tunnel);
                if !same {
                    self.update_own(|own| own.tunnel = tunnel);
                }
            }
            Command::Leave(_) => {}
        }
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

    /// Pushes `state` to [`RUMOR_FANOUT`] random live members other than `skip`.
    fn spread(&mut self, state: MemberState, skip: Vec<SocketAddr>) {
        let targets: Vec<SocketAddr> = self
            .foca
            .iter_members()
            .map(|m| m.id().addr)
            .filter(|a| !skip.contains(a))
            .collect();
        let chosen: Vec<SocketAddr> = targets
            .choose_multiple(&mut self.rng, RUMOR_FANOUT)
            .copied()
            .collect();
        for to in chosen {
            self.send_wire(to, &Wire::States(vec![state.clone()]));
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
        self.prune();
        self.settle_suspicions();
        let live: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        if let Some(&peer) = live.choose(&mut self.rng) {
            self.send_digest(peer, true);
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

    fn send_digest(&mut self, to: SocketAddr, reply: bool) {
        let down: Vec<(NodeId, u16)> = self
            .foca
            .iter_membership_state()
            .filter(|m| m.state() == foca::State::Down)
            .take(DOWN_PER_DATAGRAM)
            .map(|m| (*m.id(), m.incarnation()))
            .collect();
        if !down.is_empty() {
            self.send_wire(to, &Wire::Down(down));
        }
        for (versions, range) in self.table.digest_parts(VERSIONS_PER_DATAGRAM) {
            let wire = Wire::Digest {
                versions,
                range,
                reply,
            };
            self.send_wire(to, &wire);
        }
    }

    fn send_states(&mut self, to: SocketAddr, states: Vec<MemberState>) {
        for chunk in states.chunks(STATES_PER_DATAGRAM) {
            self.send_wire(to, &Wire::States(chunk.to_vec()));
        }
    }

    fn announce_to_seeds(&mut self) {
        let live: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for seed in self.seeds.clone() {
            if seed != self.id.addr && !live.contains(&seed) {
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
                    self.send_wire(seed, &Wire::States(vec![own]));
                }
            }
        }
    }

    fn leave(&mut self) {
        let live: Vec<SocketAddr> = self.foca.iter_members().map(|m| m.id().addr).collect();
        for to in live {
            self.send_wire(to, &Wire::Leave(self.id));
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

    fn send_wire(&mut self, to: SocketAddr, wire: &Wire) {
        let sealed = self.sealer.seal(&codec::encode(wire), self.clock.now_ms());

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
        let backlog = self.foca.custom_broadcast_backlog();
        self.suspicions.lock().set_backlog(backlog);
        if self.view_dirty {
            self.view_dirty = false;
            self.publish_view();
        }
    }

    fn drain_runtime(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            self.send_wire(to.addr, &Wire::Swim(data.to_vec()));
        }
        while let Some((after, event)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers
                .push(Reverse((Instant::now() + after, self.timer_seq)));
            self.timer_events.insert(self.timer_seq, event);
        }
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::MemberUp(id) => {
                    tracing::info!(generation = id.generation, "mesh: member {} up", id.addr);
                }
                OwnedNotification::MemberDown(id) => {
                    tracing::info!(generation = id.generation, "mesh: member {} down", id.addr);
                    self.table.forget(id, self.clock.now_ms());
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(generation = id.generation, "mesh: declared down; rejoined");
                    self.id = id;
                    self.suspicions.lock().set_own(id);
                    self.update_own(|_| {});
                }
                OwnedNotification::Defunct => tracing::warn!("mesh: this member was declared down"),
                OwnedNotification::ProbeFailed(_, id) => {
                    self.accuse(id);
                    // Not shown in the view (foca's suspect state is, when the view refreshes).
                    continue;
                }
                // Per-datagram notifications (`unstable-notifications` sends them too): nothing
                // the view shows.
                OwnedNotification::DataSent(_) | OwnedNotification::DataReceived(_) => continue,
                _ => {}
            }
            self.view_dirty = true;
        }
    }

    /// Our probe of `member` failed (directly and through the indirect probers): foca now holds
    /// it suspect; tell the others, whose deadlines shorten with each independent accuser.
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
        let accusation = Accusation {
            member,
            incarnation,
            accuser: self.id,
        };
        if let Err(error) = self.foca.add_broadcast(&accusation.encode()) {
            tracing::debug!(%error, "foca refused an accusation");
        }
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
            let still_suspect = self.foca.iter_membership_state().any(|m| {
                *m.id() == member
                    && m.state() == foca::State::Suspect
                    && m.incarnation() == incarnation
            });
            if still_suspect {
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
        for (member, _) in table.open() {
            match self
                .foca
                .iter_membership_state()
                .find(|m| *m.id() == member)
            {
                Some(m) => table.settle(member, m.incarnation(), m.state() == foca::State::Down),
                // Forgotten by foca (or replaced by a newer generation): nothing left to decide.
                None => table.settle(member, foca::Incarnation::MAX, true),
            }
        }
        table.forget_old(Instant::now());
    }

    fn publish_view(&mut self) {
        let mut members = vec![MemberView {
            id: self.id,
            state: MemberStatus::Alive,
            incarnation: 0,
            services: self
                .table
                .get(self.id.addr)
                .map(|s| s.services.clone())
                .unwrap_or_default(),
            tunnel: self.table.get(self.id.addr).and_then(|s| s.tunnel.clone()),
            last_seen_ms: self.clock.now_ms(),
        }];
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
            let record = self.table.get(id.addr).filter(|s| s.id == id);
            members.push(MemberView {
                id,
                state,
                incarnation: member.incarnation(),
                services: record.map(|s| s.services.clone()).unwrap_or_default(),
                tunnel: record.and_then(|s| s.tunnel.clone()),
                last_seen_ms: self.last_seen.get(&id.addr).copied().unwrap_or(0),
            });
        }
        members.sort_by_key(|m| m.id.addr);
        let live = members.iter().filter(|m| m.state.is_live()).count();
        if live != self.members_seen {
            self.members_seen = live;
            self.reconfigure();
        }
        let live_ids: std::collections::HashSet<NodeId> = members
            .iter()
            .filter(|m| m.state.is_live())
            .map(|m| m.id)
            .collect();
        let records = self
            .table
            .iter()
            .filter(|s| live_ids.contains(&s.id))
            .cloned()
            .collect();
        let view = View::new(self.id, members, records, self.tally.rejected);
        view.record_metrics();
        self.view.send_replace(Arc::new(view));
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
        let [_, a, b, c] = i.to_be_bytes();
        NodeId {
            addr: SocketAddr::from(([10, a, b, c], 7946)),
            generation: 1,
        }
    }

    /// `wire` as peer `sender` seals it now.
    fn sealed(sender: &mut Sealer, clock: Clock, wire: &Wire) -> Vec<u8> {
        sender.seal(&codec::encode(wire), clock.now_ms())
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
        for accuser in &peers[1..=params.k + 1] {
            for member in [victim, refuter] {
                accusations.push(Accusation {
                    member,
                    incarnation: 0,
                    accuser: *accuser,
                });
            }
        }
        let lonely_accusation = Accusation {
            member: lonely,
            incarnation: 0,
            accuser: peers[1],
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
