//! What a reload would change: `switchyard check -c new.toml --diff running.toml`.
//!
//! Listeners, routes and clusters are matched by name; a cluster's static endpoints by address.
//! Fields are compared through their `Debug` rendering: the validated model holds compiled
//! regexes and header values that have no `PartialEq`, and their `Debug` text is exactly their
//! configured spelling, which is what an operator compares too.

use std::collections::BTreeSet;
use std::fmt;

use super::model::*;

/// Every difference between a running config and a new one, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// One line each: `+ …` added, `- …` removed, `~ …` changed, `! …` needs a restart.
    pub lines: Vec<String>,
}

impl ConfigDiff {
    /// Whether the two configs are equivalent.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

impl fmt::Display for ConfigDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lines.is_empty() {
            return writeln!(f, "no changes");
        }
        for line in &self.lines {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}

/// Compares `running` (what serves now) with `new` (what a reload would load).
pub fn diff(running: &Config, new: &Config) -> ConfigDiff {
    let mut out = Vec::new();
    sections(running, new, &mut out);
    listeners(running, new, &mut out);
    routes(running, new, &mut out);
    clusters(running, new, &mut out);
    ConfigDiff { lines: out }
}

fn dbg<T: fmt::Debug>(value: &T) -> String {
    format!("{value:?}")
}

fn sections(running: &Config, new: &Config, out: &mut Vec<String>) {
    let restart_only = [
        ("[runtime]", running.runtime != new.runtime),
        ("[admin]", running.admin.listen != new.admin.listen),
        ("[limits]", running.limits != new.limits),
        ("log.format", running.log.format != new.log.format),
        // The mesh member keeps its socket, identity and keys for the process's life.
        ("[mesh]", running.mesh != new.mesh),
        // The mesh announces the tunnel identity for the process's life.
        ("[identity]", running.identity != new.identity),
    ];
    for (name, changed) in restart_only {
        if changed {
            out.push(format!(
                "! {name} changed: applied at the next restart only"
            ));
        }
    }
    let reloadable = [
        ("log.access", running.log.access != new.log.access),
        (
            "log.access_sample",
            running.log.access_sample != new.log.access_sample,
        ),
        ("[metrics]", running.metrics != new.metrics),
        ("[tracing]", running.tracing != new.tracing),
        ("[cache]", running.cache != new.cache),
        (
            "admin.token_file",
            running.admin.token_file != new.admin.token_file
                || running.admin.token != new.admin.token,
        ),
    ];
    for (name, changed) in reloadable {
        if changed {
            out.push(format!("~ {name} changed"));
        }
    }
}

fn listeners(running: &Config, new: &Config, out: &mut Vec<String>) {
    for old in &running.listeners {
        match new.listeners.iter().find(|l| l.name == old.name) {
            None => out.push(format!("- listener {} {}", old.name, old.listen)),
            Some(l) if l.listen != old.listen => out.push(format!(
                "~ listener {}: listen {} -> {} (rebinds)",
                old.name, old.listen, l.listen
            )),
            Some(l) if l != old => {
                out.push(format!("~ listener {}: tls, trusted_hops or mode", l.name))
            }
            Some(_) => {}
        }
    }
    for l in &new.listeners {
        if !running.listeners.iter().any(|old| old.name == l.name) {
            out.push(format!("+ listener {} {}", l.name, l.listen));
        }
    }
}

fn routes(running: &Config, new: &Config, out: &mut Vec<String>) {
    for old in &running.routes {
        let Some(r) = new.routes.iter().find(|r| r.name == old.name) else {
            out.push(format!("- route {}", old.name));
            continue;
        };
        let mut changed = Vec::new();
        if r.target != old.target {
            changed.push(format!(
                "target {} -> {}",
                target(&old.target),
                target(&r.target)
            ));
        }
        let fields = [
            ("listener", r.listener != old.listener),
            ("match", dbg(&r.matcher) != dbg(&old.matcher)),
            ("timeout", r.timeout != old.timeout),
            ("idle_timeout", r.idle_timeout != old.idle_timeout),
            ("retry", r.retry != old.retry),
            ("hedge", r.hedge != old.hedge),
            ("cache", r.cache != old.cache),
            ("rewrite", r.rewrite != old.rewrite),
            ("headers", dbg(&r.headers) != dbg(&old.headers)),
            ("websocket", r.websocket != old.websocket),
            ("debug_headers", r.debug_headers != old.debug_headers),
            ("allow", r.allow != old.allow),
            ("mirror", r.mirror != old.mirror),
            ("rate_limit", r.rate_limit != old.rate_limit),
        ];
        changed.extend(
            fields
                .iter()
                .filter(|(_, c)| *c)
                .map(|(n, _)| n.to_string()),
        );
        if !changed.is_empty() {
            out.push(format!("~ route {}: {}", r.name, changed.join(", ")));
        }
    }
    for r in &new.routes {
        if !running.routes.iter().any(|old| old.name == r.name) {
            out.push(format!("+ route {} -> {}", r.name, target(&r.target)));
        }
    }
    // First match wins, so the order of the routes both configs have matters too.
    let kept = |config: &Config, other: &Config| -> Vec<String> {
        config
            .routes
            .iter()
            .filter(|r| other.routes.iter().any(|o| o.name == r.name))
            .map(|r| r.name.clone())
            .collect()
    };
    if kept(running, new) != kept(new, running) {
        out.push("~ route order changed (first match wins)".to_owned());
    }
}

fn target(target: &RouteTarget) -> String {
    match target {
        RouteTarget::Cluster(name) => name.clone(),
        RouteTarget::Split(arms) => {
            let arms: Vec<String> = arms
                .iter()
                .map(|a| format!("{}={}", a.cluster, a.weight))
                .collect();
            format!("split({})", arms.join(", "))
        }
    }
}

fn clusters(running: &Config, new: &Config, out: &mut Vec<String>) {
    for (name, old) in &running.clusters {
        let Some(c) = new.clusters.get(name) else {
            out.push(format!("- cluster {name}"));
            continue;
        };
        let mut changed = Vec::new();
        let fields = [
            ("protocol", c.protocol != old.protocol),
            ("balance", c.balance != old.balance),
            ("hash_on", c.hash_on != old.hash_on),
            ("balance_factor", c.balance_factor != old.balance_factor),
            ("slow_start", c.slow_start != old.slow_start),
            ("connect_timeout", c.connect_timeout != old.connect_timeout),
            ("pool", c.pool != old.pool),
            ("health_check", c.health_check != old.health_check),
            (
                "outlier_detection",
                c.outlier_detection != old.outlier_detection,
            ),
            ("circuit_breaker", c.circuit_breaker != old.circuit_breaker),
            ("panic_threshold", c.panic_threshold != old.panic_threshold),
            ("tls", c.tls != old.tls),
            ("addresses", c.addresses != old.addresses),
        ];
        changed.extend(
            fields
                .iter()
                .filter(|(_, c)| *c)
                .map(|(n, _)| n.to_string()),
        );
        endpoints(&old.endpoints, &c.endpoints, &mut changed);
        if !changed.is_empty() {
            out.push(format!("~ cluster {name}: {}", changed.join(", ")));
        }
    }
    for name in new.clusters.keys() {
        if !running.clusters.contains_key(name) {
            out.push(format!("+ cluster {name}"));
        }
    }
}

fn endpoints(old: &EndpointSource, new: &EndpointSource, changed: &mut Vec<String>) {
    match (old, new) {
        (EndpointSource::Static(old), EndpointSource::Static(new)) => {
            let set = |list: &[StaticEndpoint]| -> BTreeSet<String> {
                list.iter()
                    .map(|e| format!("{} (weight {})", e.address, e.weight))
                    .collect()
            };
            let (old, new) = (set(old), set(new));
            changed.extend(new.difference(&old).map(|e| format!("endpoint +{e}")));
            changed.extend(old.difference(&new).map(|e| format!("endpoint -{e}")));
        }
        (old, new) if old != new => changed.push("endpoints source".to_owned()),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Config {
        crate::config::parse(text, Path::new("t.toml")).expect("valid config")
    }

    const BASE: &str = r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:8080"

[[routes]]
name = "api"
listener = "public"
match = { path_prefix = "/api" }
cluster = "a"

[[routes]]
name = "rest"
listener = "public"
cluster = "a"

[clusters.a]
endpoints = ["127.0.0.1:9001", "127.0.0.1:9002"]

[clusters.b]
endpoints = ["127.0.0.1:9101"]
"#;

    #[test]
    fn identical_configs_have_no_diff() {
        let d = diff(&parse(BASE), &parse(BASE));
        assert!(d.is_empty());
        assert_eq!(d.to_string(), "no changes\n");
    }

    #[test]
    fn lists_listeners_routes_clusters_and_endpoints() {
        let new = BASE
            .replace("127.0.0.1:8080", "127.0.0.1:8081")
            .replace("cluster = \"a\"\n\n[[routes]]", "cluster = \"b\"\n\n[[routes]]")
            .replace("\"127.0.0.1:9002\"", "\"127.0.0.1:9003\"")
            .replace("[clusters.b]", "[clusters.c]\nendpoints = [\"127.0.0.1:9201\"]\n\n[clusters.b]")
            + "\n[[listeners]]\nname = \"extra\"\nlisten = \"127.0.0.1:8082\"\n[admin]\nlisten = \"127.0.0.1:9999\"\n";
        let d = diff(&parse(BASE), &parse(&new));
        assert_eq!(
            d.lines,
            [
                "! [admin] changed: applied at the next restart only",
                "~ listener public: listen 127.0.0.1:8080 -> 127.0.0.1:8081 (rebinds)",
                "+ listener extra 127.0.0.1:8082",
                "~ route api: target a -> b",
                "~ cluster a: endpoint +127.0.0.1:9003 (weight 1), endpoint -127.0.0.1:9002 (weight 1)",
                "+ cluster c",
            ]
        );
    }

    #[test]
    fn an_admin_token_change_applies_at_reload() {
        let running = parse(BASE);
        let mut new = running.clone();
        new.admin.token_file = Some("token".into());
        new.admin.token = Some(crate::config::AdminToken::new("t"));
        assert_eq!(diff(&running, &new).lines, ["~ admin.token_file changed"]);
    }

    #[test]
    fn an_identity_change_waits_for_a_restart() {
        let running = parse(BASE);
        let with = parse(
            &(BASE.to_owned() + "[identity]\ncert = \"a.pem\"\nkey = \"a.key\"\nca = \"ca.pem\"\n"),
        );
        assert_eq!(
            diff(&running, &with).lines,
            ["! [identity] changed: applied at the next restart only"]
        );
    }

    #[test]
    fn removed_items_and_route_order() {
        let running = parse(BASE);
        let mut new = running.clone();
        new.routes.reverse();
        new.clusters.remove("b");
        new.listeners.clear();
        let d = diff(&running, &new);
        assert_eq!(
            d.lines,
            [
                "- listener public 127.0.0.1:8080",
                "~ route order changed (first match wins)",
                "- cluster b",
            ]
        );
    }
}
