//! Smooth weighted round robin, nginx's algorithm (`ngx_http_upstream_get_peer`, 2012).
//!
//! Each pick adds every peer's weight to its `current`, takes the peer with the largest `current`
//! (the first one on ties) and subtracts the total weight from it. For weights 5:1:1 that gives
//! `a a b a c a a`: the heavy peer's turns are spread out instead of coming in a burst of five.
//!
//! nginx runs that loop under a lock on the shared `current` values. Here every worker thread
//! picks for the same cluster, so a lock (or a CAS loop over N counters) would be a contended
//! point on every request. The sequence depends only on the weights and repeats after
//! `sum(weights)` picks, so we compute one period into a table when the snapshot is built and a
//! pick is one `fetch_add` on a counter plus a table read. The table lives in the snapshot next to
//! the endpoint list it indexes, so the two can never disagree.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::slow_start::Ramp;
use super::{remix, Balancer, Candidates, PickContext};

/// With `slow_start`, how many table turns a pick may pass over warming endpoints.
const MAX_SKIPS: usize = 8;

/// Longest table we precompute. Weights are first divided by their GCD; if the period is still
/// longer, they are scaled down (keeping each ≥ 1), which bounds memory at 256 KiB per cluster
/// while keeping shares within 1 / 65536 × endpoint count of the configured ones.
const MAX_TABLE: u64 = 1 << 16;

/// Smooth weighted round robin over a precomputed period; see the module doc.
#[derive(Debug)]
pub struct RoundRobin {
    /// One period of the nginx sequence, as endpoint indices.
    table: Vec<u32>,
    /// Picks so far; wraps harmlessly (the table length is far below `usize::MAX`).
    next: AtomicUsize,
    /// A warming endpoint keeps its turn with probability = its ramp factor, otherwise the turn
    /// passes to the next entry, so its share scales with `weight × factor`.
    slow_start: Ramp,
}

impl RoundRobin {
    /// Builds the table for `weights` (index i = endpoint i). Zero weights are treated as 1:
    /// config validation rejects them, and silently starving an endpoint would be worse.
    pub fn new(weights: &[u32]) -> Self {
        let weights = normalise(weights);
        Self {
            table: smooth_sequence(&weights),
            // Start at a random point so N freshly reloaded snapshots (or N peers) do not all
            // send their first request to endpoint 0.
            next: AtomicUsize::new(fastrand::usize(..=usize::from(u16::MAX))),
            slow_start: Ramp::default(),
        }
    }

    /// Ramps new endpoints in over `slow_start` (zero: off).
    pub fn with_slow_start(mut self, slow_start: Duration) -> Self {
        self.slow_start = Ramp::new(slow_start);
        self
    }

    /// The next endpoint index in the sequence, or `None` when there are no endpoints.
    fn pick(&self) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        // Relaxed: the counter only needs to hand out distinct-ish positions; nothing else is
        // published through it.
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.table.get(n % self.table.len()).map(|&i| i as usize)
    }
}

impl Balancer for RoundRobin {
    fn candidates<'a>(&'a self, ctx: &PickContext<'a>) -> Candidates<'a> {
        let Some(mut first) = self.pick() else {
            return Candidates::empty();
        };
        if !self.slow_start.is_off() {
            let now = Instant::now();
            let mut random = ctx.random;
            for _ in 0..MAX_SKIPS {
                let factor = self.slow_start.relative(ctx.endpoints, first, now);
                random = remix(random);
                if factor >= 1.0 || ((random >> 11) as f64 / (1u64 << 53) as f64) < factor {
                    break;
                }
                first = self.pick().unwrap_or(first);
            }
        }
        Candidates::rotate(first, ctx.endpoints.len())
    }

    fn name(&self) -> &'static str {
        "round_robin"
    }
}

