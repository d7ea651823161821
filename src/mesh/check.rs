//! Suspicion checks: a member that hears a first accusation checks the suspect itself, so a
//! dead member collects its confirmations within about a second instead of waiting for the
//! cluster's probes to reach it one by one.
//!
//! Why: every member probes one peer a second, so a dead member is probed by about one member a
//! second whatever the cluster size. With Lifeguard's `K` = 3 ([`super::suspicion`]), a death
//! waited for four probers in turn: at 1,000 members the simulation saw a killed member dead
//! everywhere p99 12.9 s over 20 runs (docs/mesh.md, "Scale"), the arrival of the probers
//! being the slow part. A first accusation reaches the few dozen members its accuser
//! piggybacks it to (its own `max_transmissions`); each of them pings the suspect now, and a
//! check that gets no answer is an independent confirmation ([`super::suspicion::Accusation`]
//! with `confirms`), relayed to everyone like any confirmation.
//!
//! Why a check is as strong as a probe: it pings [`PINGS`] times over [`WINDOW`] (one probe
//! period) and fails only if every round trip is lost. At 10 % loss a round trip fails 19 % of
//! the time, so a live member fails one check in about 4,000 (foca's probe with five indirect
//! paths: about one in 1,200), and a false death needs `K` such failures among the checkers of
//! one suspicion before it refutes. A check is made by another member than the accuser (a slow
//! accuser does not confirm itself, Lifeguard's concern), at most [`MAX_CHECKS`] at once.
//!
//! Cost: a false suspicion (the usual kind at 10 % loss) costs each direct recipient of its
//! accusation one ping and one acknowledgement; a dead member costs each [`PINGS`] pings.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::codec::NodeId;
use super::suspicion::Incarnation;

/// How long a check waits for an answer: foca's probe period, the time a probe gets.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Pings per check, spread evenly over [`WINDOW`] (until one is answered).
pub const PINGS: u32 = 5;
/// Checks in progress at once; a suspicion heard beyond it is left to the probers. Far above
/// the false suspicions a lossy network produces (about one a second cluster-wide per
/// thousand members at 10 % loss, each checked by a few dozen members for one second).
pub const MAX_CHECKS: usize = 16;

/// One check in progress.
#[derive(Debug, Clone)]
struct Check {
    incarnation: Incarnation,
    nonce: u64,
    started: Instant,
    /// Pings sent so far.
    sent: u32,
}

/// What is due now: pings to send, and checks that failed (the suspect never answered).
#[derive(Debug, Default, PartialEq)]
pub struct Due {
    /// `(suspect, nonce)`: send the suspect a ping carrying `nonce`.
    pub pings: Vec<(NodeId, u64)>,
    /// `(suspect, incarnation)`: no answer within [`WINDOW`]; a confirmation if the suspicion
    /// still stands.
    pub failed: Vec<(NodeId, Incarnation)>,
}

/// The checks a member is making.
#[derive(Debug, Default)]
pub struct Checks {
    checks: HashMap<NodeId, Check>,
    next_nonce: u64,
}

impl Checks {
    /// Starts checking `member` at `incarnation` (its first ping is due at once); `false` if it
    /// is already being checked or [`MAX_CHECKS`] are.
    pub fn start(&mut self, member: NodeId, incarnation: Incarnation, now: Instant) -> bool {
        if self.checks.len() >= MAX_CHECKS || self.checks.contains_key(&member) {
            return false;
        }
        // Unique per member and process; the seal authenticates the sender, so the nonce only
        // matches an answer to its check.
        self.next_nonce = self.next_nonce.wrapping_add(1);
        self.checks.insert(
            member,
            Check {
                incarnation,
                nonce: self.next_nonce,
                started: now,
                sent: 0,
            },
        );
        true
    }

    /// An answer carrying `nonce` arrived: its check passed (the suspect is alive) and ends.
    /// Returns whether it answered a check in progress.
    pub fn answered(&mut self, nonce: u64) -> bool {
        let before = self.checks.len();
        self.checks.retain(|_, c| c.nonce != nonce);
        self.checks.len() < before
    }

    /// Pings due and checks failed by `now`; failed checks end.
    pub fn due(&mut self, now: Instant) -> Due {
        let mut due = Due::default();
        self.checks.retain(|member, c| {
            if now >= c.started + WINDOW {
                due.failed.push((*member, c.incarnation));
                return false;
            }
            if c.sent < PINGS && now >= c.started + WINDOW * c.sent / PINGS {
                c.sent += 1;
                due.pings.push((*member, c.nonce));
            }
            true
        });
        due
    }

    /// When something is next due: the next ping or verdict.
    pub fn next_at(&self) -> Option<Instant> {
        self.checks
            .values()
            .map(|c| {
                if c.sent < PINGS {
                    c.started + WINDOW * c.sent / PINGS
                } else {
                    c.started + WINDOW
                }
            })
            .min()
    }

    /// The nonce of the check of `member`, if one is in progress (tests answer it).
    #[cfg(test)]
    pub fn nonce_of(&self, member: NodeId) -> Option<u64> {
        self.checks.get(&member).map(|c| c.nonce)
    }

    /// Checks in progress.
    pub fn len(&self) -> usize {
        self.checks.len()
    }

    /// Whether no check is in progress.
    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u8) -> NodeId {
        NodeId::test_member(u32::from(i))
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_check_pings_five_times_then_fails_once() {
        let mut checks = Checks::default();
        let start = Instant::now();
        assert!(checks.start(id(9), 2, start));
        assert!(!checks.start(id(9), 2, start), "one check per member");
        let mut pings = 0;
        let mut failed = Vec::new();
        while let Some(at) = checks.next_at() {
            tokio::time::advance(at.saturating_duration_since(Instant::now())).await;
            let due = checks.due(Instant::now());
            pings += due.pings.len();
            failed.extend(due.failed);
        }
        assert_eq!(pings, PINGS as usize);
        assert_eq!(failed, vec![(id(9), 2)]);
        assert_eq!(
            Instant::now() - start,
            WINDOW,
            "the verdict comes after one window"
        );
        assert!(checks.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_ends_the_check_and_other_nonces_do_not() {
        let mut checks = Checks::default();
        let now = Instant::now();
        checks.start(id(9), 0, now);
        checks.start(id(8), 0, now);
        let due = checks.due(now);
        assert_eq!(due.pings.len(), 2, "first pings at once");
        let nonce_of_9 = due
            .pings
            .iter()
            .find(|(m, _)| *m == id(9))
            .map(|(_, n)| *n)
            .expect("pinged 9");
        assert!(
            !checks.answered(nonce_of_9.wrapping_add(100)),
            "unknown nonce"
        );
        assert!(checks.answered(nonce_of_9));
        assert!(!checks.answered(nonce_of_9), "answered once");
        tokio::time::advance(WINDOW).await;
        let due = checks.due(Instant::now());
        assert_eq!(due.failed, vec![(id(8), 0)], "only the unanswered fails");
    }

    #[test]
    fn at_most_max_checks_run_at_once() {
        let mut checks = Checks::default();
        let now = Instant::now();
        let started = (0..=MAX_CHECKS as u8 + 5)
            .filter(|&i| checks.start(id(i), 0, now))
            .count();
        assert_eq!(started, MAX_CHECKS);
        assert_eq!(checks.len(), MAX_CHECKS);
    }
}
