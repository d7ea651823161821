//! Lifeguard's dynamic suspicion on top of foca: a suspected member gets a long time to refute
//! while it is the only one accused by a single member, and less the more members independently
//! fail to reach it.
//!
//! Source: Dadgar, Phillips, Currey, "Lifeguard: Local Health Awareness for More Accurate Failure
//! Detection" (2018), section "Dynamic suspicion timeouts", as HashiCorp's memberlist implements
//! it in `suspicion.go`. A member that suspects a peer starts a timer at a maximum and, for each
//! *independent* confirmation (another member whose own probe of the peer failed), shortens it
//! toward a minimum on a logarithmic curve, reaching the minimum at `K` confirmations:
//!
//! ```text
//! timeout(C) = max(min, max − (max − min) · log(C + 1) / log(K + 1))
//! ```
//!
//! A live member that a lossy path made one prober give up on is rarely confirmed by a second
//! one, so it keeps the long timeout and has time to refute; a dead member fails every prober
//! that reaches it in turn (about one a second, whatever the cluster size, since every member
//! probes one peer a second), so its timeout collapses to the minimum within a few seconds.
//! Like memberlist, the first accuser a member hears of does not count as a confirmation (it is
//! what started the suspicion), every member that hears of a suspicion runs the timer from when
//! it heard, and confirmations beyond `K` are neither counted nor passed on.
//!
//! How it sits on foca, which keeps one fixed timeout per suspicion:
//! - foca's `suspect_to_down_after` is our maximum ([`Params::max`]), so foca's own timer is the
//!   fallback when nothing confirms;
//! - an accusation (member, incarnation, accuser) is sent when our own probe fails (foca's
//!   `ProbeFailed` notification, feature `unstable-notifications`) as a foca custom broadcast:
//!   piggybacked on SWIM's datagrams, retransmitted `max_transmissions` times like foca's own
//!   updates, and authenticated because the whole datagram is sealed ([`super::seal`]).
//!   [`Gossip`] is foca's `BroadcastHandler`: it passes an accusation on only when it was new
//!   (deduplicated by (member, incarnation, accuser)) and counted, and a peer's only when it
//!   *confirms* a suspicion we already knew of (see "What is relayed" below);
//! - the node ([`super::node`]) declares the member down itself (`apply_many` with `Down` at the
//!   suspected incarnation) when our deadline passes while foca still holds the member suspect at
//!   that incarnation; a refutation (foca holds a higher incarnation) settles the suspicion.
//!
//! Lifeguard's local health ([`super::health`]) multiplies both ends of the range, as it
//! stretches foca's timeout.
//!
//! What is relayed: the accuser sends its own accusation (piggybacked `max_transmissions`
//! times, so a few dozen members hear it first-hand), but only a *confirmation* is relayed by
//! the others. The accuser marks its accusation as one ([`Accusation::confirms`]) when it
//! already knew of the suspicion as its probe failed: foca held the member suspect just before
//! the verdict (foca's own `Suspect` update, which spreads every suspicion to everyone) or an
//! accusation had arrived. A member that hears a confirmation of a suspicion new to it counts
//! one unknown first accuser besides it; the first accuser's own accusation, if it arrives
//! later, takes that place rather than counting twice. At 10 % loss almost every suspicion is
//! a false one with a single accuser, so this removes most of the bytes accusations cost (an
//! epidemic relay of every first accusation made each member's gossip about a quarter larger
//! at 1,000 members; docs/mesh.md, "Scale"). A member whose probe fails before the first
//! suspicion reached it marks no confirmation: it counts as a first accuser, never as one too
//! many. The members a first accusation does reach check the suspect themselves
//! ([`super::check`]): for a dead member, they are where the confirmations come from.
//!
//! Everything is bounded: at most [`MAX_SUSPICIONS`] suspicions tracked (a member beyond that is
//! left to foca's own timer), at most `K + 1` accusers each, settled suspicions forgotten after
//! twice the maximum, accusations about ourselves queued at most [`MAX_FRESH`] deep, and at most
//! [`MAX_BACKLOG`] of our accusations waiting in foca's broadcast backlog.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::codec::NodeId;