/// Divides by the GCD and, if the period is still over [`MAX_TABLE`], scales down.
fn normalise(weights: &[u32]) -> Vec<u64> {
    let weights: Vec<u64> = weights.iter().map(|&w| u64::from(w.max(1))).collect();
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let mut weights: Vec<u64> = weights.iter().map(|w| w / divisor).collect();
    let total: u64 = weights.iter().sum();
    if total > MAX_TABLE {
        weights = weights
            .iter()
            .map(|w| (w * MAX_TABLE / total).max(1))
            .collect();
    }
    weights
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One period of nginx's smooth weighted round robin for `weights`.
///
/// nginx's loop costs O(endpoints) per step, so a period costs O(endpoints × total weight):
/// quadratic in a cluster of equal weights, where the period is the endpoint count. The same
/// sequence comes from the endpoints grouped by weight. Within a group every member gains the
/// same weight per step, so their `current` values differ by whole multiples of `total`, set by
/// how often each was picked; the group's best is the member picked least, lowest index first,
/// which makes a group's turns a rotation through its members in index order. A step then
/// compares one candidate per group, `step × weight − total × rounds`, ties to the lowest index
/// as in nginx: O(distinct weights) per step instead of O(endpoints). A unit test compares it
/// with nginx's loop ([`nginx_sequence`] in the tests).
fn smooth_sequence(weights: &[u64]) -> Vec<u32> {
    struct Group {
        weight: i128,
        /// Member indices, ascending.
        members: Vec<u32>,
        /// Picks so far.
        picks: usize,
    }
    let total: u64 = weights.iter().sum();
    let mut by_weight: std::collections::BTreeMap<u64, Vec<u32>> = Default::default();
    for (i, &w) in weights.iter().enumerate() {
        by_weight
            .entry(w)
            .or_default()
            .push(u32::try_from(i).unwrap_or(u32::MAX));
    }
    let mut groups: Vec<Group> = by_weight
        .into_iter()
        .map(|(w, members)| Group {
            weight: i128::from(w),
            members,
            picks: 0,
        })
        .collect();
    let total_wide = i128::from(total);
    let mut table = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for step in 1..=i128::from(total) {
        let mut best: Option<(i128, u32, usize)> = None;
        for (g, group) in groups.iter().enumerate() {
            let size = group.members.len();
            let rounds = i128::try_from(group.picks / size).unwrap_or(i128::MAX);
            let current = step * group.weight - total_wide * rounds;
            let member = group.members[group.picks % size];
            let better = match best {
                None => true,
                Some((c, m, _)) => current > c || (current == c && member < m),
            };
            if better {
                best = Some((current, member, g));
            }
        }
        let Some((_, member, g)) = best else {
            break;
        };
        groups[g].picks += 1;
        table.push(member);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(rr: &RoundRobin, n: usize) -> Vec<usize> {
        (0..n).filter_map(|_| rr.pick()).collect()
    }

    /// nginx's own loop, O(endpoints) per step: what [`smooth_sequence`] must equal.
    fn nginx_sequence(weights: &[u64]) -> Vec<u32> {
        let total: u64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut table = Vec::new();
        for _ in 0..total {
            let mut best = 0;
            for (i, &w) in weights.iter().enumerate() {
                current[i] += w as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total as i64;
            table.push(best as u32);
        }
        table
    }

    #[test]
    fn grouped_sequence_equals_nginx_loop() {
        let mut x = 0x9e37_79b9_u64;
        for case in 0..300 {
            x = remix(x);
            let n = 1 + (x % 40) as usize;
            let spread = [1, 2, 3, 7, 50][case % 5];
            let weights: Vec<u64> = (0..n)
                .map(|_| {
                    x = remix(x);
                    1 + x % spread
                })
                .collect();
            assert_eq!(
                smooth_sequence(&weights),
                nginx_sequence(&weights),
                "{weights:?}"
            );
        }
        let equal = vec![1u64; 10_000];
        let expected: Vec<u32> = (0..10_000).collect();
        assert_eq!(smooth_sequence(&equal), expected);
    }

    #[test]
    fn weights_5_1_1_give_the_nginx_sequence() {
        // nginx's documented example: { a, a, b, a, c, a, a } for a=5, b=1, c=1.
        assert_eq!(smooth_sequence(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn sequence_repeats_from_any_start_without_bursts() {
        let rr = RoundRobin::new(&[5, 1, 1]);
        let picks = sequence(&rr, 70);
        // Whatever the random start, b and c never come twice in a row and a never more than
        // twice in a row (the largest run in the nginx period, wrapping around included: a a | a a
        // would need the period to end and start with a double a, which it does: so at most 4).
        let longest_a = picks
            .split(|&i| i != 0)
            .map(<[usize]>::len)
            .max()
            .unwrap_or(0);
        assert!(
            longest_a <= 4,
            "burst of {longest_a} picks of the heavy endpoint"
        );
        for pair in picks.windows(2) {
            assert!(!(pair[0] == pair[1] && pair[0] != 0), "burst in {picks:?}");
        }
        // Every window of one period holds exactly the weights.
        for window in picks.windows(7) {
            let a = window.iter().filter(|&&i| i == 0).count();
            assert_eq!(a, 5, "window {window:?}");
        }
    }

    #[test]
    fn ten_thousand_picks_follow_the_weights() {
        let weights = [3, 2, 1, 4];
        let rr = RoundRobin::new(&weights);
        let mut counts = [0usize; 4];
        for i in sequence(&rr, 10_000) {
            counts[i] += 1;
        }
        // 10,000 is exactly 1,000 periods of 10, so the counts are exact.
        assert_eq!(counts, [3000, 2000, 1000, 4000]);
    }

    #[test]
    fn equal_weights_alternate() {
        let rr = RoundRobin::new(&[1, 1, 1]);
        let picks = sequence(&rr, 9);
        for pair in picks.windows(2) {
            assert_eq!(pair[1], (pair[0] + 1) % 3);
        }
    }

    #[test]
    fn huge_weights_are_bounded_and_keep_proportions() {
        let rr = RoundRobin::new(&[4_000_000_000, 1_000_000_000, 7]);
        assert!(rr.table.len() as u64 <= MAX_TABLE + 3);
        let heavy = rr.table.iter().filter(|&&i| i == 0).count() as f64;
        let light = rr.table.iter().filter(|&&i| i == 1).count() as f64;
        assert!((heavy / light - 4.0).abs() < 0.01, "{heavy} / {light}");
        assert!(rr.table.contains(&2), "a tiny weight still gets picked");
    }

    #[test]
    fn gcd_shrinks_the_table() {
        assert_eq!(RoundRobin::new(&[100, 200]).table, vec![1, 0, 1]);
    }

    #[test]
    fn no_endpoints_no_candidates() {
        let rr = RoundRobin::new(&[]);
        let ctx = PickContext {
            endpoints: &[],
            client: None,
            random: 0,
            hash: None,
        };
        assert_eq!(rr.candidates(&ctx).count(), 0);
    }
}
