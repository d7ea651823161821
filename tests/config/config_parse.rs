//! Parsing: every key of the contract with its typed value, the defaults, IPv6, paths.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use switchyard::config::*;

fn parse_ok(text: &str) -> Config {
    parse(text, Path::new("/etc/switchyard/test.toml")).unwrap_or_else(|e| panic!("{e}"))
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

const MINIMAL: &str = r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:8080"

[[routes]]
cluster = "web"

[clusters.web]
endpoints = ["127.0.0.1:9001"]
"#;

#[test]
fn full_reference_every_key_typed() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/configs/full-reference.toml");
    let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
    let dir = path.parent().unwrap();

    assert!(c.runtime.workers >= 1);
    assert_eq!(c.runtime.shutdown_delay, Duration::ZERO);
    assert_eq!(c.runtime.drain_timeout, Duration::from_secs(30));
    assert_eq!(c.runtime.zone.as_deref(), Some("a"));
    assert_eq!(c.clusters["orders"].locality, Locality::Off);
    assert_eq!(c.clusters["orders"].locality_spill_ratio, 2.0);
    assert_eq!(c.admin.listen, addr("127.0.0.1:9901"));
    assert_eq!(
        c.log,
        LogConfig {
            format: LogFormat::Text,
            access: true,
            access_sample: 1.0
        }
    );
    assert_eq!(c.metrics.max_endpoint_series, 1000);
    assert_eq!(
        c.tracing.otlp.as_ref().map(ToString::to_string).as_deref(),
        Some("http://127.0.0.1:4318/v1/traces")
    );
    assert_eq!(
        (c.tracing.service_name.as_str(), c.tracing.sample_ratio),
        ("switchyard", 1.0)
    );

    assert_eq!(c.listeners.len(), 5);
    assert_eq!(c.listeners[0].mode, ListenerMode::Http);
    let ListenerMode::Outbound(outbound) = &c.listeners[3].mode else {
        panic!("listener 3 is outbound: {:?}", c.listeners[3].mode)
    };
    assert_eq!(
        outbound,
        &Interception {
            detect_timeout: Duration::from_secs(10),
            opaque_ports: vec![25, 3306],
            opaque_idle_timeout: Duration::from_secs(3600),
        }
    );
    let ListenerMode::Inbound(inbound) = &c.listeners[4].mode else {
        panic!("listener 4 is inbound: {:?}", c.listeners[4].mode)
    };
    assert_eq!(inbound.interception.opaque_ports, vec![3306]);
    assert_eq!(
        inbound.policy,
        PortPolicy {
            mtls: MtlsMode::Permissive,
            allow: vec![]
        }
    );
    assert_eq!(
        inbound.identity_header.as_ref().map(|h| h.as_str()),
        Some("x-client-identity")
    );
    assert_eq!(
        inbound.policy(8080).allow,
        vec!["spiffe://local/web".to_owned()]
    );
    assert_eq!(inbound.policy(9090), &inbound.policy);
    // The declared port's synthetic cluster and route, and one outbound route per cluster.
    assert!(c.clusters.contains_key("inbound:8080"));
    assert!(c
        .routes
        .iter()
        .any(|r| r.name == "inbound:8080" && r.origin == RouteOrigin::Inbound(8080)));
    assert!(c.routes.iter().any(|r| r.name == "outbound:orders"
        && r.listener == "outbound"
        && r.origin == RouteOrigin::Outbound("orders".into())));
    assert_eq!(c.clusters["orders"].addresses, vec![addr("10.96.0.10:80")]);
    assert_eq!(
        c.routes[3].allow,
        Some(vec!["spiffe://local/web".to_owned()])
    );
    assert_eq!(c.listeners[0].name, "public");
    assert_eq!(c.listeners[0].listen, addr("127.0.0.1:8080"));
    assert_eq!(c.listeners[0].trusted_hops, 0);
    assert_eq!(c.listeners[0].tls, None);
    assert_eq!(c.listeners[1].listen, addr("[::1]:8443"));
    let tls = c.listeners[1].tls.as_ref().unwrap();
    assert_eq!(
        tls.certs,
        vec![CertKeyPair {
            cert: dir.join("certs/server.pem"),
            key: dir.join("certs/server.key")
        }]
    );
    assert_eq!(tls.client_ca, Some(dir.join("certs/ca.pem")));
    assert_eq!(
        c.identity,
        Some(IdentityConfig {
            cert: dir.join("certs/mesh.pem"),
            key: dir.join("certs/mesh.key"),
            ca: dir.join("certs/ca.pem"),
        })
    );
    let multi = c.listeners[2].tls.as_ref().unwrap();
    assert_eq!(multi.certs.len(), 2);
    assert_eq!(multi.certs[1].key, dir.join("certs/b.key"));
    assert_eq!(multi.client_ca, None);

    let r = &c.routes[0];
    assert_eq!(r.name, "orders");
    assert_eq!(r.listener, "public");
    assert_eq!(
        r.matcher.host,
        Some(HostMatch::Exact("api.example.com".into()))
    );
    assert!(matches!(&r.matcher.path, Some(PathMatch::Prefix(p)) if p == "/orders"));
    assert_eq!(r.matcher.method, Some(http::Method::GET));
    assert_eq!(r.matcher.headers.len(), 1);
    assert_eq!(r.matcher.headers[0].0, "x-canary");
    assert_eq!(r.matcher.headers[0].1, "1");
    assert_eq!(r.target, RouteTarget::Cluster("orders".into()));
    assert_eq!(r.timeout, Some(Duration::from_secs(15)));
    assert_eq!(r.idle_timeout, Some(Duration::from_secs(60)));
    let retry = r.retry.as_ref().unwrap();
    assert_eq!(retry.attempts, 3);
    assert_eq!(
        retry.on,
        vec![
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::Status5xx,
            RetryOn::GatewayError,
            RetryOn::RefusedStream
        ]
    );
    assert!(retry.statuses.is_empty());
    assert_eq!(retry.per_try_timeout, None);
    assert_eq!(retry.backoff, Duration::from_millis(25));
    assert_eq!(retry.buffer, 64 * 1024);
    assert_eq!(
        retry.budget,
        RetryBudget {
            ratio: 0.2,
            min_per_sec: 10
        }
    );
    assert_eq!(
        r.hedge,
        Some(HedgePolicy {
            after: Duration::from_millis(50),
            max: 1
        })
    );
    assert!(!r.cache);
    assert_eq!(
        r.rewrite,
        Some(Rewrite {
            path_prefix: "/".into()
        })
    );
    assert_eq!(r.headers.request_add.len(), 1);
    assert_eq!(r.headers.request_add[0].0, "x-env");
    assert_eq!(r.headers.request_add[0].1, "prod");
    assert_eq!(
        r.headers.request_remove,
        vec![http::HeaderName::from_static("x-internal")]
    );
    assert!(r.headers.response_add.is_empty() && r.headers.response_remove.is_empty());
    assert!(r.websocket);
    assert!(!r.debug_headers);

    assert_eq!(
        c.routes[1].target,
        RouteTarget::Split(vec![
            WeightedCluster {
                cluster: "orders".into(),
                weight: 90
            },
            WeightedCluster {
                cluster: "by-dns".into(),
                weight: 10
            },
        ])
    );
    assert!(matches!(&c.routes[1].matcher.path, Some(PathMatch::Exact(p)) if p == "/exact"));
    assert!(
        matches!(&c.routes[2].matcher.path, Some(PathMatch::Regex(re)) if re.is_match("/v2/x"))
    );
    assert_eq!(
        c.routes[3].matcher.client_identity.as_deref(),
        Some("spiffe://local/web")
    );
    assert_eq!(
        c.routes[5].matcher.host,
        Some(HostMatch::Suffix(".mesh.local".into()))
    );

    let o = &c.clusters["orders"];
    assert_eq!(o.protocol, Protocol::Http1);
    assert_eq!(o.balance, BalanceAlgorithm::RingHash);
    assert_eq!(
        o.hash_on,
        Some(HashOn::Header(http::HeaderName::from_static("x-user-id")))
    );
    assert_eq!(o.balance_factor, Some(1.25));
    assert_eq!(o.slow_start, Duration::ZERO);
    assert_eq!(
        o.endpoints,
        EndpointSource::Static(vec![
            StaticEndpoint {
                address: addr("127.0.0.1:9001"),
                weight: 1,
                zone: None
            },
            StaticEndpoint {
                address: addr("[::1]:9002"),
                weight: 2,
                zone: Some("b".into())
            },
        ])
    );
    assert_eq!(o.connect_timeout, Duration::from_secs(1));
    assert_eq!(
        o.pool,
        PoolConfig {
            idle_timeout: Duration::from_secs(30),
            max_idle_per_endpoint: 64,
            max_connections_per_endpoint: 0,
            tcp_keepalive: Some(Duration::from_secs(60)),
        }
    );
    assert_eq!(
        o.health_check,
        Some(HealthCheckConfig {
            kind: HealthCheckKind::Http,
            path: "/healthz".into(),
            host: String::new(),
            statuses: vec![(200, 399)],
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            initial_healthy: true,
        })
    );
    assert_eq!(
        o.outlier_detection,
        OutlierDetection {
            consecutive_5xx: 5,
            consecutive_gateway_errors: 3,
            failure_rate: 0.5,
            min_requests: 20,
            window: Duration::from_secs(10),
            success_rate_stdev: 1.9,
            base_time: Duration::from_secs(30),
            max_time: Duration::from_secs(300),
            max_percent: 50,
            probe_requests: 3,
        }
    );
    assert_eq!(
        o.circuit_breaker,
        CircuitBreaker {
            max_connections: 1024,
            max_pending: 256,
            max_requests: 1024,
            max_retries: 3
        }
    );
    assert_eq!(o.panic_threshold, 0.5);
    assert_eq!(
        o.tls,
        Some(ClusterTls {
            sni: Some("orders.internal".into()),
            ca: Some(dir.join("certs/ca.pem")),
            cert: Some(dir.join("certs/client.pem")),
            key: Some(dir.join("certs/client.key")),
        })
    );

    assert_eq!(c.clusters["by-dns"].balance, BalanceAlgorithm::Maglev);
    assert_eq!(
        c.clusters["by-dns"].hash_on,
        Some(HashOn::Cookie("session".into()))
    );
    assert_eq!(
        c.clusters["by-dns"].endpoints,
        EndpointSource::Dns {
            name: "orders.internal".into(),
            port: 8080,
            refresh: Duration::from_secs(10)
        }
    );
    assert_eq!(c.clusters["by-srv"].protocol, Protocol::H2);
    assert_eq!(
        c.clusters["by-srv"].endpoints,
        EndpointSource::Srv {
            name: "_http._tcp.orders.internal".into(),
            refresh: Duration::from_secs(10)
        }
    );
    assert_eq!(
        c.clusters["by-file"].endpoints,
        EndpointSource::File(dir.join("endpoints/orders.json"))
    );
    assert_eq!(
        c.clusters["by-etcd"].endpoints,
        EndpointSource::Etcd {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/services/orders/".into(),
            watch_timeout: Duration::from_secs(30)
        }
    );
    assert_eq!(
        c.clusters["by-mesh"].endpoints,
        EndpointSource::Mesh("orders".into())
    );

    assert_eq!(
        c.cache,
        Some(CacheConfig {
            max_bytes: 256 << 20,
            max_object: 8 << 20
        })
    );
    let mesh = c.mesh.as_ref().unwrap();
    assert_eq!(mesh.listen, addr("127.0.0.1:7946"));
    assert_eq!(mesh.seeds, vec![addr("127.0.0.1:7947")]);
    assert_eq!(mesh.secret_file, dir.join("../mesh/mesh.key"));
    assert_eq!(
        mesh.advertise,
        vec![MeshAdvertise {
            service: "orders".into(),
            address: addr("127.0.0.1:8080")
        }]
    );
    assert_eq!(mesh.eject_quorum, 2);
    assert_eq!(mesh.eject_window, Duration::from_secs(30));
    assert_eq!(
        c.limits,
        LimitsConfig {
            max_header_bytes: 64 * 1024,
            max_uri_bytes: 8 * 1024,
            max_body_bytes: None,
            first_byte_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(75),
            h2_keepalive_interval: Duration::from_secs(30),
            max_connections: 10_000,
        }
    );
}

