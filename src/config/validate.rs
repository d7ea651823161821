//! Raw model -> validated [`Config`]: every value typed, every reference checked, every error
//! reported (not just the first), each at the line:col of the offending value.
//!
//! Sections live in submodules (`route`, `cluster`); this file holds the entry point, the small
//! top-level sections and the cross-section checks (duplicate listen addresses).

mod cluster;
mod ctx;
mod discovery;
mod headers;
mod listener;
mod policy;
mod rate_limit;
mod route;
mod synthetic;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::ops::Range;

use toml::Spanned;

use super::defaults;
use super::error::{ConfigError, Locator};
use super::model::*;
use super::raw::*;
use ctx::Ctx;

/// Validates a parsed file. `loc` knows the file's path (for messages and relative paths).
pub(crate) fn validate(raw: RawConfig, loc: &Locator<'_>) -> Result<Config, Vec<ConfigError>> {
    let mut cx = Ctx::new(loc);
    // Every bound address with the span of its value, for the duplicate check at the end.
    let mut bound: Vec<(SocketAddr, Range<usize>, &'static str)> = Vec::new();

    let runtime = runtime(&mut cx, raw.runtime.as_ref());
    let admin = admin(&mut cx, raw.admin.as_ref(), &mut bound);
    let log = log(&mut cx, raw.log.as_ref());
    let metrics = MetricsConfig {
        max_endpoint_series: raw
            .metrics
            .as_ref()
            .and_then(|m| m.max_endpoint_series)
            .unwrap_or(defaults::metrics().max_endpoint_series),
    };
    let tracing = tracing(&mut cx, raw.tracing.as_ref());
    let listeners = listener::listeners(&mut cx, &raw.listeners, &mut bound);
    let clusters = cluster::clusters(&mut cx, &raw.clusters);
    let mut cluster_names: BTreeSet<String> = clusters.keys().cloned().collect();
    // A file route on the inbound listener may target a declared port's app (`inbound:PORT`),
    // the cluster `synthetic::add` makes once the config is valid.
    cluster_names.extend(synthetic::inbound_clusters(&listeners));
    let mut routes = route::routes(&mut cx, &raw.routes, &listeners, &cluster_names);
    cluster::unique_addresses(&mut cx, &raw.clusters, &clusters);
    let cache = raw.cache.as_ref().map(|c| cache(&mut cx, c));
    let mesh = raw.mesh.as_ref().and_then(|m| mesh(&mut cx, m, &mut bound));
    if raw.mesh.is_none() {
        mesh_discovery_without_mesh(&mut cx, &raw, &clusters);
        rate_limit::mesh_scope_without_mesh(&mut cx, &raw);
    }
    let limits = limits(&mut cx, raw.limits.as_ref());
    let identity = raw.identity.as_ref().and_then(|i| identity(&mut cx, i));
    if raw.identity.is_none() {
        listener::strict_needs_identity(&mut cx, &raw.listeners);
    }
    duplicate_addresses(&mut cx, &bound);

    let errors = cx.finish();
    if !errors.is_empty() {
        return Err(errors);
    }
    // Only on a valid config: the synthetic parts name listeners and clusters that exist.
    let mut clusters = clusters;
    synthetic::add(&listeners, &mut routes, &mut clusters);
    Ok(Config {
        source: loc.file().to_path_buf(),
        // Filled in by `config::parse`, which has the text.
        sha256: String::new(),
        runtime,
        admin,
        log,
        metrics,
        tracing,
        listeners,
        routes,
        clusters,
        cache,
        mesh,
        limits,
        identity,
    })
}

/// Only the mesh member (started by `[mesh]`) feeds `discovery = { mesh = ... }`: without it such
/// a cluster would stay empty forever with nothing said, so it is an error at the service name.
fn mesh_discovery_without_mesh(
    cx: &mut Ctx<'_>,
    raw: &RawConfig,
    clusters: &BTreeMap<String, ClusterConfig>,
) {
    for (name, cluster) in &raw.clusters {
        let validated = clusters.get(name.get_ref());
        if !validated.is_some_and(|c| matches!(c.endpoints, EndpointSource::Mesh(_))) {
            continue;
        }
        let service = cluster
            .get_ref()
            .discovery
            .as_ref()
            .and_then(|d| d.get_ref().mesh.as_ref());
        if let Some(service) = service {
            cx.err(
                service.span(),
                "discovery.mesh: needs a [mesh] section (nothing else feeds mesh discovery)",
            );
        }
    }
}

fn runtime(cx: &mut Ctx<'_>, raw: Option<&RawRuntime>) -> RuntimeConfig {
    let workers = match raw.and_then(|r| r.workers).unwrap_or(0) {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    RuntimeConfig {
        workers,
        shutdown_delay: cx.duration(
            raw.and_then(|r| r.shutdown_delay.as_ref()),
            "shutdown_delay",
            defaults::SHUTDOWN_DELAY,
        ),
        drain_timeout: cx.duration(
            raw.and_then(|r| r.drain_timeout.as_ref()),
            "drain_timeout",
            defaults::DRAIN_TIMEOUT,
        ),
        zone: raw
            .and_then(|r| r.zone.as_ref())
            .filter(|z| cx.non_empty(z, "zone"))
            .map(|z| z.get_ref().clone()),
    }
}

fn admin(
    cx: &mut Ctx<'_>,
    raw: Option<&RawAdmin>,
    bound: &mut Vec<(SocketAddr, Range<usize>, &'static str)>,
) -> AdminConfig {
    let mut admin = defaults::admin();
    let token_file = raw.and_then(|a| a.token_file.as_ref());
    if let Some(listen) = raw.and_then(|a| a.listen.as_ref()) {
        if let Some(addr) = cx.socket_addr(listen, "admin.listen") {
            admin.listen = addr;
            bound.push((addr, listen.span(), "admin.listen"));
            // Reachable from other hosts, the admin API (reload, purge, the whole config)
            // must not be open to anyone who can connect: refused rather than warned about,
            // since a warning in a log is read after the port has been found.
            if !addr.ip().is_loopback() && token_file.is_none() {
                cx.err(
                    listen.span(),
                    format!(
                        "admin.listen: {addr} is not a loopback address; set `token_file` \
                         (a bearer token every admin request must carry) to listen on it"
                    ),
                );
            }
        }
    }
    if let Some(file) = token_file {
        let path = cx.path(file.get_ref());
        match admin_token(&path) {
            Ok(token) => {
                admin.token = Some(token);
                admin.token_file = Some(path);
            }
            Err(reason) => cx.err(
                file.span(),
                format!("admin.token_file: {}: {reason}", path.display()),
            ),
        }
    }
    admin
}

/// Reads the admin bearer token: the file's content, whitespace-trimmed (a trailing newline is
/// what every editor and `echo` leave). Also used by a reload to notice a rotated token.
pub(crate) fn admin_token(path: &std::path::Path) -> Result<AdminToken, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err("holds no token".to_owned());
    }
    // It travels in an `Authorization` header: visible ASCII only (RFC 6750's b64token is a
    // subset), so a token that no client could send is refused at load, not at first use.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be visible ASCII without spaces".to_owned());
    }
    Ok(AdminToken::new(token))
}

