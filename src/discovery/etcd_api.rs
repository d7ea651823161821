//! A small etcd v3 client over etcd's JSON gateway (`POST /v3/kv/range`, `/v3/watch`,
//! `/v3/lease/grant`, …) with hyper: no gRPC, no code generation, so the default build needs
//! nothing but Rust and a C compiler. Keys and values travel base64-encoded and 64-bit integers
//! as JSON strings, as the gateway does.
//!
//! Only plain `http://` endpoints are spoken; several endpoints are tried in turn, starting
//! with the one that answered last.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use thiserror::Error;

use super::base64::{b64, unb64};

/// How long a unary call (range, put, lease calls) may take before the endpoint counts as down.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle time before TCP keepalive probes start on etcd connections.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Why an etcd call failed.
#[derive(Debug, Error)]
pub enum EtcdError {
    /// No endpoint could be reached (connect failure, reset, timeout) — worth a retry later.
    #[error("etcd unreachable: {0}")]
    Unreachable(String),
    /// etcd answered with an error or something that is not the gateway's JSON.
    #[error("etcd error: {0}")]
    Protocol(String),
}

/// One client for a list of etcd endpoints (`http://host:port`).
#[derive(Debug)]
pub struct EtcdClient {
    urls: Vec<String>,
    /// Index of the endpoint to try first: the last one that answered.
    preferred: AtomicUsize,
    http: Client<HttpConnector, Full<Bytes>>,
}

/// A change seen by a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent {
    /// The key was created or changed.
    Put { key: String, value: Vec<u8> },
    /// The key was deleted (also what a lease expiry looks like).
    Delete { key: String },
}

/// One message of a watch stream.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchMessage {
    /// The watch is registered; events follow.
    Created,
    /// Changes, in revision order.
    Events(Vec<WatchEvent>),
    /// The start revision was compacted away: the watcher must re-list. Holds the oldest
    /// revision still available.
    Compacted(i64),
    /// etcd ended the watch for another reason.
    Canceled(String),
}

/// An open watch: a long HTTP response of concatenated JSON messages.
#[derive(Debug)]
pub struct WatchStream {
    body: Incoming,
    buf: Vec<u8>,
}

