//! `switchyard register --etcd URL --service NAME --address ADDR [--ttl 10s]`: announces a local
//! service in etcd for every sidecar whose cluster watches `/services/NAME/`.
//!
//! The key `PREFIX/NAME/ADDR` is attached to a lease of `ttl`, renewed every third of it: if this
//! process dies without a word, etcd deletes the key once the lease runs out, so a crashed
//! instance leaves the fleet within one TTL. On SIGINT/SIGTERM the lease is revoked, which
//! deletes the key at once. If the lease is lost anyway (etcd restarted from an old snapshot, a
//! partition longer than the TTL), a new lease is granted and the key written again.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;

use super::etcd_api::{EtcdClient, EtcdError};
use super::Backoff;

/// What `register` announces, and where.
#[derive(Debug, Clone)]
pub struct Registration {
    /// etcd endpoints (`http://host:port`).
    pub etcd: Vec<String>,
    /// The key prefix clusters watch, e.g. `/services/`; the service name follows it.
    pub prefix: String,
    /// The service name: the key is `{prefix}{service}/{address}`.
    pub service: String,
    /// The address sidecars connect to.
    pub address: SocketAddr,
    /// The endpoint's weight (1 unless given).
    pub weight: u32,
    /// The endpoint's zone, if any.
    pub zone: Option<String>,
    /// The lease TTL: how long the key outlives this process if it dies without revoking.
    pub ttl: Duration,
}

impl Registration {
    /// The etcd key this registration writes.
    pub fn key(&self) -> String {
        let prefix = self.prefix.trim_end_matches('/');
        format!("{prefix}/{}/{}", self.service, self.address)
    }

    /// The key's value: the endpoint entry clusters parse.
    pub fn value(&self) -> Vec<u8> {
        let mut value = json!({ "address": self.address.to_string(), "weight": self.weight });
        if let Some(zone) = &self.zone {
            value["zone"] = json!(zone);
        }
        value.to_string().into_bytes()
    }
}

/// Keeps the registration alive until `shutdown` completes, then revokes it. Returns an error
/// only if the final revoke fails (the key then expires with its lease).
pub async fn run(
    registration: Registration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), EtcdError> {
    let client = EtcdClient::new(registration.etcd.clone());
    // etcd counts TTLs in whole seconds.
    let ttl_secs = i64::try_from(registration.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
    let renew_every = (registration.ttl / 3).max(Duration::from_millis(200));
    let key = registration.key();
    let value = registration.value();
    let mut lease: Option<i64> = None;
    let mut backoff = Backoff::new(
        Duration::from_millis(200),
        renew_every.max(Duration::from_secs(1)),
    );
    tokio::pin!(shutdown);
    loop {
        let wait = match keep(&client, &mut lease, ttl_secs, &key, &value).await {
            Ok(()) => {
                backoff.reset();
                renew_every
            }
            Err(error) => {
                tracing::warn!(%key, %error, "registration not renewed; retrying");
                backoff.next_delay()
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    match lease {
        Some(id) => {
            client.revoke(id).await?;
            tracing::info!(%key, "deregistered (lease revoked, key deleted)");
        }
        None => tracing::info!(%key, "never registered; nothing to remove"),
    }
    Ok(())
}

/// One round: renew the lease if there is one; grant a new one and write the key if not (or if
/// it expired).
async fn keep(
    client: &EtcdClient,
    lease: &mut Option<i64>,
    ttl_secs: i64,
    key: &str,
    value: &[u8],
) -> Result<(), EtcdError> {
    if let Some(id) = *lease {
        if client.keepalive(id).await? > 0 {
            return Ok(());
        }
        tracing::warn!(%key, lease = id, "lease expired; registering again");
        *lease = None;
    }
    let id = client.grant(ttl_secs).await?;
    if let Err(error) = client.put(key, value, Some(id)).await {
        // Don't leave an empty lease behind; it would expire anyway.
        let _ = client.revoke(id).await;
        return Err(error);
    }
    *lease = Some(id);
    tracing::info!(%key, lease = id, ttl_secs, "registered {key}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_and_value_follow_the_cluster_format() {
        let r = Registration {
            etcd: vec![],
            prefix: "/services/".into(),
            service: "orders".into(),
            address: "127.0.0.1:9001".parse().expect("literal"),
            weight: 2,
            zone: Some("a".into()),
            ttl: Duration::from_secs(10),
        };
        assert_eq!(r.key(), "/services/orders/127.0.0.1:9001");
        let value: serde_json::Value = serde_json::from_slice(&r.value()).expect("json");
        let endpoint = super::super::parse_endpoint(&value).expect("parses as an endpoint");
        assert_eq!(endpoint.weight, 2);
        assert_eq!(endpoint.zone.as_deref(), Some("a"));
    }
}
