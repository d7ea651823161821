//! The config folder watcher: `notify` on the config file's *folder*, debounced.
//!
//! The folder, not the file: editors save by writing a temporary file and renaming it over the
//! original (a watch on the old inode would go deaf after the first save), and a Kubernetes
//! ConfigMap volume swaps its `..data` symlink to a new timestamped folder without ever touching
//! the path the config file is read through. Any event in the folder therefore triggers a
//! re-read; the reloader's content hash makes unrelated events (another file changed) cost one
//! read of the file and nothing else.
//!
//! Debounce: a burst of events (an editor's write + rename, a script writing 50 times) becomes
//! one reload [`QUIET`] after the last event — or [`MAX_DELAY`] after the first when events never
//! stop, so a file rewritten forever is still picked up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{ReloadHandle, Trigger};
use crate::wire::shutdown::stopped;

/// How long the folder must stay quiet before a reload: long enough to cover an editor's
/// write-then-rename or `kubectl`'s symlink dance, short enough to feel immediate.
pub const QUIET: Duration = Duration::from_millis(200);

/// The longest a reload waits once events started, however busy the folder stays.
pub const MAX_DELAY: Duration = Duration::from_secs(2);

/// Starts watching `config`'s folder; events become [`Trigger::Watch`] reloads on `handle`.
/// A watcher that cannot start is logged and otherwise ignored.
pub fn spawn(
    control: &tokio::runtime::Handle,
    config: &Path,
    handle: ReloadHandle,
    shutdown: watch::Receiver<bool>,
) {
    let folder = folder_of(config);
    let (events_tx, events) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            Ok(event) => is_change(&event.kind),
            // A lost event (queue overflow) may have been a change: re-read to be sure.
            Err(_) => true,
        };
        if relevant {
            // `Err`: the debounce task stopped (shutdown); nothing to tell.
            let _ = events_tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "cannot watch the config folder; reload with SIGHUP or POST /reload");
            return;
        }
    };
    if let Err(error) = watcher.watch(&folder, RecursiveMode::NonRecursive) {
        tracing::warn!(%error, folder = %folder.display(), "cannot watch the config folder; reload with SIGHUP or POST /reload");
        return;
    }
    tracing::debug!(folder = %folder.display(), "watching the config folder");
    control.spawn(async move {
        // The watcher lives as long as this task; dropping it removes the inotify watch.
        let _watcher = watcher;
        debounce(events, handle, shutdown).await;
    });
}

/// The folder to watch: the file's parent, or the working directory for a bare file name.
fn folder_of(config: &Path) -> PathBuf {
    match config.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether an event may mean the file's content changed. Reads are not changes — and our own
/// read of the file would otherwise trigger the next reload, forever.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

async fn debounce(
    mut events: mpsc::UnboundedReceiver<()>,
    handle: ReloadHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stopped(&mut shutdown) => return,
            event = events.recv() => if event.is_none() { return },
        }
        let first = Instant::now();
        let mut deadline = first + QUIET;
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => return,
                event = events.recv() => match event {
                    Some(()) => deadline = (Instant::now() + QUIET).min(first + MAX_DELAY),
                    None => return,
                },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        handle.trigger(Trigger::Watch);
    }
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    use super::*;

    #[test]
    fn reads_are_not_changes_but_writes_renames_and_creates_are() {
        assert!(!is_change(&EventKind::Access(AccessKind::Read)));
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
    }

    #[test]
    fn a_bare_file_name_watches_the_working_directory() {
        assert_eq!(folder_of(Path::new("switchyard.toml")), PathBuf::from("."));
        assert_eq!(
            folder_of(Path::new("/etc/switchyard/switchyard.toml")),
            PathBuf::from("/etc/switchyard")
        );
    }
}
