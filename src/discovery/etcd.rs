//! `discovery = { etcd = { endpoints = ["http://127.0.0.1:2379"], prefix = "/services/orders/" } }`:
//! every key under the prefix is one endpoint, its value the JSON entry of a discovery file
//! (`"host:port"` or `{ "address", "weight", "zone" }`).
//!
//! The usual list-then-watch protocol (as Kubernetes informers do it): range the prefix, publish
//! it, then watch from the range's revision + 1 so no change between the two is missed. When the
//! watch breaks (etcd restarted, connection lost) the task reconnects with backoff (200 ms
//! doubling to 10 s) and lists again, since changes made while it was away are not replayed if
//! the revision was compacted meanwhile; a watch that etcd cancels as compacted re-lists at once.
//! Keys whose value does not parse are skipped and counted as errors; the rest still publish.

use std::collections::BTreeMap;
use std::time::Duration;

use super::etcd_api::{EtcdClient, EtcdError, WatchEvent, WatchMessage};
use super::{parse_endpoint, Backoff, Sink};
use crate::config::StaticEndpoint;

/// Why a watch ended.
enum WatchEnd {
    /// The proxy is gone: stop.
    Closed,
    /// Start over with a fresh list (compaction, cancellation, lost connection).
    Relist(String),
}

/// The provider task: runs until aborted or the proxy is gone.
pub async fn run(endpoints: Vec<String>, prefix: String, mut sink: Sink) {
    let client = EtcdClient::new(endpoints);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match list(&client, &prefix, &mut sink).await {
            Ok((revision, keys)) => {
                backoff.reset();
                match watch(&client, &prefix, revision + 1, keys, &mut sink).await {
                    WatchEnd::Closed => return,
                    WatchEnd::Relist(reason) => {
                        sink.error(&reason);
                    }
                }
            }
            Err(error) => sink.error(&error),
        }
        if !sink.is_open() {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Ranges the prefix and publishes what it holds; returns the revision and the key map the
/// watch continues from.
async fn list(
    client: &EtcdClient,
    prefix: &str,
    sink: &mut Sink,
) -> Result<(i64, BTreeMap<String, StaticEndpoint>), EtcdError> {
    let (revision, kvs) = client.range_prefix(prefix).await?;
    let mut keys = BTreeMap::new();
    for (key, value) in kvs {
        if let Some(endpoint) = parse_value(&key, &value, sink) {
            keys.insert(key, endpoint);
        }
    }
    sink.publish(keys.values().cloned().collect());
    Ok((revision, keys))
}

async fn watch(
    client: &EtcdClient,
    prefix: &str,
    from: i64,
    mut keys: BTreeMap<String, StaticEndpoint>,
    sink: &mut Sink,
) -> WatchEnd {
    let mut stream = match client.watch_prefix(prefix, from).await {
        Ok(stream) => stream,
        Err(error) => return WatchEnd::Relist(error.to_string()),
    };
    loop {
        let message = match stream.next().await {
            Ok(Some(message)) => message,
            Ok(None) => return WatchEnd::Relist("etcd closed the watch".to_owned()),
            Err(error) => return WatchEnd::Relist(error.to_string()),
        };
        match message {
            WatchMessage::Created => {}
            WatchMessage::Events(events) => {
                for event in events {
                    match event {
                        WatchEvent::Put { key, value } => {
                            // A bad value keeps the key's last good endpoint, like every
                            // other discovery error.
                            if let Some(endpoint) = parse_value(&key, &value, sink) {
                                keys.insert(key, endpoint);
                            }
                        }
                        WatchEvent::Delete { key } => {
                            keys.remove(&key);
                        }
                    }
                }
                if !sink.publish(keys.values().cloned().collect()) {
                    return WatchEnd::Closed;
                }
            }
            WatchMessage::Compacted(revision) => {
                return WatchEnd::Relist(format!(
                    "watch revision {from} compacted (oldest kept: {revision}); listing again"
                ))
            }
            WatchMessage::Canceled(reason) => {
                return WatchEnd::Relist(format!("watch canceled: {reason}"))
            }
        }
    }
}

fn parse_value(key: &str, value: &[u8], sink: &Sink) -> Option<StaticEndpoint> {
    let parsed = serde_json::from_slice(value)
        .map_err(|e| format!("invalid JSON: {e}"))
        .and_then(|v| parse_endpoint(&v));
    match parsed {
        Ok(endpoint) => Some(endpoint),
        Err(error) => {
            sink.error(&format!("etcd key {key}: {error}"));
            None
        }
    }
}
