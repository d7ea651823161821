//! Freeing a replaced snapshot where nobody waits for it.
//!
//! A snapshot of thousands of routes takes milliseconds to free (every compiled route, metric
//! handle and name; `cargo bench --bench reload` builds and replaces one of 10,000 routes), and
//! whoever drops the last reference pays. Left to chance, that is the reload's
//! answer to `POST /reload` or, worse, a worker finishing the last request that still held the
//! old snapshot. So the reloader hands the snapshot it replaced to a blocking thread, which
//! waits (bounded) until requests in flight have let go and then frees it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::state::Snapshot;

/// How long the retiring thread waits for requests in flight to drop their reference. A
/// request that outlives it (a long stream) frees the snapshot itself when it ends.
const WAIT_FOR_REQUESTS: Duration = Duration::from_secs(2);

/// How often the retiring thread looks whether it holds the last reference.
const POLL: Duration = Duration::from_millis(20);

/// Frees `replaced` on a blocking thread of the current runtime once it holds the last
/// reference, or after [`WAIT_FOR_REQUESTS`]. A snapshot that is still `current` (the reload
/// failed or changed nothing) is only a reference to let go of.
pub(super) fn retire(replaced: Arc<Snapshot>, current: &Snapshot) {
    if std::ptr::eq(Arc::as_ptr(&replaced), current) {
        return;
    }
    tokio::task::spawn_blocking(move || {
        let give_up = Instant::now() + WAIT_FOR_REQUESTS;
        while Arc::strong_count(&replaced) > 1 && Instant::now() < give_up {
            std::thread::sleep(POLL);
        }
        drop(replaced);
    });
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::state::Shared;

    fn config(port: u16) -> crate::config::Config {
        let text = format!(
            "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\ncluster = \"app\"\n\n[clusters.app]\nendpoints = [\"127.0.0.1:{port}\"]\n"
        );
        crate::config::parse(&text, Path::new("test.toml")).expect("valid config")
    }

    #[tokio::test]
    async fn a_replaced_snapshot_is_freed_once_the_last_request_lets_go() {
        let shared = Shared::new(config(9001));
        let replaced = shared.snapshot();
        let in_flight = Arc::clone(&replaced);
        let freed = Arc::downgrade(&replaced);
        shared.publish(config(9002));

        retire(replaced, &shared.snapshot());
        tokio::time::sleep(POLL * 3).await;
        // The retiring thread holds the last reference but one; the request ends now.
        drop(in_flight);
        let deadline = Instant::now() + WAIT_FOR_REQUESTS;
        while freed.upgrade().is_some() {
            assert!(Instant::now() < deadline, "never freed");
            tokio::time::sleep(POLL).await;
        }
    }
}