#[test]
fn omitted_keys_take_the_documented_defaults() {
    let c = parse_ok(MINIMAL);
    let parallelism = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(
        c.runtime,
        RuntimeConfig {
            workers: parallelism,
            shutdown_delay: Duration::ZERO,
            drain_timeout: Duration::from_secs(30),
            zone: None,
        }
    );
    assert_eq!(c.admin.listen, addr("127.0.0.1:9901"));
    assert_eq!(
        c.log,
        LogConfig {
            format: LogFormat::Text,
            access: true,
            access_sample: 1.0
        }
    );
    assert_eq!(c.metrics.max_endpoint_series, 1000);
    assert_eq!(c.cache, None);
    assert_eq!(c.mesh, None);
    assert_eq!(c.limits.max_header_bytes, 64 * 1024);
    assert_eq!(c.limits.max_body_bytes, None);
    assert_eq!(c.limits.max_connections, 10_000);

    let r = &c.routes[0];
    assert_eq!(r.name, "route-1");
    assert_eq!(r.listener, "public", "the only listener is implied");
    assert!(r.matcher.host.is_none() && r.matcher.path.is_none() && r.matcher.method.is_none());
    assert_eq!(r.timeout, Some(Duration::from_secs(15)));
    assert_eq!(r.idle_timeout, Some(Duration::from_secs(60)));
    assert!(r.retry.is_none() && r.hedge.is_none() && r.rewrite.is_none());
    assert!(!r.cache && r.websocket && !r.debug_headers);

    let w = &c.clusters["web"];
    assert_eq!(w.protocol, Protocol::Http1);
    assert_eq!(
        w.balance,
        BalanceAlgorithm::LeastRequest,
        "DESIGN.md's default"
    );
    assert_eq!(w.hash_on, None);
    assert_eq!(w.connect_timeout, Duration::from_secs(1));
    assert_eq!(w.pool.max_idle_per_endpoint, 64);
    assert_eq!(w.health_check, None);
    assert_eq!(w.outlier_detection.consecutive_5xx, 5);
    assert_eq!(w.circuit_breaker.max_pending, 256);
    assert_eq!(w.panic_threshold, 0.5);
    assert_eq!(w.tls, None);
}

