//! `discovery = { dns = "name:port" }` (A and AAAA records, every address on that port) and
//! `discovery = { srv = "_http._tcp.name" }` (SRV records: port and weight from each record),
//! via hickory-resolver.
//!
//! Refreshed when the answer expires: the next lookup runs at the records' TTL, with a floor of
//! 1 s (a TTL of 0 must not turn into a query loop) and a ceiling of `refresh` (so a long TTL
//! cannot hide a change forever). A failed lookup — timeout, SERVFAIL, NXDOMAIN, no records —
//! keeps the last good set and is retried with backoff from 1 s up to `refresh`.
//!
//! SRV priority: only the records of the lowest (most preferred) priority are used; the others
//! are backups, used when no preferred target resolves. An SRV weight of 0 counts as 1, since
//! our balancers have no "only when nothing else is left" weight.
//!
//! The name servers come from the system (`/etc/resolv.conf`), unless the environment variable
//! `SWITCHYARD_DNS_SERVER` names them (`"127.0.0.1:5353"`, comma-separated for several, UDP):
//! how tests point the resolver at their own server on 127.0.0.1, and how an operator can pin a
//! resolver without touching the host's configuration.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::TokioResolver;

use super::{Backoff, Sink};
use crate::config::{EndpointSource, StaticEndpoint};

/// The environment variable naming the DNS servers to use instead of the system's.
pub const SERVER_ENV: &str = "SWITCHYARD_DNS_SERVER";

/// The shortest wait between two lookups, whatever the TTL says.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// The provider task for a `Dns` or `Srv` source; runs until aborted or the proxy is gone.
pub async fn run(source: EndpointSource, mut sink: Sink) {
    let refresh = match &source {
        EndpointSource::Dns { refresh, .. } | EndpointSource::Srv { refresh, .. } => *refresh,
        _ => return,
    };
    let resolver = match resolver(refresh) {
        Ok(resolver) => resolver,
        Err(error) => {
            // Without a resolver nothing can ever be looked up; say so once and stay empty.
            sink.error(&error);
            return;
        }
    };
    let mut backoff = Backoff::new(MIN_REFRESH, refresh.max(MIN_REFRESH));
    loop {
        let wait = match lookup(&resolver, &source).await {
            Ok((endpoints, valid_until)) => {
                backoff.reset();
                if !sink.publish(endpoints).await {
                    return;
                }
                let ttl = valid_until.saturating_duration_since(Instant::now());
                ttl.clamp(MIN_REFRESH, refresh.max(MIN_REFRESH))
            }
            Err(error) => {
                sink.error(&error);
                backoff.next_delay()
            }
        };
        if !sink.is_open() {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

/// A resolver for one source. Its cache never holds an answer longer than `refresh`, and a
/// negative answer at most a second, so a retry after a failure really asks again.
fn resolver(refresh: Duration) -> Result<TokioResolver, String> {
    let mut builder = match std::env::var(SERVER_ENV) {
        Ok(servers) => {
            let mut group = Vec::new();
            for server in servers.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let addr: SocketAddr = server
                    .parse()
                    .map_err(|_| format!("{SERVER_ENV}: {server:?} is not IP:port"))?;
                group.push(NameServerConfig::new(addr, Protocol::Udp));
            }
            if group.is_empty() {
                return Err(format!("{SERVER_ENV} is set but names no server"));
            }
            let config = ResolverConfig::from_parts(None, Vec::new(), group);
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
        }
        Err(_) => TokioResolver::builder_tokio()
            .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?,
    };
    let options = builder.options_mut();
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.positive_max_ttl = Some(refresh);
    options.negative_max_ttl = Some(MIN_REFRESH);
    Ok(builder.build())
}

/// One lookup of `source`: the endpoints and when the answer expires.
async fn lookup(
    resolver: &TokioResolver,
    source: &EndpointSource,
) -> Result<(Vec<StaticEndpoint>, Instant), String> {
    match source {
        EndpointSource::Dns { name, port, .. } => {
            let answer = resolver
                .lookup_ip(name.as_str())
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            let endpoints = answer
                .iter()
                .map(|ip| endpoint(SocketAddr::new(ip, *port), 1));
            Ok((endpoints.collect(), answer.valid_until()))
        }
        EndpointSource::Srv { name, .. } => srv(resolver, name).await,
        _ => Err("not a DNS source".to_owned()),
    }
}

/// SRV lookup, then an address lookup per target, taking the most preferred priority that
/// yields any address.
async fn srv(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<StaticEndpoint>, Instant), String> {
    let answer = resolver
        .srv_lookup(name)
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let mut valid_until = answer.as_lookup().valid_until();
    let mut records: Vec<_> = answer
        .iter()
        .map(|r| (r.priority(), r.weight(), r.port(), r.target().clone()))
        .collect();
    records.sort_by_key(|r| r.0);
    let mut last_error = None;
    let mut priorities: Vec<u16> = records.iter().map(|r| r.0).collect();
    priorities.dedup();
    for priority in priorities {
        let mut endpoints = Vec::new();
        for (_, weight, port, target) in records.iter().filter(|r| r.0 == priority) {
            match resolver.lookup_ip(target.clone()).await {
                Ok(ips) => {
                    valid_until = valid_until.min(ips.valid_until());
                    let weight = u32::from(*weight).max(1);
                    endpoints.extend(
                        ips.iter()
                            .map(|ip| endpoint(SocketAddr::new(ip, *port), weight)),
                    );
                }
                Err(e) => last_error = Some(format!("{name}: target {target}: {e}")),
            }
        }
        if !endpoints.is_empty() {
            return Ok((endpoints, valid_until));
        }
    }
    Err(last_error.unwrap_or_else(|| format!("{name}: no SRV records")))
}

fn endpoint(address: SocketAddr, weight: u32) -> StaticEndpoint {
    StaticEndpoint {
        address,
        weight,
        zone: None,
    }
}
