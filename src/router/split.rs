//! Weighted choice between a route's clusters.
//!
//! Cumulative weights are computed once per snapshot; a pick is `random % total` located by
//! binary search. With the small totals a config holds (weights are `u32`, splits have a
//! handful of arms), the modulo bias of a 64-bit random value is below 2^-32: negligible.

use crate::config::RouteTarget;

/// The clusters a route can send to, with cumulative weights.
#[derive(Debug, Clone)]
pub(crate) struct Split {
    /// `(cluster, cumulative weight)`, strictly increasing because every weight is > 0.
    arms: Vec<(String, u64)>,
}

impl Split {
    pub(crate) fn new(target: &RouteTarget) -> Self {
        let arms = match target {
            RouteTarget::Cluster(name) => vec![(name.clone(), 1)],
            RouteTarget::Split(arms) => {
                let mut total = 0u64;
                arms.iter()
                    .map(|arm| {
                        total += u64::from(arm.weight);
                        (arm.cluster.clone(), total)
                    })
                    .collect()
            }
        };
        Self { arms }
    }

    /// The cluster for a request, given a uniformly random `random`.
    pub(crate) fn pick(&self, random: u64) -> &str {
        let total = self.arms.last().map_or(0, |(_, cumulative)| *cumulative);
        if self.arms.len() == 1 || total == 0 {
            // A single cluster, or a split validation should have refused (all weights 0):
            // the first arm, never a panic.
            return self.arms.first().map_or("", |(name, _)| name.as_str());
        }
        let point = random % total;
        let index = self
            .arms
            .partition_point(|(_, cumulative)| *cumulative <= point);
        self.arms.get(index).map_or("", |(name, _)| name.as_str())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::WeightedCluster;

    fn split(weights: &[(&str, u32)]) -> Split {
        Split::new(&RouteTarget::Split(
            weights
                .iter()
                .map(|(cluster, weight)| WeightedCluster {
                    cluster: (*cluster).into(),
                    weight: *weight,
                })
                .collect(),
        ))
    }

    #[test]
    fn boundaries_fall_on_cumulative_weights() {
        let s = split(&[("a", 3), ("b", 1), ("c", 2)]);
        let picks: Vec<&str> = (0..6).map(|r| s.pick(r)).collect();
        assert_eq!(picks, ["a", "a", "a", "b", "c", "c"]);
        assert_eq!(s.pick(6), "a");
        assert_eq!(s.pick(u64::MAX), s.pick(u64::MAX % 6));
    }

    #[test]
    fn single_cluster_ignores_random() {
        let s = Split::new(&RouteTarget::Cluster("only".into()));
        assert_eq!(s.pick(0), "only");
        assert_eq!(s.pick(u64::MAX), "only");
    }

    #[test]
    fn ninety_ten_within_two_percent_over_ten_thousand_picks() {
        let s = split(&[("stable", 90), ("canary", 10)]);
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let canary = (0..10_000)
            .filter(|_| s.pick(rng.u64(..)) == "canary")
            .count();
        assert!(
            (800..=1200).contains(&canary),
            "canary got {canary} of 10000"
        );
    }
}
