//! Request coalescing ("collapsed forwarding", RFC 9211's `collapsed`): while one request
//! fetches a URL, the others wait for it instead of going upstream too.
//!
//! The idea is pingora-cache's per-key lock (`pingora-cache/src/lock.rs`), shaped for us: a
//! `DashMap` from key to a `watch` receiver. The first request inserts its [`Flight`] and fetches;
//! the rest clone the receiver and wait, bounded, for the sender to drop — which happens when
//! the leader has stored the response, found it uncacheable, failed, or was cancelled. Then they
//! look in the store again and, finding nothing, go upstream themselves. No lock is held across
//! an `.await`: the map is touched only to insert, clone and remove.

use std::sync::Arc;
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::watch;

/// The fetches in progress, by key.
#[derive(Debug, Default)]
pub struct Flights {
    map: DashMap<Box<str>, watch::Receiver<()>>,
}

/// What a request is, for one key.
#[derive(Debug)]
pub enum Join {
    /// Fetch it; dropping the flight releases the waiters.
    Leader(Flight),
    /// Someone else is fetching it: [`wait`] on this.
    Follower(watch::Receiver<()>),
}

/// A leader's claim on a key; dropped when its result is known (stored or not).
#[derive(Debug)]
pub struct Flight {
    flights: Arc<Flights>,
    key: Box<str>,
    _done: watch::Sender<()>,
}

impl Drop for Flight {
    fn drop(&mut self) {
        self.flights.map.remove(&self.key);
        // `_done` drops after this: waiters wake with the entry already gone, so one of them
        // that goes upstream and joins again becomes a leader instead of waiting on nothing.
    }
}

/// Joins the flight for `key`, leading it if there is none.
pub fn join(flights: &Arc<Flights>, key: &str) -> Join {
    match flights.map.entry(Box::from(key)) {
        Entry::Occupied(e) => Join::Follower(e.get().clone()),
        Entry::Vacant(e) => {
            let (done, rx) = watch::channel(());
            let key = e.key().clone();
            e.insert(rx);
            Join::Leader(Flight {
                flights: Arc::clone(flights),
                key,
                _done: done,
            })
        }
    }
}

/// Waits until the leader is done, or `limit` passes (then the caller fetches on its own).
pub async fn wait(mut rx: watch::Receiver<()>, limit: Duration) {
    // The leader never sends; `changed` returns (with an error) when its sender drops.
    let _ = tokio::time::timeout(limit, rx.changed()).await;
}

impl Flights {
    /// Fetches in progress (tests, diagnostics).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no fetch is in progress.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_wake_when_the_leader_drops() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(flight) = join(&flights, "k") else {
            panic!("first is leader");
        };
        let Join::Follower(rx) = join(&flights, "k") else {
            panic!("second follows");
        };
        let waiter = tokio::spawn(wait(rx, Duration::from_secs(10)));
        drop(flight);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("task");
        assert!(flights.is_empty());
        assert!(matches!(join(&flights, "k"), Join::Leader(_)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_wait_is_bounded() {
        let flights = Arc::new(Flights::default());
        let _leader = join(&flights, "k");
        let Join::Follower(rx) = join(&flights, "k") else {
            panic!("second follows");
        };
        let started = tokio::time::Instant::now();
        wait(rx, Duration::from_secs(3)).await;
        assert_eq!(started.elapsed().as_secs(), 3);
    }
}