/// Suspicions tracked at once. A flood of accusations about many members cannot grow memory
/// beyond this: a suspicion that does not fit is left to foca's own (maximum) timer. Far above
/// what a lossy network produces (about one false suspicion per second cluster-wide per
/// thousand members at 10 % loss, each settled within the maximum timeout); re-measure with the
/// simulation (docs/mesh.md, "Suspicion") if the cluster sizes grow.
pub const MAX_SUSPICIONS: usize = 256;
/// Suspicions newly learnt from others and waiting for the node to hand them to foca.
pub const MAX_FRESH: usize = 64;
/// Accusations we keep in foca's custom broadcast backlog at most; beyond it a new one is
/// counted but not passed on (foca drops each after `max_transmissions`, so this bounds the
/// backlog's memory and the bytes accusations add to each datagram).
pub const MAX_BACKLOG: usize = 256;
/// Confirmations that bring the timeout down to the minimum (Lifeguard's `K`; memberlist uses
/// `SuspicionMult − 2` = 2). With about one new prober reaching a dead member per second, `K`
/// is roughly the seconds of confirmation a death needs before the minimum applies; each
/// further confirmation needed makes a false death at 10 % loss far less likely (it needs one
/// more independent probe of a live member to fail all its paths). Chosen with the simulation
/// (docs/mesh.md, "Suspicion": dead-everywhere p99 and false deaths at 10 % loss).
pub const CONFIRMATIONS: usize = 3;

/// foca's incarnation number (a member's counter for refuting suspicion).
pub type Incarnation = foca::Incarnation;

/// One member's probe of another failed: `accuser` could not reach `member` at `incarnation`,
/// directly or through the indirect probers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Accusation {
    /// The suspected member.
    pub member: NodeId,
    /// Its incarnation when the probe failed: a refutation raises it, which ends this suspicion.
    pub incarnation: Incarnation,
    /// Whose probe failed: distinct accusers are the independent confirmations.
    pub accuser: NodeId,
    /// The accuser already knew of the suspicion when its probe failed (foca held the member
    /// suspect before the verdict, or an accusation had arrived): a confirmation, relayed by
    /// every member that finds it news. A first accusation (false) is only sent by its accuser.
    pub confirms: bool,
}

impl Accusation {
    /// The bytes handed to foca as a custom broadcast (postcard, like the rest of the wire).
    pub fn encode(&self) -> Vec<u8> {
        // Serialising our own type into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Parses a custom broadcast; `None` for bytes that are not one.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }
}

impl foca::Invalidates for Accusation {
    /// An accusation replaces, in foca's backlog, the same one (re-sent, whatever its flag) and
    /// any about an older incarnation of the same member (refuted since: no longer worth
    /// sending).
    fn invalidates(&self, other: &Self) -> bool {
        self.member == other.member
            && (self.incarnation > other.incarnation
                || (self.incarnation == other.incarnation && self.accuser == other.accuser))
    }
}

/// Where an accusation comes from: it decides whether it is passed on (see the module doc,
/// "What is relayed").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Our own failed probe: always sent.
    Ours,
    /// Heard from a peer: relayed only when it is a confirmation ([`Accusation::confirms`]).
    Heard,
}

/// The timeout range for a cluster size. See the module doc for the curve.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// The timeout once [`Params::k`] confirmations arrived.
    pub min: Duration,
    /// The timeout with no confirmation; foca's `suspect_to_down_after`.
    pub max: Duration,
    /// Confirmations that bring the timeout to `min`; 0 when no other member could confirm.
    pub k: usize,
}

impl Params {
    /// The range for `members` live members (ourselves included), stretched by Lifeguard's
    /// local health `multiplier` (≥ 1).
    ///
    /// - `min` = max(2 s, log10(n) s): the time a suspected member that *was* confirmed still
    ///   gets to refute. A refutation spreads like any update, in about log(n) gossip rounds, so
    ///   it grows with log n like memberlist's (which is 4 × log10(n) s: ours is shorter because
    ///   issue 29 asks for deaths seen everywhere within 10 s at 1,000 members, and a confirmed
    ///   suspicion of a live member is rare: it needs independent probes to fail all their
    ///   paths).
    /// - `max` = max(10 s, 6 × log10(n) s): six times the minimum above 10 members, as
    ///   memberlist's `SuspicionMaxTimeoutMult`; the time an unconfirmed suspicion (the usual
    ///   false one at 10 % loss) gets to be refuted. It is also foca's own timeout, so it is what
    ///   a member with nobody to confirm (a two-member mesh) waits.
    /// - `k` = [`CONFIRMATIONS`], or fewer when the cluster has fewer other members to confirm
    ///   (n − 2: neither the suspect nor the first accuser).
    ///
    /// Re-measure with the simulation (docs/mesh.md, "Suspicion") when changing any of them.
    pub fn for_cluster(members: usize, multiplier: u32) -> Self {
        let log = (members.max(1) as f64).log10();
        let min = Duration::from_secs_f64(log.max(2.0));
        let max = Duration::from_secs_f64((6.0 * log).max(10.0));
        let multiplier = multiplier.max(1);
        Self {
            min: min * multiplier,
            max: max * multiplier,
            k: CONFIRMATIONS.min(members.saturating_sub(2)),
        }
    }

