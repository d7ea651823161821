//! A tokio runtime on a dedicated thread, stopped (and every task on it dropped) on `stop`/Drop.
//!
//! Dropping the runtime is what closes every socket a test server holds, including those of
//! connections parked forever by `Hang` or `Blackhole`: no task needs to cooperate.

use std::future::Future;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

/// Owns the thread; `stop` is idempotent.
pub struct RtThread {
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

impl RtThread {
    /// Runs `make()` on a new current-thread runtime until `stop` is called; panics if the
    /// runtime cannot be built (a test environment problem, not a test result).
    pub fn spawn<F, Fut>(name: &str, make: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let join = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build test runtime");
                rt.block_on(async move {
                    tokio::select! {
                        _ = make() => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping `rt` here drops every spawned task and the sockets they own.
            })
            .expect("spawn test runtime thread");
        Self {
            stop: Some(stop_tx),
            join: Some(join),
        }
    }

    /// Stops the runtime and waits for its thread, so every socket is closed on return.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }
}

impl Drop for RtThread {
    fn drop(&mut self) {
        self.stop();
    }
}
