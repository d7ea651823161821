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
//! Scale (docs/discovery-scale.md): the task keeps what the watch reported in a [`KeySet`]
//! (by key and by address), so an event costs O(log n) and the published list comes out in
//! address order without a sort. The watch stream is read by a task of its own, so changes that
//! arrive while a snapshot is being built are applied together and published as one: a burst
//! of a thousand puts costs a few snapshot builds, not a thousand. The snapshot build reuses
//! the cluster's previous snapshot (`ClusterSnapshot::build_after`).
//!
//! Liveness: a watch that stays silent for `watch_timeout` (default 30 s) may be healthy (nothing
//! changed) or dead without a word (etcd black-holed behind a firewall, a half-open connection).
//! The task then ranges the prefix once, with the unary call's timeout: no answer counts as a
//! failure (`switchyard_discovery_errors_total`, logged) and the task reconnects with backoff and
//! lists again, keeping the last good set meanwhile; an answer that differs from what the watch
//! reported means the watch missed changes, so the task publishes the listing and watches again
//! from there at once; an equal answer just keeps watching.

use std::collections::BTreeMap;
use std::net::SocketAddr;
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
) -> Result<(i64, KeySet), EtcdError> {
    let (revision, kvs) = client.range_prefix(prefix).await?;
    let mut keys = KeySet::default();
    for (key, value) in kvs {
        if let Some(endpoint) = parse_value(&key, &value, sink) {
            keys.insert(key, endpoint);
        }
    }
    sink.publish(keys.endpoints()).await;
    Ok((revision, keys))
}

/// What the watch has reported so far: every key's endpoint, and the same by address, so a
/// change is applied where it belongs (O(log n)) and the published list comes out in address
/// order without sorting (`Sink::publish` then finds it sorted in one pass).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct KeySet {
    /// Key -> its endpoint's address.
    keys: BTreeMap<String, SocketAddr>,
    /// Address -> the keys naming it, with their endpoints. Two keys may name one address; the
    /// first key's entry is the endpoint, as when a list is deduplicated in key order.
    by_address: BTreeMap<SocketAddr, BTreeMap<String, StaticEndpoint>>,
}

impl KeySet {
    /// Sets `key`'s endpoint (a put).
    pub(crate) fn insert(&mut self, key: String, endpoint: StaticEndpoint) {
        self.remove(&key);
        self.keys.insert(key.clone(), endpoint.address);
        self.by_address
            .entry(endpoint.address)
            .or_default()
            .insert(key, endpoint);
    }

    /// Forgets `key` (a delete).
    pub(crate) fn remove(&mut self, key: &str) {
        let Some(address) = self.keys.remove(key) else {
            return;
        };
        if let Some(named) = self.by_address.get_mut(&address) {
            named.remove(key);
            if named.is_empty() {
                self.by_address.remove(&address);
            }
        }
    }

    /// The endpoints, one per address, in address order.
    pub(crate) fn endpoints(&self) -> Vec<StaticEndpoint> {
        self.by_address
            .values()
            .filter_map(|named| named.values().next().cloned())
            .collect()
    }

    /// Whether `listed` (key -> endpoint, as a range parses) holds exactly these keys.
    fn matches(&self, listed: &BTreeMap<String, StaticEndpoint>) -> bool {
        listed.len() == self.keys.len()
            && listed.iter().all(|(key, endpoint)| {
                self.by_address
                    .get(&endpoint.address)
                    .and_then(|named| named.get(key))
                    == Some(endpoint)
            })
    }
}

/// Most watch messages applied into one publish: a bound on the work between two publishes,
/// so a flood of changes still goes live in steps.
const MAX_COALESCED: usize = 1024;

/// Watch messages read ahead while a publish builds its snapshot (the reader task's channel).
const READ_AHEAD: usize = 256;