    /// The timeout after `confirmations` independent confirmations (Lifeguard's formula).
    pub fn timeout(&self, confirmations: usize) -> Duration {
        if self.k == 0 || self.max <= self.min {
            return self.max.max(self.min);
        }
        let done = confirmations.min(self.k) as f64;
        let fraction = (done + 1.0).ln() / (self.k as f64 + 1.0).ln();
        let span = (self.max - self.min).as_secs_f64();
        let raw = self.max.as_secs_f64() - fraction * span;
        Duration::from_secs_f64(raw.max(0.0)).max(self.min)
    }
}

/// What we know about one suspected member.
#[derive(Debug, Clone)]
struct Suspicion {
    incarnation: Incarnation,
    /// When we first heard of this suspicion (our own failed probe or someone's accusation).
    since: Instant,
    /// Distinct accusers, the first one first; with `anonymous`, at most `k + 1` together.
    accusers: Vec<NodeId>,
    /// A confirmation arrived before any first accuser: one first accuser we do not know is
    /// counted (the first accusation to arrive later takes its place).
    anonymous: bool,
    /// Declared down or refuted: kept (until forgotten) only so late copies of its accusations
    /// are recognised and not spread again.
    settled: bool,
}

impl Suspicion {
    /// A suspicion heard of at `now` through `accuser`'s accusation; a confirmation
    /// (`confirms`) counts an unknown first accuser besides it.
    fn new(incarnation: Incarnation, accuser: NodeId, confirms: bool, now: Instant) -> Self {
        Self {
            incarnation,
            since: now,
            accusers: vec![accuser],
            anonymous: confirms,
            settled: false,
        }
    }

    /// Accusers counted, the unknown first one included.
    fn count(&self) -> usize {
        self.accusers.len() + usize::from(self.anonymous)
    }

    /// Independent confirmations: accusers after the first.
    fn confirmations(&self) -> usize {
        self.count().saturating_sub(1)
    }
}

/// The suspicions a member knows of; shared between the node and foca's [`Gossip`] handler
/// (see [`Shared`]).
#[derive(Debug)]
pub struct Suspicions {
    own: NodeId,
    params: Params,
    entries: HashMap<NodeId, Suspicion>,
    /// New suspicions (and accusations of ourselves) the node hands to foca as `Suspect`, so
    /// foca holds what our deadline checks even if its own update was lost.
    fresh: Vec<(NodeId, Incarnation)>,
    /// Suspicions a peer's first accusation told us of: the node checks each suspect itself
    /// ([`super::check`]).
    to_check: Vec<(NodeId, Incarnation)>,
    /// Our estimate of foca's custom broadcast backlog: what the node last read plus what we
    /// accepted since.
    backlog: usize,
}

impl Suspicions {
    /// An empty table for the member `own`.
    pub fn new(own: NodeId, params: Params) -> Self {
        Self {
            own,
            params,
            entries: HashMap::new(),
            fresh: Vec::new(),
            to_check: Vec::new(),
            backlog: 0,
        }
    }

    /// Our identity changed (foca renewed it after we were declared down).
    pub fn set_own(&mut self, own: NodeId) {
        self.own = own;
    }

    /// The range changed (cluster size or local health).
    pub fn set_params(&mut self, params: Params) {
        self.params = params;
    }

    /// The current range.
    pub fn params(&self) -> Params {
        self.params
    }

    /// foca's custom broadcast backlog, as the node just read it.
    pub fn set_backlog(&mut self, backlog: usize) {
        self.backlog = backlog;
    }

