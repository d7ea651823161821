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
    /// The watch's start revision was compacted away: list again at once.
    Compacted(String),
    /// Start over with a fresh list after a backoff (cancellation, lost connection).
    Relist(String),
}

/// The provider task: runs until aborted or the proxy is gone.
pub async fn run(endpoints: Vec<String>, prefix: String, sink: Sink) {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    run_with(endpoints, prefix, sink, backoff).await;
}

/// [`run`] with the reconnect backoff given (tests make it long to tell "at once" apart).
async fn run_with(endpoints: Vec<String>, prefix: String, mut sink: Sink, mut backoff: Backoff) {
    let client = EtcdClient::new(endpoints);
    // Set after a compaction: the next list runs at once, but only once in a row, so an etcd
    // that kept answering "compacted" could not spin this loop.
    let mut relist_now = false;
    loop {
        match list(&client, &prefix, &mut sink).await {
            Ok((revision, keys)) => {
                backoff.reset();
                match watch(&client, &prefix, revision + 1, keys, &mut sink).await {
                    WatchEnd::Closed => return,
                    WatchEnd::Compacted(reason) if !relist_now => {
                        tracing::info!(cluster = sink.cluster(), "{reason}");
                        relist_now = true;
                        continue;
                    }
                    WatchEnd::Compacted(reason) | WatchEnd::Relist(reason) => {
                        sink.error(&reason);
                    }
                }
            }
            Err(error) => sink.error(&error),
        }
        relist_now = false;
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
                return WatchEnd::Compacted(format!(
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    use super::*;
    use crate::runtime::Shared;

    /// A fake JSON gateway: every range lists one key (the address changes with each call),
    /// the first watch answers "compacted", later ones "created" and end.
    async fn fake_gateway(ranges: Arc<AtomicUsize>, watches: Arc<AtomicUsize>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (ranges, watches) = (Arc::clone(&ranges), Arc::clone(&watches));
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = match req.uri().path() {
                        "/v3/kv/range" => {
                            let n = ranges.fetch_add(1, Ordering::SeqCst) + 1;
                            let value =
                                super::super::base64::b64(format!("\"127.0.0.1:{n}\"").as_bytes());
                            format!(
                                r#"{{"header":{{"revision":"7"}},"kvs":[{{"key":"L3MvYQ==","value":"{value}"}}]}}"#
                            )
                        }
                        _ if watches.fetch_add(1, Ordering::SeqCst) == 0 => {
                            r#"{"result":{"canceled":true,"compact_revision":"9"}}"#.to_owned()
                        }
                        _ => r#"{"result":{"created":true}}"#.to_owned(),
                    };
                    async move {
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        url
    }

    #[tokio::test]
    async fn a_compacted_watch_lists_again_at_once() {
        let ranges = Arc::new(AtomicUsize::new(0));
        let watches = Arc::new(AtomicUsize::new(0));
        let url = fake_gateway(Arc::clone(&ranges), Arc::clone(&watches)).await;
        let text = format!(
            "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nlistener = \"l\"\ncluster = \"c\"\n\n\
             [clusters.c]\ndiscovery = {{ etcd = {{ endpoints = [\"{url}\"], prefix = \"/s/\" }} }}\n"
        );
        let config = crate::config::parse(&text, Path::new("t.toml")).expect("config");
        let source = config.clusters["c"].endpoints.clone();
        let shared = Arc::new(Shared::new(config));
        let sink = Sink::new(Arc::downgrade(&shared), "c", source);
        // A backoff far longer than the test's deadline: only an immediate re-list passes.
        let backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let task = tokio::spawn(run_with(vec![url], "/s/".to_owned(), sink, backoff));
        let port = |shared: &Shared| {
            shared
                .snapshot()
                .cluster("c")
                .and_then(|c| c.endpoints().first().map(|e| e.address().port()))
        };
        let started = std::time::Instant::now();
        while ranges.load(Ordering::SeqCst) < 2 && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The second list follows the compacted watch without waiting out the backoff.
        assert!(ranges.load(Ordering::SeqCst) >= 2);
        assert!(port(&shared) >= Some(2), "the re-list was published");
        task.abort();
    }
}