fn log(cx: &mut Ctx<'_>, raw: Option<&RawLog>) -> LogConfig {
    let default = defaults::log();
    let Some(raw) = raw else { return default };
    LogConfig {
        format: cx.one_of(
            raw.format.as_ref(),
            "log.format",
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            default.format,
        ),
        access: raw.access.unwrap_or(default.access),
        access_sample: cx.fraction(
            raw.access_sample.as_ref(),
            "log.access_sample",
            default.access_sample,
        ),
    }
}

/// `[tracing]`: `otlp` must be an `http://host:port` URL (OTLP/HTTP; the exporter speaks plain
/// HTTP only, so `https` is refused rather than silently sent in clear).
fn tracing(cx: &mut Ctx<'_>, raw: Option<&RawTracing>) -> TracingConfig {
    let default = defaults::tracing();
    let Some(raw) = raw else { return default };
    let otlp = raw.otlp.as_ref().and_then(|url| {
        let parsed = super::otlp_traces_uri(url.get_ref());
        parsed
            .map_err(|e| cx.err(url.span(), format!("tracing.otlp: {e}")))
            .ok()
    });
    let service_name = match &raw.service_name {
        Some(name) if cx.non_empty(name, "tracing.service_name") => name.get_ref().clone(),
        _ => default.service_name,
    };
    TracingConfig {
        otlp,
        service_name,
        sample_ratio: cx.fraction(
            raw.sample_ratio.as_ref(),
            "tracing.sample_ratio",
            default.sample_ratio,
        ),
    }
}