#[test]
fn partial_policy_tables_fill_the_rest_from_defaults() {
    let c = parse_ok(&MINIMAL.replace(
        "cluster = \"web\"",
        "cluster = \"web\"\nretry = { attempts = 2, on = [\"5xx\"], statuses = [503] }\nhedge = { max = 2 }\ntimeout = \"0\"",
    ).replace(
        "endpoints = [\"127.0.0.1:9001\"]",
        "endpoints = [\"127.0.0.1:9001\"]\nhealth_check = { kind = \"tcp\", statuses = [\"204\", \"300-302\"] }\npool = { tcp_keepalive = \"0s\" }",
    ));
    let retry = c.routes[0].retry.as_ref().unwrap();
    assert_eq!(
        (retry.attempts, retry.on.clone(), retry.statuses.clone()),
        (2, vec![RetryOn::Status5xx], vec![503])
    );
    assert_eq!(retry.backoff, Duration::from_millis(25));
    assert_eq!(
        c.routes[0].hedge,
        Some(HedgePolicy {
            after: Duration::from_millis(50),
            max: 2
        })
    );
    assert_eq!(c.routes[0].timeout, None, "0 means no timeout");
    let hc = c.clusters["web"].health_check.as_ref().unwrap();
    assert_eq!(hc.kind, HealthCheckKind::Tcp);
    assert_eq!(hc.statuses, vec![(204, 204), (300, 302)]);
    assert_eq!(hc.interval, Duration::from_secs(5));
    assert_eq!(c.clusters["web"].pool.tcp_keepalive, None);
    assert_eq!(c.clusters["web"].pool.idle_timeout, Duration::from_secs(30));
}

