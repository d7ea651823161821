//! The snapshot's two builds: what a detached, a first and a next version make, and what a
//! discovery update shares.

use std::path::Path;

use super::*;

fn config(extra: &str) -> Arc<Config> {
    let text = format!(
        r#"
[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
listener = "public"
cluster = "app"

[clusters.app]
endpoints = ["127.0.0.1:9003", "127.0.0.1:9001"]

[clusters.other]
endpoints = ["127.0.0.1:9101"]
{extra}
"#
    );
    Arc::new(crate::config::parse(&text, Path::new("test.toml")).expect("valid config"))
}

const CACHE: &str = "[cache]\nmax_bytes = \"32MiB\"\n";

#[test]
fn a_detached_build_starts_no_cache_and_a_running_one_does() {
    let registry = EndpointRegistry::new();
    let detached = Snapshot::build(config(CACHE), &registry, 7);
    assert_eq!(detached.version(), 7);
    assert!(detached.cache().is_none());
    let first = Snapshot::compile(
        config(CACHE),
        &registry,
        &DiscoveredSets::default(),
        1,
        Lineage::First,
    );
    assert!(first.cache().is_some());
}

#[test]
fn the_next_version_takes_over_the_cache_while_cache_is_unchanged() {
    let registry = EndpointRegistry::new();
    let discovered = DiscoveredSets::default();
    let first = Snapshot::compile(config(CACHE), &registry, &discovered, 1, Lineage::First);
    let next = Snapshot::compile(
        config(CACHE),
        &registry,
        &discovered,
        2,
        Lineage::After(&first),
    );
    let (Some(before), Some(after)) = (first.cache(), next.cache()) else {
        panic!("both versions have a cache");
    };
    assert!(Arc::ptr_eq(before, after));
    let without = Snapshot::compile(config(""), &registry, &discovered, 3, Lineage::After(&next));
    assert!(without.cache().is_none());
}

#[test]
fn with_cluster_replaces_one_cluster_and_shares_everything_else() {
    let registry = EndpointRegistry::new();
    let discovered = DiscoveredSets::default();
    let first = Snapshot::compile(config(CACHE), &registry, &discovered, 4, Lineage::First);
    let app = first.config().clusters.get("app").expect("cluster app");
    let set = DiscoveredSet {
        source: app.endpoints.clone(),
        endpoints: Vec::new(),
    };
    let replaced = ClusterSnapshot::build(app, None, &registry, Some(&set));
    let next = first.with_cluster(replaced);

    assert_eq!(next.version(), 4);
    assert_eq!(next.loaded_at(), first.loaded_at());
    assert!(Arc::ptr_eq(next.config(), first.config()));
    assert!(std::ptr::eq(next.router(), first.router()));
    assert!(std::ptr::eq(next.metrics(), first.metrics()));
    assert!(std::ptr::eq(next.stats(), first.stats()));
    assert!(matches!(
        (first.cache(), next.cache()),
        (Some(a), Some(b)) if Arc::ptr_eq(a, b)
    ));
    assert_eq!(
        next.listener("public").map(ListenerSnapshot::index),
        Some(0)
    );
    // Static sources ignore a discovered set: the rebuilt cluster is equal, not shared.
    let (Some(old_app), Some(new_app)) = (first.cluster("app"), next.cluster("app")) else {
        panic!("cluster app in both");
    };
    assert!(!Arc::ptr_eq(old_app, new_app));
    assert_eq!(new_app.endpoints().len(), 2);
    let (Some(old_other), Some(new_other)) = (first.cluster("other"), next.cluster("other")) else {
        panic!("cluster other in both");
    };
    assert!(Arc::ptr_eq(old_other, new_other));
}
