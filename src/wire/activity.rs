//! "No bytes either way for this long": one clock shared by both directions of a stream.
//!
//! The route `idle_timeout` watches a response body, its request body and (for upgrades) both
//! halves of a tunnel. Each direction stamps the shared clock when bytes move; the watcher only
//! compares. An atomic of milliseconds since a process-wide base instant keeps it `Send` and
//! lock-free (no atomic `Instant` in std); millisecond resolution is plenty for timeouts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    u64::try_from(base().elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// When bytes last moved on a stream, in either direction.
#[derive(Debug, Clone)]
pub struct Activity {
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

impl Activity {
    /// A clock that says "active now".
    pub fn new() -> Self {
        Self {
            last_ms: Arc::new(AtomicU64::new(now_ms())),
        }
    }

    /// A clock that says "active at `at`" (a reading the caller already has: one clock read
    /// fewer than [`Activity::new`]).
    pub fn since(at: Instant) -> Self {
        let ms = at.saturating_duration_since(base()).as_millis();
        Self {
            last_ms: Arc::new(AtomicU64::new(u64::try_from(ms).unwrap_or(u64::MAX))),
        }
    }

    /// Records that bytes moved.
    pub fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// How long nothing has moved.
    pub fn idle_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    /// How much longer until `limit` of silence, or `None` if it has passed.
    pub fn remaining(&self, limit: Duration) -> Option<Duration> {
        limit.checked_sub(self.idle_for()).filter(|d| !d.is_zero())
    }

    /// Resolves once nothing has moved for `limit`. Each wake-up sleeps until the earliest
    /// moment the limit could be reached, so the loop runs once per burst of activity, not once
    /// per byte.
    pub async fn expired(&self, limit: Duration) {
        while let Some(wait) = self.remaining(limit) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_clock_has_the_whole_limit_left() {
        let a = Activity::new();
        let left = a.remaining(Duration::from_secs(10)).expect("not expired");
        assert!(left > Duration::from_secs(9));
        assert!(a.remaining(Duration::ZERO).is_none());
    }
}
