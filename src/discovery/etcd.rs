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
//!
//! Liveness: a watch that stays silent for `watch_timeout` (default 30 s) may be healthy (nothing
//! changed) or dead without a word (etcd black-holed behind a firewall, a half-open connection).
//! The task then ranges the prefix once, with the unary call's timeout: no answer counts as a
//! failure (`switchyard_discovery_errors_total`, logged) and the task reconnects with backoff and
//! lists again, keeping the last good set meanwhile; an answer that differs from what the watch
//! reported means the watch missed changes, so the task publishes the listing and watches again
//! from there at once; an equal answer just keeps watching.

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
    /// The silence check found changes the watch did not report: list again at once.
    Stale(String),
}

/// The provider task: runs until aborted or the proxy is gone.
pub async fn run(endpoints: Vec<String>, prefix: String, watch_timeout: Duration, sink: Sink) {
    let backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let watcher = Watcher {
        client: EtcdClient::new(endpoints),
        prefix,
        watch_timeout,
    };
    run_with(&watcher, sink, backoff).await;
}

/// What a provider task watches: the client, the prefix and the silence bound.
struct Watcher {
    client: EtcdClient,
    prefix: String,
    watch_timeout: Duration,
}

/// [`run`] with the reconnect backoff given (tests make it long to tell "at once" apart).
async fn run_with(watcher: &Watcher, mut sink: Sink, mut backoff: Backoff) {
    let (client, prefix) = (&watcher.client, watcher.prefix.as_str());
    // Set after a compaction: the next list runs at once, but only once in a row, so an etcd
    // that kept answering "compacted" could not spin this loop.
    let mut relist_now = false;
    loop {
        match list(client, prefix, &mut sink).await {
            Ok((revision, keys)) => {
                backoff.reset();
                match watch(watcher, revision + 1, keys, &mut sink).await {
                    WatchEnd::Closed => return,
                    WatchEnd::Compacted(reason) | WatchEnd::Stale(reason) if !relist_now => {
                        tracing::info!(cluster = sink.cluster(), "{reason}");
                        relist_now = true;
                        continue;
                    }
                    WatchEnd::Compacted(reason)
                    | WatchEnd::Stale(reason)
                    | WatchEnd::Relist(reason) => {
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
    sink.publish(keys.values().cloned().collect()).await;
    Ok((revision, keys))
}

async fn watch(
    watcher: &Watcher,
    from: i64,
    mut keys: BTreeMap<String, StaticEndpoint>,
    sink: &mut Sink,
) -> WatchEnd {
    let (client, prefix, silence) = (&watcher.client, &watcher.prefix, watcher.watch_timeout);
    let mut stream = match client.watch_prefix(prefix, from).await {
        Ok(stream) => stream,
        Err(error) => return WatchEnd::Relist(error.to_string()),
    };
    loop {
        let next = match tokio::time::timeout(silence, stream.next()).await {
            Ok(next) => next,
            Err(_) => match check(client, prefix, &keys).await {
                Ok(true) => continue,
                Ok(false) => {
                    return WatchEnd::Stale(format!(
                        "watch silent for {silence:?} while the prefix changed; listing again"
                    ))
                }
                Err(error) => {
                    return WatchEnd::Relist(format!(
                        "watch silent for {silence:?} and etcd did not answer a check: {error}"
                    ))
                }
            },
        };
        let message = match next {
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
                if !sink.publish(keys.values().cloned().collect()).await {
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

/// The silence check: ranges the prefix (bounded by the unary call timeout) and says whether it
/// holds exactly what the watch reported. Values that do not parse are left out on both sides
/// (the watch skipped them too), without counting them again.
async fn check(
    client: &EtcdClient,
    prefix: &str,
    keys: &BTreeMap<String, StaticEndpoint>,
) -> Result<bool, EtcdError> {
    let (_, kvs) = client.range_prefix(prefix).await?;
    let listed: BTreeMap<String, StaticEndpoint> = kvs
        .into_iter()
        .filter_map(|(key, value)| {
            let value = serde_json::from_slice(&value).ok()?;
            Some((key, parse_endpoint(&value).ok()?))
        })
        .collect();
    Ok(listed == *keys)
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
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Frame;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    use super::*;
    use crate::state::Shared;

    /// How the fake gateway answers watches.
    #[derive(Clone, Copy)]
    enum Mode {
        /// The first watch is canceled as compacted, later ones answer "created" and end.
        Compacting,
        /// Every watch answers "created" and then stays open and silent; ranges list a new
        /// address each time when `changing`, always the same one otherwise.
        Silent { changing: bool },
    }

    /// A body that sends one chunk and then never ends: a watch with nothing to report.
    struct Hanging(Option<Bytes>);

    impl hyper::body::Body for Hanging {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            match self.0.take() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None => Poll::Pending,
            }
        }
    }

    /// A fake JSON gateway answering as `mode` says; every range lists one key.
    async fn fake_gateway(
        mode: Mode,
        ranges: Arc<AtomicUsize>,
        watches: Arc<AtomicUsize>,
    ) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (ranges, watches) = (Arc::clone(&ranges), Arc::clone(&watches));
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let body = match (req.uri().path(), mode) {
                        ("/v3/kv/range", _) => {
                            let n = ranges.fetch_add(1, Ordering::SeqCst) + 1;
                            let port = match mode {
                                Mode::Silent { changing: false } => 1,
                                _ => n,
                            };
                            let value = super::super::base64::b64(
                                format!("\"127.0.0.1:{port}\"").as_bytes(),
                            );
                            Full::new(Bytes::from(format!(
                                r#"{{"header":{{"revision":"7"}},"kvs":[{{"key":"L3MvYQ==","value":"{value}"}}]}}"#
                            )))
                            .boxed()
                        }
                        (_, Mode::Silent { .. }) => {
                            watches.fetch_add(1, Ordering::SeqCst);
                            let created = r#"{"result":{"created":true}}"#;
                            Hanging(Some(Bytes::from(created))).boxed()
                        }
                        _ if watches.fetch_add(1, Ordering::SeqCst) == 0 => Full::new(Bytes::from(
                            r#"{"result":{"canceled":true,"compact_revision":"9"}}"#,
                        ))
                        .boxed(),
                        _ => Full::new(Bytes::from(r#"{"result":{"created":true}}"#)).boxed(),
                    };
                    async move { Ok::<_, Infallible>(hyper::Response::new(body)) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        url
    }

    /// Runs the provider of cluster `c` against `url` with `watch_timeout` and a backoff far
    /// longer than any test's deadline, so only an immediate re-list can pass.
    fn provider(url: &str, watch_timeout: Duration) -> (Arc<Shared>, tokio::task::JoinHandle<()>) {
        let text = format!(
            "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nlistener = \"l\"\ncluster = \"c\"\n\n\
             [clusters.c]\ndiscovery = {{ etcd = {{ endpoints = [\"{url}\"], prefix = \"/s/\" }} }}\n"
        );
        let config = crate::config::parse(&text, Path::new("t.toml")).expect("config");
        let source = config.clusters["c"].endpoints.clone();
        let shared = Arc::new(Shared::new(config));
        let sink = Sink::new(Arc::downgrade(&shared), "c", source);
        let backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let watcher = Watcher {
            client: EtcdClient::new(vec![url.to_owned()]),
            prefix: "/s/".to_owned(),
            watch_timeout,
        };
        let task = tokio::spawn(async move { run_with(&watcher, sink, backoff).await });
        (shared, task)
    }

    fn port(shared: &Shared) -> Option<u16> {
        shared
            .snapshot()
            .cluster("c")
            .and_then(|c| c.endpoints().first().map(|e| e.address().port()))
    }

    /// Polls `done` every 5 ms for up to 10 s; the caller asserts what it waited for.
    async fn wait_until(done: impl Fn() -> bool) {
        let started = std::time::Instant::now();
        while !done() && started.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn wait_for(count: &AtomicUsize, at_least: usize) {
        wait_until(|| count.load(Ordering::SeqCst) >= at_least).await;
    }

    /// The provider publishes a listing a moment after the gateway answered it: wait for the
    /// published port rather than race the counter the gateway bumps on arrival.
    async fn wait_for_port(shared: &Shared, at_least: u16) {
        wait_until(|| port(shared) >= Some(at_least)).await;
    }

    #[tokio::test]
    async fn a_compacted_watch_lists_again_at_once() {
        let ranges = Arc::new(AtomicUsize::new(0));
        let watches = Arc::new(AtomicUsize::new(0));
        let url = fake_gateway(Mode::Compacting, Arc::clone(&ranges), Arc::clone(&watches)).await;
        let (shared, task) = provider(&url, Duration::from_secs(60));
        wait_for(&ranges, 2).await;
        // The second list follows the compacted watch without waiting out the backoff.
        assert!(ranges.load(Ordering::SeqCst) >= 2);
        wait_for_port(&shared, 2).await;
        assert!(port(&shared) >= Some(2), "the re-list was published");
        task.abort();
    }

    #[tokio::test]
    async fn a_silent_watch_is_checked_and_kept_while_the_listing_agrees() {
        let ranges = Arc::new(AtomicUsize::new(0));
        let watches = Arc::new(AtomicUsize::new(0));
        let mode = Mode::Silent { changing: false };
        let url = fake_gateway(mode, Arc::clone(&ranges), Arc::clone(&watches)).await;
        let (shared, task) = provider(&url, Duration::from_millis(100));
        // The first list, then one check per silent period.
        wait_for(&ranges, 4).await;
        assert!(ranges.load(Ordering::SeqCst) >= 4);
        assert_eq!(watches.load(Ordering::SeqCst), 1, "the same watch goes on");
        assert_eq!(port(&shared), Some(1));
        task.abort();
    }

    #[tokio::test]
    async fn a_silent_watch_that_missed_changes_lists_again_at_once() {
        let ranges = Arc::new(AtomicUsize::new(0));
        let watches = Arc::new(AtomicUsize::new(0));
        let mode = Mode::Silent { changing: true };
        let url = fake_gateway(mode, Arc::clone(&ranges), Arc::clone(&watches)).await;
        let (shared, task) = provider(&url, Duration::from_millis(100));
        // List (1), check finds a change (2), list again without the backoff (3), new watch.
        wait_for(&watches, 2).await;
        assert_eq!(watches.load(Ordering::SeqCst), 2);
        wait_for_port(&shared, 3).await;
        assert!(port(&shared) >= Some(3), "the re-list was published");
        task.abort();
    }
}