#[test]
fn ipv6_everywhere() {
    let c = parse_ok(
        r#"
[admin]
listen = "[::1]:9901"
[[listeners]]
name = "v6"
listen = "[::]:8080"
[[routes]]
match = { host = "[::1]" }
cluster = "web"
[clusters.web]
endpoints = ["[::1]:9001", { address = "[fe80::1]:9002" }, "127.0.0.1:9003"]
"#,
    );
    assert_eq!(c.admin.listen, addr("[::1]:9901"));
    assert_eq!(c.listeners[0].listen, addr("[::]:8080"));
    assert_eq!(
        c.routes[0].matcher.host,
        Some(HostMatch::Exact("[::1]".into()))
    );
    let EndpointSource::Static(eps) = &c.clusters["web"].endpoints else {
        panic!("static expected")
    };
    assert_eq!(
        eps.iter().map(|e| e.address).collect::<Vec<_>>(),
        vec![
            addr("[::1]:9001"),
            addr("[fe80::1]:9002"),
            addr("127.0.0.1:9003")
        ]
    );
}

#[test]
fn normalisation_of_hosts_methods_and_headers() {
    let c = parse_ok(&MINIMAL.replace(
        "cluster = \"web\"",
        "match = { host = \"*.Example.COM\", method = \"patch\", headers = { \"X-Tenant\" = \"a b\" } }\ncluster = \"web\"\nheaders = { request_add = { \"X-Env\" = \"prod\" } }",
    ));
    let m = &c.routes[0].matcher;
    assert_eq!(m.host, Some(HostMatch::Suffix(".example.com".into())));
    assert_eq!(m.method, Some(http::Method::PATCH));
    assert_eq!(m.headers[0].0.as_str(), "x-tenant");
    assert_eq!(m.headers[0].1, "a b");
    assert_eq!(c.routes[0].headers.request_add[0].0.as_str(), "x-env");

    let c = parse_ok(&MINIMAL.replace(
        "cluster = \"web\"",
        "match = { method = \"PURGE\" }\ncluster = \"web\"",
    ));
    assert_eq!(
        c.routes[0].matcher.method.as_ref().map(|m| m.as_str()),
        Some("PURGE")
    );
}