    /// Records an accusation from `origin` at `now`; returns whether to pass it on: news (a new
    /// suspicion, or a new accuser still counted) that is ours or a confirmation. Duplicates,
    /// stale incarnations, accusers beyond `k + 1`, suspicions beyond [`MAX_SUSPICIONS`] and a
    /// peer's first accusation (recorded, not relayed) return `false`.
    pub fn accuse(&mut self, accusation: Accusation, origin: Origin, now: Instant) -> bool {
        let Accusation {
            member,
            incarnation,
            accuser,
            confirms,
        } = accusation;
        if member == accuser {
            return false;
        }
        if member.addr == self.own.addr {
            // About us: foca refutes once it holds us suspect; accusations of an older
            // generation of ours are history.
            if member == self.own && self.fresh.len() < MAX_FRESH {
                self.fresh.push((member, incarnation));
            }
            return false;
        }
        let full = self.entries.len() >= MAX_SUSPICIONS;
        // (news, a suspicion new to us)
        let (news, started) = match self.entries.get_mut(&member) {
            Some(known) if known.incarnation > incarnation => (false, false),
            Some(known) if known.incarnation == incarnation => {
                if known.settled || known.accusers.contains(&accuser) {
                    (false, false)
                } else if known.anonymous && !confirms {
                    // The first accuser we counted without knowing it.
                    known.anonymous = false;
                    known.accusers.insert(0, accuser);
                    (false, false)
                } else if known.count() > self.params.k {
                    (false, false)
                } else {
                    known.accusers.push(accuser);
                    (true, false)
                }
            }
            Some(known) => {
                // A newer incarnation was suspected again: a new suspicion.
                *known = Suspicion::new(incarnation, accuser, confirms, now);
                (true, true)
            }
            None if full => (false, false),
            None => {
                self.entries
                    .insert(member, Suspicion::new(incarnation, accuser, confirms, now));
                (true, true)
            }
        };
        if started && self.fresh.len() < MAX_FRESH {
            self.fresh.push((member, incarnation));
        }
        if started && origin == Origin::Heard && !confirms && self.to_check.len() < MAX_FRESH {
            self.to_check.push((member, incarnation));
        }
        let relay = news && (origin == Origin::Ours || confirms);
        if relay && self.backlog < MAX_BACKLOG {
            self.backlog += 1;
            true
        } else {
            false
        }
    }

    /// Suspicions to hand to foca as `Suspect` (new ones, and accusations of ourselves).
    pub fn take_fresh(&mut self) -> Vec<(NodeId, Incarnation)> {
        std::mem::take(&mut self.fresh)
    }

    /// Suspects to check ourselves: those a peer's first accusation told us of.
    pub fn take_to_check(&mut self) -> Vec<(NodeId, Incarnation)> {
        std::mem::take(&mut self.to_check)
    }

    /// Independent confirmations of `member`'s current suspicion (accusers after the first).
    pub fn confirmations(&self, member: NodeId) -> Option<usize> {
        self.entries.get(&member).map(Suspicion::confirmations)
    }

    /// Whether someone other than us accused `member` at `incarnation` in a suspicion still
    /// open: our own failed probe of it would be a confirmation.
    pub fn knows(&self, member: NodeId, incarnation: Incarnation) -> bool {
        self.entries.get(&member).is_some_and(|s| {
            !s.settled
                && s.incarnation == incarnation
                && (s.anonymous || s.accusers.iter().any(|a| *a != self.own))
        })
    }

    /// When `member`'s unsettled suspicion times out, as things stand.
    pub fn deadline(&self, member: NodeId) -> Option<Instant> {
        self.entries
            .get(&member)
            .filter(|s| !s.settled)
            .map(|s| self.deadline_of(s))
    }

    fn deadline_of(&self, s: &Suspicion) -> Instant {
        s.since + self.params.timeout(s.confirmations())
    }