impl EtcdClient {
    /// A client for `urls`; connects lazily.
    pub fn new(urls: Vec<String>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CALL_TIMEOUT));
        connector.set_nodelay(true);
        // A watch is one long-lived connection: keepalive probes let the kernel notice a peer
        // that vanished without a FIN (the watch's silence check covers a live but mute one).
        connector.set_keepalive(Some(TCP_KEEPALIVE));
        Self {
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            preferred: AtomicUsize::new(0),
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Every key under `prefix` with its value, and the store's revision at that moment.
    pub async fn range_prefix(
        &self,
        prefix: &str,
    ) -> Result<(i64, Vec<(String, Vec<u8>)>), EtcdError> {
        let body = json!({ "key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix)) });
        let answer = self.call("/v3/kv/range", body).await?;
        let revision = int(&answer["header"]["revision"]).unwrap_or(0);
        let mut kvs = Vec::new();
        for kv in answer["kvs"].as_array().into_iter().flatten() {
            kvs.push((text(&kv["key"])?, bytes(&kv["value"])?));
        }
        Ok((revision, kvs))
    }

    /// Opens a watch on every key under `prefix`, from `start_revision` on.
    pub async fn watch_prefix(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<WatchStream, EtcdError> {
        let body = json!({ "create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": start_revision.to_string(),
            // Asks etcd for its periodic progress messages too: cheap, and on an etcd run with a
            // short `--experimental-watch-progress-notify-interval` they keep a quiet watch from
            // ever reaching the silence check.
            "progress_notify": true,
        }});
        let response = tokio::time::timeout(CALL_TIMEOUT, self.send("/v3/watch", &body))
            .await
            .map_err(|_| EtcdError::Unreachable("watch: no answer".to_owned()))??;
        Ok(WatchStream {
            body: response.into_body(),
            buf: Vec::new(),
        })
    }

    /// Grants a lease of `ttl_secs` seconds; returns its id.
    pub async fn grant(&self, ttl_secs: i64) -> Result<i64, EtcdError> {
        let answer = self
            .call("/v3/lease/grant", json!({ "TTL": ttl_secs.to_string() }))
            .await?;
        int(&answer["ID"]).ok_or_else(|| EtcdError::Protocol(format!("lease grant: {answer}")))
    }

    /// Renews lease `id` once; returns the TTL left (0 or less: the lease is gone).
    pub async fn keepalive(&self, id: i64) -> Result<i64, EtcdError> {
        let answer = self
            .call("/v3/lease/keepalive", json!({ "ID": id.to_string() }))
            .await?;
        Ok(int(&answer["result"]["TTL"]).unwrap_or(0))
    }

    /// Revokes lease `id`, deleting every key attached to it.
    pub async fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", json!({ "ID": id.to_string() }))
            .await
            .map(drop)
    }

    /// Puts `key` = `value`, attached to `lease` when given.
    pub async fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<(), EtcdError> {
        let mut body = json!({ "key": b64(key.as_bytes()), "value": b64(value) });
        if let Some(lease) = lease {
            body["lease"] = Value::String(lease.to_string());
        }
        self.call("/v3/kv/put", body).await.map(drop)
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        self.call("/v3/kv/deleterange", json!({ "key": b64(key.as_bytes()) }))
            .await
            .map(drop)
    }

    /// A unary call: the whole answer as JSON, with the gateway's errors turned into `Err`.
    async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let response = tokio::time::timeout(CALL_TIMEOUT, async {
            let response = self.send(path, &body).await?;
            response
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|e| EtcdError::Unreachable(format!("{path}: {e}")))
        })
        .await
        .map_err(|_| EtcdError::Unreachable(format!("{path}: no answer")))??;
        let value: Value = serde_json::from_slice(&response)
            .map_err(|e| EtcdError::Protocol(format!("{path}: not JSON: {e}")))?;
        gateway_error(&value).map_or(Ok(value), Err)
    }

    /// Sends `body` to the first endpoint that answers; returns its response (status checked
    /// by the body: the gateway reports errors as JSON).
    async fn send(&self, path: &str, body: &Value) -> Result<hyper::Response<Incoming>, EtcdError> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last = String::from("no etcd endpoints configured");
        for i in 0..self.urls.len() {
            let index = (first + i) % self.urls.len();
            let url = &self.urls[index];
            if !url.starts_with("http://") {
                last = format!("{url}: only http:// etcd endpoints are supported");
                continue;
            }
            let request = hyper::Request::post(format!("{url}{path}"))
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(|e| EtcdError::Protocol(format!("{url}{path}: {e}")))?;
            match self.http.request(request).await {
                Ok(response) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(e) => last = format!("{url}: {e}"),
            }
        }
        Err(EtcdError::Unreachable(last))
    }
}

