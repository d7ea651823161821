//! [`Candidates`]: endpoint indices in preference order, yielded lazily and without allocating.
//!
//! Every balancer answers with the same shape: a few *preferred* endpoints produced by an
//! algorithm-specific [`Source`] (the P2C winner, the next distinct owners along the hash ring,
//! the next Maglev slots), then every endpoint not yet yielded in index order from a starting
//! point, and last, optionally, one *deferred* endpoint (P2C's loser, so a caller that skips an
//! ejected winner does not fall back to the one endpoint known to be busier). Each index comes
//! out exactly once, so a caller that skips unusable endpoints always terminates.

use std::sync::Arc;
use std::time::Instant;

use super::slow_start::Ramp;
use crate::endpoint::EndpointState;

/// How many preferred endpoints a [`Source`] may contribute; the rest come in index order.
/// Eight distinct ring owners is far more than bounded loads (c ≥ 1.25) or ejection ever walk.
pub(crate) const HEAD: usize = 8;

/// Table steps a ring/Maglev walk may take looking for [`HEAD`] distinct endpoints, so a pick's
/// work is bounded even when one endpoint owns long runs of the table.
const MAX_STEPS: usize = 32 * HEAD;

/// Endpoint indices in preference order, produced by [`Balancer::candidates`](super::Balancer).
///
/// A concrete iterator (not `Box<dyn Iterator>`) borrowing the balancer's table, so a pick never
/// allocates and the first candidate costs one table read.
#[derive(Debug, Clone)]
pub struct Candidates<'a> {
    source: Source<'a>,
    /// Distinct indices the source yielded so far.
    head: [u32; HEAD],
    head_len: usize,
    /// Yielded after everything else.
    deferred: Option<u32>,
    /// The index-order phase: `(start + pos) % len` for `pos` in `0..len`.
    start: usize,
    pos: usize,
    len: usize,
    /// Indices yielded so far (for `size_hint`).
    yielded: usize,
}

/// Where a [`Candidates`] takes its preferred endpoints from.
#[derive(Debug, Clone)]
pub(crate) enum Source<'a> {
    /// No preference beyond the starting point of the index-order phase.
    Nothing,
    /// One chosen endpoint (P2C's winner).
    One(u32),
    /// Walk a table of endpoint indices from `pos`, wrapping (ring points in hash order, or
    /// Maglev slots), skipping endpoints already yielded and warming endpoints that `warm`
    /// does not admit for this key.
    Walk {
        table: Slots<'a>,
        pos: usize,
        steps: usize,
        warm: Option<Warmup<'a>>,
    },
}

/// A table of endpoint indices to walk: plain (Maglev slots) or the owner half of ring points
/// kept next to their hashes (so a ring lookup reads one cache line, not two).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Slots<'a> {
    Owners(&'a [u32]),
    Points(&'a [(u64, u32)]),
}

impl Slots<'_> {
    fn len(&self) -> usize {
        match self {
            Self::Owners(t) => t.len(),
            Self::Points(t) => t.len(),
        }
    }

    /// The endpoint at `pos` (`pos < len`), or an index no cluster has when out of range.
    fn owner(&self, pos: usize) -> u32 {
        match self {
            Self::Owners(t) => t.get(pos).copied(),
            Self::Points(t) => t.get(pos).map(|p| p.1),
        }
        .unwrap_or(u32::MAX)
    }
}

impl<'a> From<&'a [u32]> for Slots<'a> {
    fn from(table: &'a [u32]) -> Self {
        Self::Owners(table)
    }
}

/// Slow start for hashing balancers: a warming endpoint takes a key only if the key's fixed
/// fraction `u` is below the endpoint's (relative) ramp factor, so as the ramp grows keys move
/// over to it gradually and consistently (the same keys on every peer); the rest keep walking
/// to the endpoint they would have had without it.
#[derive(Debug, Clone)]
pub(crate) struct Warmup<'a> {
    pub endpoints: &'a [Arc<EndpointState>],
    pub ramp: &'a Ramp,
    pub now: Instant,
    /// In `[0, 1)`, derived from the key's hash.
    pub u: f64,
}

impl<'a> Candidates<'a> {
    /// No endpoint at all.
    pub fn empty() -> Self {
        Self::rotate(0, 0)
    }

    /// `start` first, then the rest of `0..len` walking forward and wrapping around.
    pub fn rotate(start: usize, len: usize) -> Self {
        Self::build(Source::Nothing, start, len, None)
    }

    /// `first`, then the others from `start` in index order, `last` at the very end.
    pub(crate) fn pair(first: usize, last: Option<usize>, start: usize, len: usize) -> Self {
        let source = Source::One(u32::try_from(first).unwrap_or(u32::MAX));
        Self::build(source, start, len, last.filter(|&l| l != first))
    }