    /// The earliest deadline of any unsettled suspicion: when the node should look again.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|s| !s.settled)
            .map(|s| self.deadline_of(s))
            .min()
    }

    /// Unsettled suspicions whose deadline passed by `now`, settled by this call: the node
    /// declares each down if foca still holds it suspect at that incarnation.
    pub fn take_due(&mut self, now: Instant) -> Vec<(NodeId, Incarnation, usize)> {
        let params = self.params;
        let mut due = Vec::new();
        for (member, s) in &mut self.entries {
            let confirmations = s.confirmations();
            if !s.settled && s.since + params.timeout(confirmations) <= now {
                s.settled = true;
                due.push((*member, s.incarnation, confirmations));
            }
        }
        due
    }

    /// foca holds `member` at `incarnation` alive (or suspect again at a higher one), or down:
    /// a suspicion at an incarnation below (or, `down`, at or below) it is over.
    pub fn settle(&mut self, member: NodeId, incarnation: Incarnation, down: bool) {
        if let Some(s) = self.entries.get_mut(&member) {
            if s.incarnation < incarnation || (down && s.incarnation <= incarnation) {
                s.settled = true;
            }
        }
    }

    /// Unsettled suspicions, for the node to compare with foca's membership.
    pub fn open(&self) -> Vec<(NodeId, Incarnation)> {
        self.entries
            .iter()
            .filter(|(_, s)| !s.settled)
            .map(|(member, s)| (*member, s.incarnation))
            .collect()
    }

    /// Forgets suspicions started more than twice the maximum ago: by then foca's own timer
    /// has settled any still open, and copies of their accusations have run out of
    /// transmissions (so a late one cannot start the suspicion again).
    pub fn forget_old(&mut self, now: Instant) {
        let keep = self.params.max * 2;
        self.entries
            .retain(|_, s| now.saturating_duration_since(s.since) < keep);
    }

    /// Suspicions held (settled ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no suspicion is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The table as the node and foca's handler share it: the node owns foca, foca owns the handler,
/// and foca has no way to lend it back, so both hold this. One task uses both, so the lock is
/// never contended, and it is never held across an `.await`.
#[derive(Debug, Clone)]
pub struct Shared(Arc<Mutex<Suspicions>>);

impl Shared {
    /// Shares `table`.
    pub fn new(table: Suspicions) -> Self {
        Self(Arc::new(Mutex::new(table)))
    }