impl WatchStream {
    /// The next message, or `None` when etcd closed the stream.
    pub async fn next(&mut self) -> Result<Option<WatchMessage>, EtcdError> {
        loop {
            if let Some(message) = self.take_message()? {
                return parse_watch(&message).map(Some);
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(EtcdError::Unreachable(format!("watch: {e}"))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// Splits the first complete JSON value off the buffer, if there is one.
    fn take_message(&mut self) -> Result<Option<Value>, EtcdError> {
        let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
        match values.next() {
            Some(Ok(value)) => {
                let used = values.byte_offset();
                self.buf.drain(..used);
                Ok(Some(value))
            }
            Some(Err(e)) if e.is_eof() => Ok(None),
            None => Ok(None),
            Some(Err(e)) => Err(EtcdError::Protocol(format!("watch: not JSON: {e}"))),
        }
    }
}

fn parse_watch(message: &Value) -> Result<WatchMessage, EtcdError> {
    if let Some(error) = gateway_error(message) {
        return Err(error);
    }
    let result = &message["result"];
    if let Some(compacted) = int(&result["compact_revision"]).filter(|&r| r > 0) {
        return Ok(WatchMessage::Compacted(compacted));
    }
    if result["canceled"].as_bool() == Some(true) {
        let reason = result["cancel_reason"]
            .as_str()
            .unwrap_or("canceled by etcd");
        return Ok(WatchMessage::Canceled(reason.to_owned()));
    }
    let mut events = Vec::new();
    for event in result["events"].as_array().into_iter().flatten() {
        let key = text(&event["kv"]["key"])?;
        events.push(match event["type"].as_str() {
            Some("DELETE") => WatchEvent::Delete { key },
            _ => WatchEvent::Put {
                key,
                value: bytes(&event["kv"]["value"])?,
            },
        });
    }
    if events.is_empty() && result["created"].as_bool() == Some(true) {
        return Ok(WatchMessage::Created);
    }
    Ok(WatchMessage::Events(events))
}

/// The gateway's error object (`{"error": …}` in streams, `{"code", "message"}` in unary
/// answers), if `value` is one.
fn gateway_error(value: &Value) -> Option<EtcdError> {
    let error = match value.get("error") {
        Some(Value::String(message)) => return Some(EtcdError::Protocol(message.clone())),
        Some(error) => error,
        None => value,
    };
    let message = error.get("message")?.as_str().unwrap_or("unknown error");
    Some(EtcdError::Protocol(message.to_owned()))
}

/// The end of the key range holding every key that starts with `prefix` (etcd's
/// "prefix + 1": the last byte below 0xff incremented, the rest dropped).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix is empty): the range runs to the end of the keyspace.
    vec![0]
}

/// A 64-bit integer that the gateway sends as a string (or, sometimes, a number).
fn int(value: &Value) -> Option<i64> {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| value.as_i64())
}

fn text(value: &Value) -> Result<String, EtcdError> {
    String::from_utf8(bytes(value)?).map_err(|_| EtcdError::Protocol("key is not UTF-8".to_owned()))
}

fn bytes(value: &Value) -> Result<Vec<u8>, EtcdError> {
    // An absent value is an empty one: the gateway omits empty fields.
    let encoded = value.as_str().unwrap_or("");
    unb64(encoded).ok_or_else(|| EtcdError::Protocol(format!("{encoded:?} is not base64")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end("/a/"), b"/a0");
        assert_eq!(prefix_end(""), [0]);
    }

    #[test]
    fn watch_messages_parse() {
        let created = json!({"result": {"header": {"revision": "3"}, "created": true}});
        assert_eq!(parse_watch(&created).ok(), Some(WatchMessage::Created));
        let events = json!({"result": {"events": [
            {"kv": {"key": b64(b"/s/a"), "value": b64(b"x"), "mod_revision": "4"}},
            {"type": "DELETE", "kv": {"key": b64(b"/s/b"), "mod_revision": "5"}}
        ]}});
        assert_eq!(
            parse_watch(&events).ok(),
            Some(WatchMessage::Events(vec![
                WatchEvent::Put {
                    key: "/s/a".into(),
                    value: b"x".to_vec()
                },
                WatchEvent::Delete { key: "/s/b".into() },
            ]))
        );
        let compacted = json!({"result": {"canceled": true, "compact_revision": "9"}});
        assert_eq!(
            parse_watch(&compacted).ok(),
            Some(WatchMessage::Compacted(9))
        );
        assert!(parse_watch(&json!({"error": {"message": "boom"}})).is_err());
        let unary = json!({"error": "lease not found", "message": "lease not found", "code": 5});
        assert!(gateway_error(&unary).is_some());
        assert!(gateway_error(&json!({"header": {}, "ID": "1"})).is_none());
    }
}
