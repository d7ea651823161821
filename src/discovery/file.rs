//! `discovery = { file = "endpoints/orders.json" }`: a JSON array of `"host:port"` or
//! `{ "address", "weight", "zone" }`, re-read whenever it changes.
//!
//! The watch is on the file's folder, not the file (the same rule as config reload): editors and
//! deploy tools replace a file by writing a temporary one and renaming it over the old name,
//! which a watch on the old inode would never see. An unreadable or invalid file keeps the last
//! good set published; a missing file at start leaves the cluster empty until it appears.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::{parse_endpoint_list, Backoff, Sink};

/// How long to let a burst of events (truncate + write + close, or write + rename) settle before
/// reading, so a half-written file is rarely read. A half-written read is harmless anyway: it
/// fails to parse and the next event reads the finished file.
const SETTLE: Duration = Duration::from_millis(25);

/// A re-read even without events: a safety net for file systems where notify misses changes
/// (network mounts, a folder replaced wholesale).
const RECHECK: Duration = Duration::from_secs(30);

/// The provider task: runs until aborted or the proxy is gone.
pub async fn run(path: PathBuf, mut sink: Sink) {
    let (events_tx, mut events) = mpsc::channel::<()>(1);
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    // Kept alive for the task's lifetime: dropping the watcher stops the events.
    let _watcher = loop {
        match watch(&path, events_tx.clone()) {
            Ok(watcher) => break watcher,
            Err(error) => {
                sink.error(&error);
                tokio::time::sleep(backoff.next_delay()).await;
                if !sink.is_open() {
                    return;
                }
            }
        }
    };
    let mut last_read = LastRead::default();
    loop {
        if !read_and_publish(&path, &mut sink, &mut last_read).await {
            return;
        }
        tokio::select! {
            event = events.recv() => {
                if event.is_none() {
                    return;
                }
                tokio::time::sleep(SETTLE).await;
                while events.try_recv().is_ok() {}
            }
            () = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// Watches `path`'s folder and signals `events` (coalesced: a full channel already means "look
/// again") for any change that names the file.
fn watch(path: &Path, events: mpsc::Sender<()>) -> Result<RecommendedWatcher, String> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name: Option<OsString> = path.file_name().map(ToOwned::to_owned);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let relevant = match &event {
            Ok(event) => {
                event.paths.is_empty()
                    || event
                        .paths
                        .iter()
                        .any(|p| p.file_name().map(ToOwned::to_owned) == name)
            }
            // An overflowed or failed watch: re-read to be safe.
            Err(_) => true,
        };
        if relevant {
            let _ = events.try_send(());
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", folder.display()))?;
    watcher
        .watch(&folder, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", folder.display()))?;
    Ok(watcher)
}

/// What the task last saw, so an unchanged file is neither re-parsed nor re-reported.
#[derive(Default)]
struct LastRead {
    bytes: Option<Vec<u8>>,
    /// The last read failed (already counted as an error).
    unreadable: bool,
}

/// Reads the file and publishes it when its bytes changed since the last read. Returns `false`
/// once the proxy is gone.
async fn read_and_publish(path: &Path, sink: &mut Sink, last_read: &mut LastRead) -> bool {
    let bytes = match tokio::fs::read(path).await {
        Ok(bytes) => bytes,
        Err(error) => {
            // Counted once per failure, not on every recheck while it lasts.
            if !last_read.unreadable {
                sink.error(&format!("cannot read {}: {error}", path.display()));
            }
            last_read.unreadable = true;
            last_read.bytes = None;
            return sink.is_open();
        }
    };
    last_read.unreadable = false;
    if last_read.bytes.as_deref() == Some(bytes.as_slice()) {
        return sink.is_open();
    }
    let parsed = parse_endpoint_list(&bytes);
    last_read.bytes = Some(bytes);
    match parsed {
        Ok(endpoints) => sink.publish(endpoints).await,
        Err(error) => {
            sink.error(&format!("{}: {error}", path.display()));
            sink.is_open()
        }
    }
}
