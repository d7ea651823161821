//! The process's shutdown signal as every long-running task waits on it: a `watch` channel that
//! turns `true` once, shared by the accept loops, the control tasks and the admin server.

use tokio::sync::watch;

/// Resolves once shutdown is signalled or its sender is gone. Returns `()` rather than
/// `wait_for`'s `Ref`, which is a read guard on the channel and must not live across an `.await`.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}
