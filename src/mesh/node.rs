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

use foca::{
    AccumulatingRuntime, Foca, Member, NoCustomBroadcast, OwnedNotification, PostcardCodec,
};
use rand::rngs::SmallRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::codec::{self, NodeId, Wire};
use super::health::LocalHealth;
use super::seal::{Keys, Opener, Sealer};
use super::state::{EjectionReport, MemberState, Purge, PurgeTarget, Service, Table, PURGE_TTL_MS};
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
/// The shortest suspicion timeout: a suspect has this long to refute before it is declared dead.
pub const MIN_SUSPICION: Duration = Duration::from_secs(5);
/// foca's packets stay under this so a sealed datagram fits a 1500-byte MTU.
const MAX_SWIM_PACKET: usize = 1200;
/// Records per `States` datagram and versions per `Digest` datagram.
const STATES_PER_DATAGRAM: usize = 6;
const VERSIONS_PER_DATAGRAM: usize = 48;
/// Dead members listed per anti-entropy exchange (foca keeps them for `remove_down_after`).
const DOWN_PER_DATAGRAM: usize = 32;

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
        Self::new(crate::health::ejection::epoch_ms(SystemTime::now()))
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
    /// Tell everyone we leave, then stop; `done` fires once the `Leave` datagrams are out.
    Leave(std::sync::mpsc::Sender<()>),
}

/// Counters the simulator and the metrics read.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    rejected: u64,
}

type Swim = Foca<NodeId, PostcardCodec, SmallRng, NoCustomBroadcast>;

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
    /// Members that sent `Leave`, by address, with the generation that left.
    left: HashMap<SocketAddr, u64>,
    last_seen: HashMap<SocketAddr, u64>,
    /// When each dead member was last told it is dead (see `tell_if_dead`).
    told_dead: HashMap<SocketAddr, Instant>,
    /// foca's timers: (due, sequence) in a min-heap, the events by sequence.
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    timer_events: HashMap<u64, foca::Timer<NodeId>>,
    timer_seq: u64,
    health: LocalHealth,
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
        let foca = Foca::new(setup.id, swim_config(1, 1), rng.clone(), PostcardCodec);
        let mut table = Table::default();
        table.merge(MemberState {
            id: setup.id,
            version: 1,
            services: setup.services,
            ejections: Vec::new(),
            purges: Vec::new(),
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
            tokio::select! {
                received = inbox.recv() => match received {
                    Some((from, datagram)) => self.on_datagram(from, &datagram),
                    None => break,
                },
                () = sleep_until(next_timer) => self.fire_timers(),
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
                for state in states {
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
                let left = self.left.entry(id.addr).or_insert(id.generation);
                *left = (*left).max(id.generation);
                self.table.forget(id);
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
    /// turned every refuted suspicion into a death (seen in the simulation at 10 % loss).
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
            Command::Ejections(reports) => {
                let same = self
                    .table
                    .get(self.id.addr)
                    .is_some_and(|s| s.ejections == reports);
                if !same {
                    self.update_own(|own| own.ejections = reports);
                }
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
            Command::Leave(_) => {}
        }
    }

    /// Changes our own record, bumps its version and pushes it out at once.
    fn update_own(&mut self, change: impl FnOnce(&mut MemberState)) {
        let Some(mut own) = self.table.get(self.id.addr).cloned() else {
            return;
        };
        change(&mut own);
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

    fn anti_entropy(&mut self) {
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

    /// Sends what foca queued, schedules its timers, applies its notifications, and republishes
    /// the view when anything it shows changed.
    fn flush(&mut self) {
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
            self.view_dirty = true;
            match notification {
                OwnedNotification::MemberUp(id) => {
                    tracing::info!(generation = id.generation, "mesh: member {} up", id.addr);
                }
                OwnedNotification::MemberDown(id) => {
                    tracing::info!(generation = id.generation, "mesh: member {} down", id.addr);
                    self.table.forget(id);
                }
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(generation = id.generation, "mesh: declared down; rejoined");
                    self.id = id;
                    self.update_own(|_| {});
                }
                OwnedNotification::Defunct => tracing::warn!("mesh: this member was declared down"),
                _ => {}
            }
        }
        if self.view_dirty {
            self.view_dirty = false;
            self.publish_view();
        }
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
            last_seen_ms: self.clock.now_ms(),
        }];
        for member in self.foca.iter_membership_state() {
            let id = *member.id();
            let state = if self.left.get(&id.addr).is_some_and(|&g| g >= id.generation) {
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

/// foca's settings: memberlist's LAN profile (1 s probes, 500 ms probe timeout, 3 indirect
/// probes) for `members` live members, with two changes measured in the simulation to remove
/// false deaths at 10 % loss: the suspicion timeout is at least [`MIN_SUSPICION`] (3 × log10(n)
/// s above it), and updates are retransmitted twice as often
/// (foca's 4 × log10(n + 1)) so a refutation or a death reaches every member despite loss.
/// Lifeguard's local health `multiplier` (≥ 1) stretches the suspicion timeout: foca cannot
/// change the probe period or timeout of a running instance, which Lifeguard stretches instead.
pub fn swim_config(members: usize, multiplier: u32) -> foca::Config {
    let size = NonZeroU32::new(u32::try_from(members.max(2)).unwrap_or(u32::MAX))
        .unwrap_or(NonZeroU32::MIN);
    let mut config = foca::Config::new_lan(size);
    // 3 × log10(n) s (memberlist uses 4): 5.1 s at 50 members; the measured no-loss detection
    // tail (a victim nobody happens to probe for a few seconds) needs the shorter timeout to
    // stay under 15 s.
    let scaled = Duration::from_secs_f64(3.0 * f64::from(size.get()).log10());
    config.suspect_to_down_after = scaled.max(MIN_SUSPICION) * multiplier;
    // Five indirect probes instead of three: at 10 % loss an indirect path (4 datagrams) fails
    // a third of the time, so each extra path cuts false suspicions about threefold.
    config.num_indirect_probes =
        std::num::NonZeroUsize::new(5).unwrap_or(config.num_indirect_probes);
    let retransmit = config.max_transmissions.get().saturating_mul(2);
    config.max_transmissions =
        std::num::NonZeroU8::new(retransmit).unwrap_or(config.max_transmissions);

    config.max_packet_size =
        std::num::NonZeroUsize::new(MAX_SWIM_PACKET).unwrap_or(std::num::NonZeroUsize::MIN);
    // Periodic gossip at 200 ms (memberlist's default) costs ~3 datagrams per 200 ms while
    // updates are pending; 300 ms keeps dissemination well under a second with a third less.
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
