//! The human summary `switchyard check` prints: listeners, routes and clusters as the proxy
//! will apply them.

use std::fmt::Write as _;

use super::model::*;

impl Config {
    /// What `switchyard check` prints on success: listeners, routes (name, match, target),
    /// clusters (balance, endpoints or discovery).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: OK ({} workers)",
            self.source.display(),
            self.runtime.workers
        );
        let _ = writeln!(out, "listeners:");
        for l in &self.listeners {
            let tls = if l.tls.is_some() { " (tls)" } else { "" };
            let mode = match &l.mode {
                ListenerMode::Http => String::new(),
                other => format!(" mode={}", other.as_str()),
            };
            let _ = writeln!(out, "  {} {}{tls}{mode}", l.name, l.listen);
        }
        let _ = writeln!(out, "routes (first match wins):");
        for r in &self.routes {
            let mirror = r
                .mirror
                .as_ref()
                .map(|m| format!(" (mirror {}% -> {})", m.percent, m.cluster))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} [{}] {} -> {}{mirror}",
                r.name,
                r.listener,
                describe_match(&r.matcher),
                describe_target(&r.target)
            );
        }
        let _ = writeln!(out, "clusters:");
        for c in self.clusters.values() {
            let protocol = match c.protocol {
                Protocol::Http1 => "http1",
                Protocol::H2 => "h2",
            };
            let _ = writeln!(
                out,
                "  {} {protocol} {}: {}",
                c.name,
                c.balance.as_str(),
                describe_endpoints(&c.endpoints)
            );
        }
        out
    }
}

fn describe_match(m: &RouteMatch) -> String {
    let mut parts = Vec::new();
    match &m.host {
        Some(HostMatch::Exact(h)) => parts.push(format!("host={h}")),
        Some(HostMatch::Suffix(s)) => parts.push(format!("host=*{s}")),
        None => {}
    }
    match &m.path {
        Some(PathMatch::Exact(p)) => parts.push(format!("path={p}")),
        Some(PathMatch::Prefix(p)) => parts.push(format!("path_prefix={p}")),
        Some(PathMatch::Regex(re)) => parts.push(format!("path_regex={}", re.as_str())),
        None => {}
    }
    if let Some(method) = &m.method {
        parts.push(format!("method={method}"));
    }
    for (name, value) in &m.headers {
        parts.push(format!(
            "header {name}={}",
            String::from_utf8_lossy(value.as_bytes())
        ));
    }
    if let Some(id) = &m.client_identity {
        parts.push(format!("client_identity={id}"));
    }
    if parts.is_empty() {
        "(any request)".to_owned()
    } else {
        parts.join(" ")
    }
}

fn describe_target(t: &RouteTarget) -> String {
    match t {
        RouteTarget::Cluster(c) => format!("cluster {c}"),
        RouteTarget::Split(arms) => {
            let arms: Vec<String> = arms
                .iter()
                .map(|a| format!("{} weight {}", a.cluster, a.weight))
                .collect();
            format!("split {}", arms.join(", "))
        }
    }
}

fn describe_endpoints(e: &EndpointSource) -> String {
    match e {
        EndpointSource::Static(list) => {
            let list: Vec<String> = list
                .iter()
                .map(|ep| {
                    if ep.weight == 1 {
                        ep.address.to_string()
                    } else {
                        format!("{} (weight {})", ep.address, ep.weight)
                    }
                })
                .collect();
            format!("endpoints {}", list.join(", "))
        }
        EndpointSource::Dns { name, port, .. } => format!("discovery dns {name}:{port}"),
        EndpointSource::Srv { name, .. } => format!("discovery srv {name}"),
        EndpointSource::File(path) => format!("discovery file {}", path.display()),
        EndpointSource::Etcd { prefix, .. } => format!("discovery etcd {prefix}"),
        EndpointSource::Mesh(service) => format!("discovery mesh {service}"),
    }
}
