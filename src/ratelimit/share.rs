//! The mesh scope's arithmetic, kept pure so it can be tested without a mesh: each member's
//! share of a route's limit, per key, from its own demand and the demand the live members
//! gossip (`mesh::rate_share` runs it once per period and publishes the result).
//!
//! Share of member `i` for key `k`: `(d_i + e) / (sum_j d_j + n * e)` over the `n` live members,
//! `d_j` the requests per second member `j` saw for `k` (admitted or not), `e` a small floor
//! (1 % of the limit's rate) so that an idle member keeps a sliver and can measure demand when
//! it starts. With every member computing from the same numbers the shares add up to exactly 1,
//! so the admitted total is the limit; each share is at most 1, so a member never admits more
//! than the whole limit (in a partition: at most N x limit in total). A key no live member
//! lists gets `1 / n`.

use std::collections::HashMap;

/// One member's shares of a route's limit, by key fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Shares {
    /// For keys not in `keys`.
    pub default: f64,
    /// Keys some live member reported demand for.
    pub keys: HashMap<u64, f64, foldhash::fast::FixedState>,
}

impl Shares {
    /// The whole limit for every key: before the mesh's first period, and without peers.
    pub fn whole() -> Self {
        Self {
            default: 1.0,
            keys: HashMap::default(),
        }
    }

    /// The share of key `key`.
    pub fn of(&self, key: u64) -> f64 {
        self.keys.get(&key).copied().unwrap_or(self.default)
    }
}

/// One member's reported demand on a route: requests per second, by key.
pub type Demand = HashMap<u64, f64>;

/// Our shares from `own` demand and the `peers`' reported demand (live members only; we are
/// not among them). `per_second`: the limit's rate, which sets the idle floor.
pub fn compute(own: &Demand, peers: &[&Demand], per_second: f64) -> Shares {
    let members = peers.len() + 1;
    if peers.is_empty() {
        return Shares::whole();
    }
    let floor = (per_second * 0.01).max(1e-3);
    let mut keys: HashMap<u64, f64, foldhash::fast::FixedState> = HashMap::default();
    let mut seen: Vec<u64> = own.keys().copied().collect();
    for peer in peers {
        seen.extend(peer.keys().copied());
    }
    seen.sort_unstable();
    seen.dedup();
    for key in seen {
        let mine = own.get(&key).copied().unwrap_or(0.0);
        let others: f64 = peers.iter().filter_map(|p| p.get(&key)).sum();
        let share = (mine + floor) / (mine + others + members as f64 * floor);
        keys.insert(key, share.clamp(0.0, 1.0));
    }
    Shares {
        default: 1.0 / members as f64,
        keys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demand(pairs: &[(u64, f64)]) -> Demand {
        pairs.iter().copied().collect()
    }

    #[test]
    fn shares_follow_demand_and_add_up_to_one() {
        let a = demand(&[(1, 180.0)]);
        let b = demand(&[(1, 90.0)]);
        let c = demand(&[(1, 30.0)]);
        let sa = compute(&a, &[&b, &c], 100.0).of(1);
        let sb = compute(&b, &[&a, &c], 100.0).of(1);
        let sc = compute(&c, &[&a, &b], 100.0).of(1);
        assert!((sa + sb + sc - 1.0).abs() < 1e-9, "{sa} {sb} {sc}");
        assert!((sa - 0.6).abs() < 0.01 && (sc - 0.1).abs() < 0.01);
        // A member that leaves drops out: the two left share the whole limit.
        let sa2 = compute(&a, &[&b], 100.0).of(1);
        let sb2 = compute(&b, &[&a], 100.0).of(1);
        assert!((sa2 + sb2 - 1.0).abs() < 1e-9);
        // Alone: the whole limit; an unlisted key: 1/n.
        assert_eq!(compute(&a, &[], 100.0).of(1), 1.0);
        assert!((compute(&a, &[&b, &c], 100.0).of(99) - 1.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn an_idle_member_keeps_a_floor_and_never_exceeds_the_whole() {
        let idle = demand(&[]);
        let busy = demand(&[(1, 500.0)]);
        let s = compute(&idle, &[&busy], 100.0).of(1);
        assert!(s > 0.0 && s < 0.01, "{s}");
        let alone_busy = compute(&busy, &[&idle], 100.0).of(1);
        assert!(alone_busy <= 1.0);
    }
}