fn cache(cx: &mut Ctx<'_>, raw: &RawCache) -> CacheConfig {
    let default = defaults::cache();
    let max_bytes = cx.size(raw.max_bytes.as_ref(), "cache.max_bytes", default.max_bytes);
    let max_object = cx.size(
        raw.max_object.as_ref(),
        "cache.max_object",
        default.max_object,
    );
    if let Some(v) = raw.max_bytes.as_ref().filter(|_| max_bytes == 0) {
        cx.err(v.span(), "cache.max_bytes: must be greater than 0");
    }
    if max_object > max_bytes {
        let span = raw
            .max_object
            .as_ref()
            .or(raw.max_bytes.as_ref())
            .map_or(0..0, Spanned::span);
        cx.err(span, "cache.max_object: must not exceed cache.max_bytes");
    }
    CacheConfig {
        max_bytes,
        max_object,
    }
}

fn mesh(
    cx: &mut Ctx<'_>,
    raw: &Spanned<RawMesh>,
    bound: &mut Vec<(SocketAddr, Range<usize>, &'static str)>,
) -> Option<MeshConfig> {
    let m = raw.get_ref();
    let mut listen = defaults::mesh_listen();
    if let Some(value) = &m.listen {
        if let Some(addr) = cx.socket_addr(value, "mesh.listen") {
            listen = addr;
            bound.push((addr, value.span(), "mesh.listen"));
        }
    }
    let seeds = m
        .seeds
        .iter()
        .flatten()
        .filter_map(|s| cx.socket_addr(s, "mesh.seeds"))
        .collect();
    let mut advertise = Vec::new();
    // A member's record has a size bound on the wire (see `mesh::state`): refuse here what it
    // could not carry, rather than drop services at start.
    use super::mesh_rules::{MAX_SERVICES, MAX_SERVICE_NAME};
    for (i, a) in m.advertise.iter().flat_map(|list| &list.0).enumerate() {
        if i == MAX_SERVICES {
            cx.err(
                a.service.span(),
                format!("mesh.advertise: at most {MAX_SERVICES} services per member"),
            );
        }
        if a.service.get_ref().len() > MAX_SERVICE_NAME {
            cx.err(
                a.service.span(),
                format!("mesh.advertise.service: longer than {MAX_SERVICE_NAME} bytes"),
            );
        }
        let named = cx.non_empty(&a.service, "mesh.advertise.service");
        if let (true, Some(address)) = (named, cx.socket_addr(&a.address, "mesh.advertise.address"))
        {
            advertise.push(MeshAdvertise {
                service: a.service.get_ref().clone(),
                address,
            });
        }
    }
    let eject_quorum = cx.at_least_one(
        m.eject_quorum.as_ref(),
        "mesh.eject_quorum",
        defaults::MESH_EJECT_QUORUM,
    );
    let eject_window = cx.positive_duration(
        m.eject_window.as_ref(),
        "mesh.eject_window",
        defaults::MESH_EJECT_WINDOW,
    );
    let Some(secret) = &m.secret_file else {
        cx.err(
            raw.span(),
            "mesh: `secret_file` is required (mesh traffic is always authenticated)",
        );
        return None;
    };
    let secret_file = cx.path(secret.get_ref());
    // Checked now so a missing key fails `check`, not the first gossip round after a deploy.
    match std::fs::read_to_string(&secret_file) {
        Ok(text) => {
            if let Err(reason) = super::mesh_rules::check_secret_text(&text) {
                cx.err(
                    secret.span(),
                    format!("mesh.secret_file: {} {reason}", secret_file.display()),
                );
            }
        }
        Err(e) => cx.err(
            secret.span(),
            format!(
                "mesh.secret_file: cannot read {}: {e}",
                secret_file.display()
            ),
        ),
    }
    Some(MeshConfig {
        listen,
        seeds,
        secret_file,
        advertise,
        eject_quorum,
        eject_window,
    })
}

/// `[identity]`: all three files are required (a tunnel needs a certificate to present, its key,
/// and a CA to verify peers by). Each missing key is its own error at the section.
fn identity(cx: &mut Ctx<'_>, raw: &Spanned<RawIdentity>) -> Option<IdentityConfig> {
    let i = raw.get_ref();
    let mut file = |value: Option<&Str>, key: &str| match value {
        None => {
            cx.err(
                raw.span(),
                format!("identity: `{key}` is required (`cert`, `key` and `ca` go together)"),
            );
            None
        }
        Some(path) if cx.non_empty(path, &format!("identity.{key}")) => {
            Some(cx.path(path.get_ref()))
        }
        Some(_) => None,
    };
    let cert = file(i.cert.as_ref(), "cert");
    let key = file(i.key.as_ref(), "key");
    let ca = file(i.ca.as_ref(), "ca");
    Some(IdentityConfig {
        cert: cert?,
        key: key?,
        ca: ca?,
    })
}

fn limits(cx: &mut Ctx<'_>, raw: Option<&RawLimits>) -> LimitsConfig {
    let d = defaults::limits();
    let Some(raw) = raw else { return d };
    let max_header_bytes = nonzero_size(
        cx,
        raw.max_header_bytes.as_ref(),
        "limits.max_header_bytes",
        d.max_header_bytes,
    );
    let max_uri_bytes = nonzero_size(
        cx,
        raw.max_uri_bytes.as_ref(),
        "limits.max_uri_bytes",
        d.max_uri_bytes,
    );
    let max_body_bytes =
        Some(cx.size(raw.max_body_bytes.as_ref(), "limits.max_body_bytes", 0)).filter(|&n| n > 0);
    LimitsConfig {
        max_header_bytes,
        max_uri_bytes,
        max_body_bytes,
        first_byte_timeout: cx.positive_duration(
            raw.first_byte_timeout.as_ref(),
            "limits.first_byte_timeout",
            d.first_byte_timeout,
        ),
        header_read_timeout: cx.positive_duration(
            raw.header_read_timeout.as_ref(),
            "limits.header_read_timeout",
            d.header_read_timeout,
        ),
        body_read_timeout: cx.positive_duration(
            raw.body_read_timeout.as_ref(),
            "limits.body_read_timeout",
            d.body_read_timeout,
        ),
        keepalive_timeout: cx.positive_duration(
            raw.keepalive_timeout.as_ref(),
            "limits.keepalive_timeout",
            d.keepalive_timeout,
        ),
        h2_keepalive_interval: cx.positive_duration(
            raw.h2_keepalive_interval.as_ref(),
            "limits.h2_keepalive_interval",
            d.h2_keepalive_interval,
        ),
        max_connections: raw.max_connections.unwrap_or(d.max_connections),
    }
}

fn nonzero_size(cx: &mut Ctx<'_>, value: Option<&Str>, key: &str, default: u64) -> u64 {
    let n = cx.size(value, key, default);
    if n == 0 {
        if let Some(value) = value {
            cx.err(value.span(), format!("{key}: must be greater than 0"));
        }
        return default;
    }
    n
}

/// Two sockets bound to the same address would fail at startup; port 0 never collides.
fn duplicate_addresses(cx: &mut Ctx<'_>, bound: &[(SocketAddr, Range<usize>, &'static str)]) {
    let mut seen: HashMap<SocketAddr, &'static str> = HashMap::new();
    let mut sorted: Vec<_> = bound
        .iter()
        .filter(|(addr, _, _)| addr.port() != 0)
        .collect();
    sorted.sort_by_key(|(_, span, _)| span.start);
    for (addr, span, key) in sorted {
        if let Some(first) = seen.insert(*addr, key) {
            cx.err(
                span.clone(),
                format!("{key}: address {addr} is already used by another {first}"),
            );
        }
    }
}