async fn watch(watcher: &Watcher, from: i64, mut keys: KeySet, sink: &mut Sink) -> WatchEnd {
    let (client, prefix, silence) = (&watcher.client, &watcher.prefix, watcher.watch_timeout);
    let stream = match client.watch_prefix(prefix, from).await {
        Ok(stream) => stream,
        Err(error) => return WatchEnd::Relist(error.to_string()),
    };
    // The stream is read by a task of its own, so the messages that arrive while a publish is
    // building its snapshot are waiting here when it is done, and all of them are applied
    // before the next publish: a burst of changes costs one build, not one per message.
    let (tx, mut messages) = tokio::sync::mpsc::channel(READ_AHEAD);
    let _reader = AbortOnDrop(tokio::spawn(read(stream, tx)));
    loop {
        let next = match tokio::time::timeout(silence, messages.recv()).await {
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
        let mut message = match next {
            Some(Ok(Some(message))) => message,
            // The reader ended without a word only if it was aborted: treat as closed.
            None | Some(Ok(None)) => return WatchEnd::Relist("etcd closed the watch".to_owned()),
            Some(Err(error)) => return WatchEnd::Relist(error.to_string()),
        };
        let mut changed = false;
        let mut end = None;
        for _ in 0..MAX_COALESCED {
            match message {
                WatchMessage::Created => {}
                // A progress notification is an empty list: nothing to publish.
                WatchMessage::Events(events) if events.is_empty() => {}
                WatchMessage::Events(events) => {
                    changed = true;
                    apply(&mut keys, events, sink);
                }
                WatchMessage::Compacted(revision) => {
                    end = Some(WatchEnd::Compacted(format!(
                        "watch revision {from} compacted (oldest kept: {revision}); listing again"
                    )));
                    break;
                }
                WatchMessage::Canceled(reason) => {
                    end = Some(WatchEnd::Relist(format!("watch canceled: {reason}")));
                    break;
                }
            }
            message = match messages.try_recv() {
                Ok(Ok(Some(next))) => next,
                Ok(Ok(None)) => {
                    end = Some(WatchEnd::Relist("etcd closed the watch".to_owned()));
                    break;
                }
                Ok(Err(error)) => {
                    end = Some(WatchEnd::Relist(error.to_string()));
                    break;
                }
                // Nothing more read yet (or the reader is gone, which the next `recv` sees).
                Err(_) => break,
            };
        }
        // What arrived before the end is published first: it happened.
        if changed && !sink.publish(keys.endpoints()).await {
            return WatchEnd::Closed;
        }
        if let Some(end) = end {
            return end;
        }
    }
}

/// Applies one message's events to `keys`, in revision order.
fn apply(keys: &mut KeySet, events: Vec<WatchEvent>, sink: &Sink) {
    for event in events {
        match event {
            WatchEvent::Put { key, value } => {
                // A bad value keeps the key's last good endpoint, like every other discovery
                // error.
                if let Some(endpoint) = parse_value(&key, &value, sink) {
                    keys.insert(key, endpoint);
                }
            }
            WatchEvent::Delete { key } => keys.remove(&key),
        }
    }
}

/// What the reader task hands on: a message, the stream's end (`Ok(None)`), or its error.
type Read = Result<Option<WatchMessage>, EtcdError>;

/// The reader task: forwards the stream's messages until it ends, fails or nobody listens.
async fn read(mut stream: super::etcd_api::WatchStream, tx: tokio::sync::mpsc::Sender<Read>) {
    loop {
        let next = stream.next().await;
        let last = !matches!(next, Ok(Some(_)));
        if tx.send(next).await.is_err() || last {
            return;
        }
    }
}

/// Aborts the task when dropped: the reader goes with the watch that started it, however the
/// watch ends (returned, or its provider task aborted).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The silence check: ranges the prefix (bounded by the unary call timeout) and says whether it
/// holds exactly what the watch reported. Values that do not parse are left out on both sides
/// (the watch skipped them too), without counting them again.
async fn check(client: &EtcdClient, prefix: &str, keys: &KeySet) -> Result<bool, EtcdError> {
    let (_, kvs) = client.range_prefix(prefix).await?;
    let listed: BTreeMap<String, StaticEndpoint> = kvs
        .into_iter()
        .filter_map(|(key, value)| {
            let value = serde_json::from_slice(&value).ok()?;
            Some((key, parse_endpoint(&value).ok()?))
        })
        .collect();
    Ok(keys.matches(&listed))
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
        /// The watch answers "created", then this many messages of one put each, all at once,
        /// and ends.
        Burst(u16),
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
                        (_, Mode::Burst(n)) => {
                            watches.fetch_add(1, Ordering::SeqCst);
                            let mut body = r#"{"result":{"created":true}}"#.to_owned();
                            for port in 1..=n {
                                let key =
                                    super::super::base64::b64(format!("/s/{port}").as_bytes());
                                let value = super::super::base64::b64(
                                    format!("\"127.0.0.1:{port}\"").as_bytes(),
                                );
                                body += &format!(
                                    r#"{{"result":{{"events":[{{"kv":{{"key":"{key}","value":"{value}"}}}}]}}}}"#
                                );
                            }
                            Full::new(Bytes::from(body)).boxed()
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

    /// One listener, one route, cluster `c` discovered from etcd at `url` under `/s/`.
    fn config(url: &str) -> crate::config::Config {
        let text = format!(
            "[[listeners]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\nlistener = \"l\"\ncluster = \"c\"\n\n\
             [clusters.c]\ndiscovery = {{ etcd = {{ endpoints = [\"{url}\"], prefix = \"/s/\" }} }}\n"
        );
        crate::config::parse(&text, Path::new("t.toml")).expect("config")
    }

    /// Runs the provider of cluster `c` against `url` with `watch_timeout` and a backoff far
    /// longer than any test's deadline, so only an immediate re-list can pass.
    fn provider(url: &str, watch_timeout: Duration) -> (Arc<Shared>, tokio::task::JoinHandle<()>) {
        let config = config(url);
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
    async fn a_burst_of_watch_messages_is_published_in_a_few_snapshots() {
        let ranges = Arc::new(AtomicUsize::new(0));
        let watches = Arc::new(AtomicUsize::new(0));
        let url = fake_gateway(Mode::Burst(500), ranges, watches).await;
        let config = config(&url);
        let source = config.clusters["c"].endpoints.clone();
        let shared = Arc::new(Shared::new(config));
        let mut sink = Sink::new(Arc::downgrade(&shared), "c", source);
        let watcher = Watcher {
            client: EtcdClient::new(vec![url.clone()]),
            prefix: "/s/".to_owned(),
            watch_timeout: Duration::from_secs(60),
        };
        let end = watch(&watcher, 1, KeySet::default(), &mut sink).await;
        assert!(matches!(end, WatchEnd::Relist(_)), "the body ended");
        let live = shared.snapshot().cluster("c").map(|c| c.endpoints().len());
        assert_eq!(live, Some(500), "every put is live");
        // One publish per message would be 500; messages that arrive while a snapshot builds
        // wait for it and go out together.
        assert!(sink.publishes() <= 10, "{} publishes", sink.publishes());
    }

    #[test]
    fn key_sets_list_one_endpoint_per_address_in_address_order() {
        let endpoint = |port: u16, weight: u32| StaticEndpoint {
            address: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
            zone: None,
        };
        let mut keys = KeySet::default();
        keys.insert("/s/b".into(), endpoint(2, 1));
        keys.insert("/s/a".into(), endpoint(3, 1));
        // Two keys for one address: the first key's entry counts, as a list deduplicated in
        // key order would have it.
        keys.insert("/s/c".into(), endpoint(2, 5));
        keys.insert("/s/0".into(), endpoint(2, 7));
        let listed = keys.endpoints();
        assert_eq!(listed, [endpoint(2, 7), endpoint(3, 1)]);
        keys.remove("/s/0");
        assert_eq!(keys.endpoints(), [endpoint(2, 1), endpoint(3, 1)]);
        // A key moving to another address leaves the old one.
        keys.insert("/s/b".into(), endpoint(4, 1));
        assert_eq!(
            keys.endpoints(),
            [endpoint(2, 5), endpoint(3, 1), endpoint(4, 1)]
        );
        keys.remove("/s/c");
        keys.remove("/s/missing");
        assert_eq!(keys.endpoints(), [endpoint(3, 1), endpoint(4, 1)]);
        let same: BTreeMap<String, StaticEndpoint> = [
            ("/s/a".into(), endpoint(3, 1)),
            ("/s/b".into(), endpoint(4, 1)),
        ]
        .into();
        assert!(keys.matches(&same));
        let other: BTreeMap<String, StaticEndpoint> = [("/s/a".into(), endpoint(3, 1))].into();
        assert!(!keys.matches(&other));
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