#[test]
fn explicit_worker_count_and_relative_paths() {
    let text = MINIMAL.to_owned() + "[runtime]\nworkers = 3\n";
    let c = parse(&text, Path::new("rel/dir/sy.toml")).unwrap();
    assert_eq!(c.runtime.workers, 3);
    assert_eq!(c.source, Path::new("rel/dir/sy.toml"));
    let text = MINIMAL.replace(
        "listen = \"127.0.0.1:8080\"",
        "listen = \"127.0.0.1:8080\"\ntls = { cert = \"c.pem\", key = \"/abs/k.pem\" }",
    );
    let c = parse(&text, Path::new("rel/dir/sy.toml")).unwrap();
    let tls = c.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.certs[0].cert, Path::new("rel/dir/c.pem"));
    assert_eq!(
        tls.certs[0].key,
        Path::new("/abs/k.pem"),
        "absolute paths stay as written"
    );
}

#[test]
fn identity_paths_resolve_against_the_config_folder() {
    let c = parse(MINIMAL, Path::new("sy.toml")).unwrap();
    assert_eq!(c.identity, None, "no [identity]: no tunnel");
    let text = MINIMAL.to_owned()
        + "[identity]\ncert = \"certs/a.pem\"\nkey = \"certs/a.key\"\nca = \"/etc/mesh/ca.pem\"\n";
    let c = parse(&text, Path::new("rel/dir/sy.toml")).unwrap();
    assert_eq!(
        c.identity,
        Some(IdentityConfig {
            cert: Path::new("rel/dir/certs/a.pem").to_path_buf(),
            key: Path::new("rel/dir/certs/a.key").to_path_buf(),
            ca: Path::new("/etc/mesh/ca.pem").to_path_buf(),
        })
    );
}

