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

/// A discovery update built from the cluster before (`build_after`) equals a build from
/// scratch: the same endpoints in the same order, the surviving endpoints' very states, and
/// for `ring_hash` (derived, not rebuilt) the same pick for every key.
#[test]
fn a_discovery_update_reuses_what_stayed_and_equals_a_full_build() {
    use crate::balance::PickContext;
    use crate::state::DiscoveredSet;

    let text = "[[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n[[routes]]\ncluster = \"app\"\n\n\
                [clusters.app]\nbalance = \"ring_hash\"\nhash_on = \"header:x-user\"\ndiscovery = { file = \"app.json\" }\n";
    let config = crate::config::parse(text, Path::new("test.toml")).expect("valid config");
    let cluster = &config.clusters["app"];
    let set = |ports: &[u16], heavy: u16| DiscoveredSet {
        source: cluster.endpoints.clone(),
        endpoints: ports
            .iter()
            .map(|&p| StaticEndpoint {
                address: SocketAddr::from(([10, 0, 0, 1], p)),
                weight: if p == heavy { 3 } else { 1 },
                zone: (p % 2 == 0).then(|| "a".to_owned()),
            })
            .collect(),
    };
    let registry = EndpointRegistry::new();
    let before_set = set(&[1, 2, 3, 4, 5, 6, 7, 8], 0);
    let before = Arc::new(ClusterSnapshot::build(
        cluster,
        None,
        &registry,
        Some(&before_set),
    ));
    // 2 and 7 leave, 9 and 0 join, 4 changes weight.
    let after_set = set(&[0, 1, 3, 4, 5, 6, 8, 9], 4);
    let (after, removed) =
        ClusterSnapshot::build_after(cluster, None, &registry, &after_set, &before);
    let port = |a: &SocketAddr| a.port();
    assert_eq!(removed.iter().map(port).collect::<Vec<_>>(), [2, 7]);
    registry.remove("app", &removed);
    let scratch = ClusterSnapshot::build(cluster, None, &registry, Some(&after_set));
    let ports = |c: &ClusterSnapshot| -> Vec<u16> {
        c.endpoints().iter().map(|e| e.address().port()).collect()
    };
    assert_eq!(ports(&after), [0, 1, 3, 4, 5, 6, 8, 9]);
    assert_eq!(ports(&after), ports(&scratch));
    for (i, e) in after.endpoints().iter().enumerate() {
        assert!(
            Arc::ptr_eq(e, &scratch.endpoints()[i]),
            "one state per endpoint"
        );
        assert_eq!(after.zone(i), scratch.zone(i));
    }
    let kept = before.index_of(SocketAddr::from(([10, 0, 0, 1], 5)));
    let now = after.index_of(SocketAddr::from(([10, 0, 0, 1], 5)));
    assert!(Arc::ptr_eq(
        &before.endpoints()[kept.expect("listed before")],
        &after.endpoints()[now.expect("listed after")]
    ));
    assert_eq!(after.endpoints()[3].weight(), 3, "the new weight is taken");
    assert_eq!(registry.len(), 8, "the registry forgot the two that left");
    // The health task holding `before` learns just the change; any other holder compares lists.
    let (joined, left) = after.changes_since(&before).expect("built after `before`");
    let joined: Vec<u16> = joined
        .iter()
        .map(|&i| after.endpoints()[i as usize].address().port())
        .collect();
    assert_eq!(joined, [0, 9]);
    assert_eq!(left.iter().map(port).collect::<Vec<_>>(), [2, 7]);
    let scratch = Arc::new(scratch);
    assert!(after.changes_since(&scratch).is_none());
    assert!(scratch.changes_since(&before).is_none(), "a full build");
    for key in 0..5000u64 {
        let hash = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let pick = |c: &ClusterSnapshot| {
            let ctx = PickContext {
                endpoints: c.endpoints(),
                client: None,
                random: 0,
                hash: Some(hash),
            };
            c.balancer().candidates(&ctx).collect::<Vec<_>>()
        };
        assert_eq!(pick(&after), pick(&scratch), "key {key}");
    }
}
