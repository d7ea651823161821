//! [`run`]: the CLI's entry point — start, serve until a signal, drain, stop.

use std::io;
use std::sync::mpsc;

use tokio::sync::mpsc as tokio_mpsc;

use super::start::start;
use super::workers;
use crate::config::Config;
use crate::state::reload::Trigger;

/// What the CLI's main thread waits for during shutdown.
enum Event {
    /// SIGINT or SIGTERM arrived.
    Signal,
    /// Every worker has finished draining.
    Drained,
}

/// Runs the proxy until SIGINT or SIGTERM, then shuts down gracefully and returns `Ok` (exit 0).
/// What `switchyard run` calls.
///
/// Shutdown, in order: `/readyz` answers 503 at once; the proxy keeps serving for
/// `[runtime] shutdown_delay` so load balancers in front notice; then listeners close (new
/// connections are refused), HTTP/2 connections get GOAWAY and HTTP/1 responses
/// `Connection: close`, and requests in flight get up to `drain_timeout` to finish. A second
/// signal at any point exits the process at once with status 1, without waiting.
pub fn run(config: Config) -> anyhow::Result<()> {
    let shutdown_delay = config.runtime.shutdown_delay;
    let drain_timeout = config.runtime.drain_timeout;
    // Watch signals before starting, so one that arrives during start is not lost (and a
    // SIGHUP then does not kill the process, its default action).
    let (events_tx, events) = mpsc::channel();
    let (hangups_tx, mut hangups) = tokio_mpsc::unbounded_channel();
    watch_signals(events_tx.clone(), hangups_tx)?;
    let handle = start(config)?;
    let reloader = handle.reloader().clone();
    handle.control().spawn(async move {
        while hangups.recv().await.is_some() {
            reloader.trigger(Trigger::Signal);
        }
    });
    // URLs in the messages: scripts and tests read the real ports (port 0) from these lines.
    for (name, addr) in handle.listeners() {
        tracing::info!(listener = %name, "listening on http://{addr}");
    }
    tracing::info!("admin API listening on http://{}", handle.admin_addr());
    if events.recv().is_err() {
        anyhow::bail!("the signal watcher stopped unexpectedly");
    }
    tracing::info!(?shutdown_delay, "shutting down: not ready, still serving");
    handle.shared().set_draining();
    match events.recv_timeout(shutdown_delay) {
        Ok(Event::Signal) => exit_at_once(),
        Ok(Event::Drained) | Err(_) => {}
    }
    tracing::info!(?drain_timeout, "closing listeners, draining connections");
    let drain = std::thread::Builder::new()
        .name("switchyard-drain".to_owned())
        .spawn(move || {
            handle.shutdown();
            let _ = events_tx.send(Event::Drained);
        })?;
    match events.recv() {
        Ok(Event::Signal) => exit_at_once(),
        Ok(Event::Drained) | Err(_) => {}
    }
    // The drain thread has sent `Drained`, its last act; a panic in it was reported already.
    let _ = drain.join();
    tracing::info!("stopped");
    Ok(())
}

fn exit_at_once() -> ! {
    tracing::warn!("second signal: exiting without waiting for requests in flight");
    std::process::exit(1)
}

/// Forwards SIGINT and SIGTERM to `events`, and SIGHUP (reload) to `hangups`, from a thread of
/// its own. The handlers are registered before this returns. After two SIGINT/SIGTERM the
/// watcher ends: the second one makes `run` exit the process.
fn watch_signals(
    events: mpsc::Sender<Event>,
    hangups: tokio_mpsc::UnboundedSender<()>,
) -> io::Result<()> {
    let runtime = workers::current_thread_runtime()?;
    #[cfg(unix)]
    let (mut interrupt, mut terminate, mut hangup) = {
        use tokio::signal::unix::{signal, SignalKind};
        let _context = runtime.enter();
        (
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        )
    };
    #[cfg(not(unix))]
    let _ = hangups;
    std::thread::Builder::new()
        .name("switchyard-signals".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                let mut stops = 0;
                while stops < 2 {
                    #[cfg(unix)]
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                        _ = hangup.recv() => {
                            // `Err`: the proxy is shutting down; a reload no longer matters.
                            let _ = hangups.send(());
                            continue;
                        }
                    }
                    stops += 1;
                    #[cfg(not(unix))]
                    if tokio::signal::ctrl_c().await.is_err() {
                        return;
                    }
                    if events.send(Event::Signal).is_err() {
                        return;
                    }
                }
            });
        })?;
    Ok(())
}