    /// The distinct endpoints met walking `table` from `pos`, then the rest in index order
    /// from `start`.
    pub(crate) fn walk(
        table: impl Into<Slots<'a>>,
        pos: usize,
        warm: Option<Warmup<'a>>,
        start: usize,
        len: usize,
    ) -> Self {
        let table = table.into();
        let source = if table.len() == 0 {
            Source::Nothing
        } else {
            Source::Walk {
                table,
                pos: pos % table.len(),
                steps: 0,
                warm,
            }
        };
        Self::build(source, start, len, None)
    }

    fn build(source: Source<'a>, start: usize, len: usize, deferred: Option<usize>) -> Self {
        let deferred = deferred
            .filter(|&d| d < len)
            .and_then(|d| u32::try_from(d).ok());
        Self {
            source,
            head: [0; HEAD],
            head_len: 0,
            deferred,
            start: if len == 0 { 0 } else { start % len },
            pos: 0,
            len,
            yielded: 0,
        }
    }

    fn seen(&self, index: u32) -> bool {
        self.deferred == Some(index) || self.head[..self.head_len].contains(&index)
    }

    /// The next preferred index from the source, or `None` once it is exhausted.
    fn next_from_source(&mut self) -> Option<u32> {
        if self.head_len == HEAD {
            self.source = Source::Nothing;
        }
        let found = match &mut self.source {
            Source::Nothing => None,
            Source::One(index) => {
                let index = *index;
                self.source = Source::Nothing;
                Some(index).filter(|&i| (i as usize) < self.len)
            }
            Source::Walk {
                table,
                pos,
                steps,
                warm,
            } => {
                let mut found = None;
                while *steps < MAX_STEPS.min(table.len()) {
                    let index = table.owner(*pos);
                    *pos = if *pos + 1 == table.len() { 0 } else { *pos + 1 };
                    *steps += 1;
                    let fresh = (index as usize) < self.len
                        && self.deferred != Some(index)
                        && !self.head[..self.head_len].contains(&index);
                    if fresh && warm.as_ref().is_none_or(|w| w.admits(index as usize)) {
                        found = Some(index);
                        break;
                    }
                }
                if found.is_none() {
                    self.source = Source::Nothing;
                }
                found
            }
        };
        if let Some(index) = found {
            self.head[self.head_len] = index;
            self.head_len += 1;
        }
        found
    }
}

impl Warmup<'_> {
    fn admits(&self, index: usize) -> bool {
        self.u < self.ramp.relative(self.endpoints, index, self.now)
    }
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if let Some(index) = self.next_from_source() {
            self.yielded += 1;
            return Some(index as usize);
        }
        while self.pos < self.len {
            let index = (self.start + self.pos) % self.len;
            self.pos += 1;
            let Ok(index32) = u32::try_from(index) else {
                continue;
            };
            if !self.seen(index32) {
                self.yielded += 1;
                return Some(index);
            }
        }
        let last = self.deferred.take()?;
        self.yielded += 1;
        Some(last as usize)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len.saturating_sub(self.yielded);
        (left, Some(left))
    }
}

impl ExactSizeIterator for Candidates<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotate_yields_every_index_once_starting_at_start() {
        let order: Vec<usize> = Candidates::rotate(2, 4).collect();
        assert_eq!(order, vec![2, 3, 0, 1]);
        assert_eq!(Candidates::rotate(7, 3).next(), Some(1));
        assert_eq!(Candidates::empty().count(), 0);
        assert_eq!(Candidates::rotate(1, 5).len(), 5);
    }

    #[test]
    fn pair_puts_the_winner_first_and_the_loser_last() {
        let order: Vec<usize> = Candidates::pair(3, Some(1), 0, 5).collect();
        assert_eq!(order, vec![3, 0, 2, 4, 1]);
        let order: Vec<usize> = Candidates::pair(0, Some(1), 1, 2).collect();
        assert_eq!(order, vec![0, 1]);
    }

    #[test]
    fn walk_yields_distinct_table_owners_then_the_rest() {
        let table = [2, 2, 0, 2, 3, 0, 1];
        let order: Vec<usize> = Candidates::walk(&table[..], 1, None, 0, 5).collect();
        assert_eq!(order, vec![2, 0, 3, 1, 4]);
        let mut c = Candidates::walk(&table[..], 6, None, 0, 5);
        assert_eq!(c.len(), 5);
        assert_eq!(c.next(), Some(1));
        assert_eq!(c.len(), 4);
        assert_eq!(c.count(), 4);
    }

    #[test]
    fn every_shape_yields_each_index_exactly_once() {
        let table: Vec<u32> = (0..500).map(|i| (i * 7 % 13) as u32).collect();
        for len in [1usize, 2, 9, 13, 40] {
            for start in 0..len {
                for c in [
                    Candidates::rotate(start, len),
                    Candidates::pair(start, Some((start + 1) % len), start / 2, len),
                    Candidates::walk(&table[..], start * 31, None, start, len),
                ] {
                    let mut order: Vec<usize> = c.collect();
                    order.sort_unstable();
                    assert_eq!(order, (0..len).collect::<Vec<_>>());
                }
            }
        }
    }
}