#[test]
fn mesh_secret_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.key"),
        "first key, at least thirty-two bytes\nsecond key, at least thirty-two bytes\n",
    )
    .unwrap();
    let text = MINIMAL.to_owned() + "[mesh]\nsecret_file = \"mesh.key\"\nadvertise = [ { service = \"a\", address = \"127.0.0.1:1\" }, { service = \"b\", address = \"[::1]:2\" } ]\n";
    let file = dir.path().join("sy.toml");
    std::fs::write(&file, &text).unwrap();
    let c = load(&file).unwrap_or_else(|e| panic!("{e}"));
    let mesh = c.mesh.unwrap();
    assert_eq!(mesh.secret_file, dir.path().join("mesh.key"));
    assert_eq!(mesh.listen, addr("127.0.0.1:7946"));
    assert!(mesh.seeds.is_empty());
    assert_eq!(mesh.advertise.len(), 2);
    assert_eq!(mesh.advertise[1].address, addr("[::1]:2"));
}

#[test]
fn port_zero_listeners_never_collide() {
    let c = parse_ok(
        r#"
[admin]
listen = "127.0.0.1:0"
[[listeners]]
name = "a"
listen = "127.0.0.1:0"
[[listeners]]
name = "b"
listen = "127.0.0.1:0"
[[routes]]
listener = "b"
cluster = "web"
[clusters.web]
endpoints = ["127.0.0.1:9001"]
"#,
    );
    assert_eq!(c.listeners.len(), 2);
}

#[test]
fn summary_lists_routes_and_clusters() {
    let text = MINIMAL.replace(
        "cluster = \"web\"",
        "name = \"api\"\nmatch = { path_prefix = \"/api\" }\ncluster = \"web\"\nretry = {}\ncache = true\n",
    ) + "[cache]\nmax_object = \"1MiB\"\n";
    let c = parse_ok(&text);
    let summary = c.summary();
    assert!(summary.contains("  public 127.0.0.1:8080\n"), "{summary}");
    assert!(
        summary.contains("  api [public] path_prefix=/api -> cluster web\n"),
        "{summary}"
    );
    assert!(
        summary.contains("  web http1 least_request: endpoints 127.0.0.1:9001\n"),
        "{summary}"
    );

    let clean = parse_ok(&MINIMAL.replace("endpoints =", "balance = \"round_robin\"\nendpoints ="));
    assert!(
        clean
            .summary()
            .contains("  web http1 round_robin: endpoints 127.0.0.1:9001\n"),
        "{}",
        clean.summary()
    );
}

#[test]
fn missing_file_is_a_whole_file_error() {
    let err = load(Path::new("/nonexistent/switchyard.toml")).unwrap_err();
    assert_eq!(err.errors.len(), 1);
    assert_eq!(err.errors[0].line, 0);
    assert!(
        err.to_string()
            .starts_with("/nonexistent/switchyard.toml: cannot read config:"),
        "{err}"
    );
}

#[test]
fn zone_and_locality_parse_with_their_defaults() {
    let c = parse_ok(MINIMAL);
    assert_eq!(c.runtime.zone, None);
    assert_eq!(c.clusters["web"].locality, Locality::Off);
    assert_eq!(c.clusters["web"].locality_spill_ratio, 2.0);
    let text = format!(
        "[runtime]\nzone = \"eu-west-1a\"\n{}locality = \"prefer_local\"\nlocality_spill_ratio = 3.5\n",
        MINIMAL
    );
    let c = parse_ok(&text);
    assert_eq!(c.runtime.zone.as_deref(), Some("eu-west-1a"));
    assert_eq!(c.clusters["web"].locality, Locality::PreferLocal);
    assert_eq!(c.clusters["web"].locality_spill_ratio, 3.5);
}