    /// The table (a panic elsewhere while it was held cannot leave it half-updated in a way
    /// that matters: every method leaves it consistent, so a poisoned lock is taken anyway).
    pub fn lock(&self) -> MutexGuard<'_, Suspicions> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A custom broadcast that is not an [`Accusation`].
#[derive(Debug, thiserror::Error)]
#[error("malformed accusation")]
pub struct Malformed;

/// foca's `BroadcastHandler` for accusations: foca calls it for each one it receives (and for
/// ours, via `add_broadcast`); it records the accusation and tells foca to pass it on only if it
/// was news and ours or a confirmation ([`Suspicions::accuse`]).
#[derive(Debug, Clone)]
pub struct Gossip(pub Shared);

impl foca::BroadcastHandler<NodeId> for Gossip {
    type Key = Accusation;
    type Error = Malformed;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&NodeId>,
    ) -> Result<Option<Accusation>, Malformed> {
        let accusation = Accusation::decode(data).ok_or(Malformed)?;
        // foca passes no sender for our own (`add_broadcast`).
        let origin = match sender {
            None => Origin::Ours,
            Some(_) => Origin::Heard,
        };
        let relay = self.0.lock().accuse(accusation, origin, Instant::now());
        Ok(relay.then_some(accusation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::{BroadcastHandler, Invalidates};

    fn id(i: u8) -> NodeId {
        NodeId::test_member(u32::from(i))
    }

    /// A first accusation (the accuser knew of no suspicion).
    fn accusation(member: u8, incarnation: Incarnation, accuser: u8) -> Accusation {
        Accusation {
            member: id(member),
            incarnation,
            accuser: id(accuser),
            confirms: false,
        }
    }

    /// A confirmation (the accuser already knew of the suspicion).
    fn confirmation(member: u8, incarnation: Incarnation, accuser: u8) -> Accusation {
        Accusation {
            confirms: true,
            ..accusation(member, incarnation, accuser)
        }
    }

    fn table(members: usize) -> Suspicions {
        Suspicions::new(id(1), Params::for_cluster(members, 1))
    }

    #[test]
    fn the_timeout_shrinks_with_each_confirmation_from_max_to_min() {
        for members in [3, 10, 50, 150, 1000, 5000] {
            let p = Params::for_cluster(members, 1);
            assert!(p.min < p.max, "{members}: {p:?}");
            assert_eq!(p.timeout(0), p.max, "{members}");
            let mut last = p.max;
            for c in 1..=p.k {
                let t = p.timeout(c);
                assert!(t < last, "{members}: {c} confirmations: {t:?} !< {last:?}");
                last = t;
            }
            assert_eq!(p.timeout(p.k), p.min, "{members}");
            assert_eq!(
                p.timeout(p.k + 10),
                p.min,
                "{members}: beyond k stays at min"
            );
        }
        // Two members: nobody can confirm, so the maximum (foca's own timeout) applies.
        let two = Params::for_cluster(2, 1);
        assert_eq!(two.k, 0);
        assert_eq!(two.timeout(5), two.max);
        // Local health stretches both ends.
        let slow = Params::for_cluster(50, 3);
        let fine = Params::for_cluster(50, 1);
        assert_eq!(slow.min, fine.min * 3);
        assert_eq!(slow.max, fine.max * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_shrinks_as_distinct_accusers_confirm_and_duplicates_count_once() {
        let mut t = table(50);
        let p = t.params();
        let start = Instant::now();
        assert!(
            !t.accuse(accusation(9, 4, 2), Origin::Heard, start),
            "a peer's first accusation is recorded, not relayed (foca's Suspect spreads it)"
        );
        assert_eq!(
            t.take_fresh(),
            vec![(id(9), 4)],
            "handed to foca as suspect"
        );
        assert_eq!(t.deadline(id(9)), Some(start + p.max));
        let mut last = p.max;
        for accuser in 3..3 + p.k as u8 {
            tokio::time::advance(Duration::from_millis(100)).await;
            assert!(
                t.accuse(confirmation(9, 4, accuser), Origin::Heard, Instant::now()),
                "a confirmation is relayed"
            );
            assert!(
                !t.accuse(confirmation(9, 4, accuser), Origin::Heard, Instant::now()),
                "a duplicate is not news"
            );
            assert!(
                !t.accuse(accusation(9, 4, 2), Origin::Heard, Instant::now()),
                "nor the first"
            );
            let left = t.deadline(id(9)).expect("open") - start;
            assert!(left < last, "{left:?} !< {last:?}");
            last = left;
        }
        assert_eq!(t.confirmations(id(9)), Some(p.k));
        assert_eq!(
            t.deadline(id(9)),
            Some(start + p.min),
            "measured from the start"
        );
        // Beyond k, accusers are neither counted nor passed on.
        assert!(!t.accuse(accusation(9, 4, 40), Origin::Heard, Instant::now()));
        assert_eq!(t.confirmations(id(9)), Some(p.k));
        assert!(
            t.take_fresh().is_empty(),
            "confirmations are not new suspicions"
        );
        // Nobody accuses themselves.
        assert!(!t.accuse(accusation(7, 1, 7), Origin::Heard, Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn due_suspicions_are_taken_once_and_refutation_settles_the_rest() {
        let mut t = table(50);
        let p = t.params();
        t.accuse(accusation(9, 1, 2), Origin::Heard, Instant::now());
        t.accuse(accusation(8, 1, 2), Origin::Heard, Instant::now());
        for accuser in 3..3 + p.k as u8 {
            t.accuse(accusation(9, 1, accuser), Origin::Heard, Instant::now());
        }
        assert_eq!(t.next_deadline(), t.deadline(id(9)));
        tokio::time::advance(p.min).await;
        assert_eq!(t.take_due(Instant::now()), vec![(id(9), 1, p.k)]);
        assert!(t.take_due(Instant::now()).is_empty(), "taken once");
        assert_eq!(t.deadline(id(9)), None);
        // 8 refuted (foca holds incarnation 2): no deadline, and its old accusations are
        // recognised, not spread again.
        t.settle(id(8), 1, false);
        assert!(
            t.deadline(id(8)).is_some(),
            "equal incarnation alive is no refutation"
        );
        t.settle(id(8), 2, false);
        assert_eq!(t.deadline(id(8)), None);
        assert_eq!(t.next_deadline(), None);
        assert!(!t.accuse(accusation(8, 1, 5), Origin::Heard, Instant::now()));
        assert!(t.open().is_empty());
        // Suspected again at the new incarnation: a new suspicion with the full timeout.
        assert!(t.accuse(accusation(8, 2, 5), Origin::Ours, Instant::now()));
        assert_eq!(t.deadline(id(8)), Some(Instant::now() + p.max));
        // A stale one about the old incarnation changes nothing.
        assert!(!t.accuse(accusation(8, 1, 6), Origin::Heard, Instant::now()));
        assert_eq!(t.confirmations(id(8)), Some(0));
        // Everything is forgotten after twice the maximum.
        tokio::time::advance(p.max * 2).await;
        t.forget_old(Instant::now());
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_accusations_stays_bounded() {
        let mut t = table(1000);
        let now = Instant::now();
        let mut passed_on = 0;
        for member in 0..4 * MAX_SUSPICIONS as u32 {
            let member = NodeId::test_member(member + 1000);
            for accuser in 0..20u8 {
                let a = Accusation {
                    member,
                    incarnation: 0,
                    accuser: id(accuser + 100),
                    confirms: accuser > 0,
                };
                passed_on += usize::from(t.accuse(a, Origin::Heard, now));
            }
        }
        assert_eq!(t.len(), MAX_SUSPICIONS);
        assert!(t
            .entries
            .values()
            .all(|s| s.accusers.len() <= t.params.k + 1));
        assert_eq!(
            passed_on, MAX_BACKLOG,
            "confirmations passed on until the backlog is full"
        );
        assert!(t.take_fresh().len() <= MAX_FRESH);
        // Once foca drained its backlog, news is passed on again.
        t.set_backlog(0);
        t.forget_old(now + t.params.max * 2);
        assert!(t.accuse(accusation(9, 0, 2), Origin::Ours, now + t.params.max * 2));
    }

    #[test]
    fn accusations_about_us_go_to_foca_and_are_not_passed_on() {
        let mut t = table(50);
        let now = Instant::now();
        assert!(!t.accuse(accusation(1, 3, 2), Origin::Heard, now));
        assert_eq!(t.take_fresh(), vec![(id(1), 3)]);
        let older = Accusation {
            member: NodeId {
                generation: 0,
                ..id(1)
            },
            ..accusation(1, 3, 2)
        };
        assert!(!t.accuse(older, Origin::Heard, now));
        assert!(
            t.take_fresh().is_empty(),
            "an older generation of ours is history"
        );
        assert!(t.is_empty());
    }

    #[test]
    fn the_handler_decodes_dedups_and_refuses_garbage() {
        let shared = Shared::new(table(50));
        let mut gossip = Gossip(shared.clone());
        let a = accusation(9, 2, 3);
        let bytes = a.encode();
        assert_eq!(Accusation::decode(&bytes), Some(a));
        assert_eq!(
            gossip.receive_item(&bytes, None).expect("valid"),
            Some(a),
            "ours (foca passes no sender) is sent"
        );
        assert_eq!(
            gossip.receive_item(&bytes, Some(&id(4))).expect("valid"),
            None
        );
        let heard = |gossip: &mut Gossip, a: Accusation| {
            gossip
                .receive_item(&a.encode(), Some(&id(4)))
                .expect("valid")
        };
        assert_eq!(
            heard(&mut gossip, confirmation(9, 2, 6)),
            Some(confirmation(9, 2, 6)),
            "a peer's confirmation is relayed"
        );
        assert_eq!(
            heard(&mut gossip, accusation(8, 2, 6)),
            None,
            "a peer's first accusation is not relayed"
        );
        assert_eq!(shared.lock().confirmations(id(9)), Some(1));
        assert_eq!(shared.lock().confirmations(id(8)), Some(0));
        assert_eq!(
            shared.lock().take_to_check(),
            vec![(id(8), 2)],
            "a peer's first accusation is checked; ours and confirmations are not"
        );
        // A confirmation of a suspicion new to us counts an unknown first accuser besides it;
        // that accuser's own accusation, arriving later, takes its place.
        assert_eq!(
            heard(&mut gossip, confirmation(7, 2, 6)),
            Some(confirmation(7, 2, 6))
        );
        assert_eq!(shared.lock().confirmations(id(7)), Some(1));
        assert_eq!(heard(&mut gossip, accusation(7, 2, 5)), None);
        assert_eq!(
            shared.lock().confirmations(id(7)),
            Some(1),
            "not counted twice"
        );
        assert!(shared.lock().knows(id(7), 2), "ours would confirm it");
        assert!(!shared.lock().knows(id(7), 3), "not at another incarnation");
        assert!(gossip.receive_item(&[0xff, 0xff, 0xff], None).is_err());
        assert_eq!(shared.lock().len(), 3, "every suspicion is recorded");
        // foca's backlog keeps the newest incarnation's accusations only.
        assert!(accusation(9, 3, 5).invalidates(&a));
        assert!(a.invalidates(&a));
        assert!(
            !accusation(9, 2, 5).invalidates(&a),
            "another accuser is kept"
        );
        assert!(
            !accusation(8, 3, 3).invalidates(&a),
            "another member is kept"
        );
    }
}
