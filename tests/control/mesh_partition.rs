//! A real partition: three `switchyard` processes, each in its own network namespace, joined by
//! veth pairs to a bridge in a fourth; nftables in C's namespace drops mesh traffic, then the
//! rule goes. C must be marked dead by A and B, then rejoin and converge. Needs root, `ip`
//! (iproute2) and `nft` (nftables): `.ci/run` installs them; CI runs as root.
//!
//! The test reads membership from the processes' logs (`mesh: member ADDR up|down`): their admin
//! ports live inside the namespaces.

use std::process::Command;
use std::time::Duration;

use super::netns::{run, Namespaces};
use crate::support::launcher::BinProcess;

/// A hub namespace with a bridge, and one namespace per member at 10.231.0.(i+1)/24.
fn topology(prefix: &str, members: usize) -> Namespaces {
    let hub = format!("{prefix}h");
    let mut ns = Namespaces {
        names: vec![hub.clone()],
    };
    run("ip", &["netns", "add", &hub]);
    run("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"]);
    run("ip", &["-n", &hub, "link", "set", "br0", "up"]);
    for i in 0..members {
        let name = format!("{prefix}{i}");
        run("ip", &["netns", "add", &name]);
        ns.names.push(name.clone());
        let outer = format!("p{i}");
        run(
            "ip",
            &[
                "-n", &hub, "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns",
                &name,
            ],
        );
        run(
            "ip",
            &["-n", &hub, "link", "set", &outer, "master", "br0", "up"],
        );
        let address = format!("10.231.0.{}/24", i + 1);
        run("ip", &["-n", &name, "addr", "add", &address, "dev", "eth0"]);
        run("ip", &["-n", &name, "link", "set", "eth0", "up"]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
    }
    ns
}

fn mesh(i: usize) -> String {
    format!("10.231.0.{}:7946", i + 1)
}

/// Whether `process` logged `mesh: member ADDR STATE` at least `times` times.
fn logged(process: &BinProcess, addr: &str, state: &str, times: usize) -> bool {
    let needle = format!("mesh: member {addr} {state}");
    let out = process.output(crate::support::launcher::Pipe::Stdout)
        + &process.output(crate::support::launcher::Pipe::Stderr);
    out.matches(&needle).count() >= times
}

/// Whether `process` published the full three-address `orders` set at least `times` times.
fn all_three_routed(process: &BinProcess, times: usize) -> bool {
    let out = process.output(crate::support::launcher::Pipe::Stdout)
        + &process.output(crate::support::launcher::Pipe::Stderr);
    out.lines()
        .filter(|l| l.contains("discovery update") && l.contains("endpoints=3"))
        .count()
        >= times
}

#[test]
fn a_partitioned_member_is_marked_dead_then_rejoins_and_converges() {
    let prefix = format!("sy{}", std::process::id() % 100_000);
    let _ns = topology(&prefix, 3);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("mesh.key"),
        "partition test key, at least thirty-two bytes\n",
    )
    .expect("key");
    let mut members = Vec::new();
    for i in 0..3 {
        let seeds: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("\"{}\"", mesh(j)))
            .collect();
        let config = dir.path().join(format!("m{i}.toml"));
        std::fs::write(
            &config,
            format!(
                "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
                 [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
                 [[routes]]\nlistener = \"public\"\ncluster = \"orders\"\n\n\
                 [clusters.orders]\ndiscovery = {{ mesh = \"orders\" }}\n\n\
                 [mesh]\nlisten = \"{}\"\nseeds = [{}]\nsecret_file = \"mesh.key\"\n\
                 advertise = {{ service = \"orders\", address = \"10.231.0.{}:8080\" }}\n",
                mesh(i),
                seeds.join(", "),
                i + 1
            ),
        )
        .expect("config");
        let mut cmd = Command::new("ip");
        cmd.args([
            "netns",
            "exec",
            &format!("{prefix}{i}"),
            env!("CARGO_BIN_EXE_switchyard"),
        ])
        .args(["run", "-c", &config.to_string_lossy()]);
        members.push(BinProcess::spawn_command(cmd));
    }
    let all_up = crate::support::wait_until(Duration::from_secs(20), || {
        (0..3).all(|i| {
            (0..3)
                .filter(|&j| j != i)
                .all(|j| logged(&members[i], &mesh(j), "up", 1))
        })
    });
    assert!(all_up, "the three members did not find each other");
    let routed = crate::support::wait_until(Duration::from_secs(20), || {
        members.iter().all(|m| all_three_routed(m, 1))
    });
    assert!(
        routed,
        "before the partition every member routes to all three"
    );

    // Cut C (member 2) off: drop mesh datagrams both ways in its namespace.
    let c_ns = format!("{prefix}2");
    let nft = |rule: &str| run("ip", &["netns", "exec", &c_ns, "nft", rule]);
    nft("add table inet partition");
    nft("add chain inet partition input { type filter hook input priority 0; policy accept; }");
    nft("add chain inet partition output { type filter hook output priority 0; policy accept; }");
    nft("add rule inet partition input udp dport 7946 drop");
    nft("add rule inet partition output udp dport 7946 drop");
    let started = std::time::Instant::now();
    let dead = crate::support::wait_until(Duration::from_secs(30), || {
        logged(&members[0], &mesh(2), "down", 1) && logged(&members[1], &mesh(2), "down", 1)
    });
    assert!(dead, "A and B should mark the cut-off C dead");
    println!(
        "partition: C marked dead by A and B after {:?}",
        started.elapsed()
    );

    nft("delete table inet partition");
    let healed = std::time::Instant::now();
    // Rejoined: A and B see C up again. Converged: every member's `orders` cluster (filled
    // from the members' records) is back to all three addresses — for A and B after dropping
    // C's, for C after dropping the two it could not reach.
    let rejoined = crate::support::wait_until(Duration::from_secs(60), || {
        logged(&members[0], &mesh(2), "up", 2)
            && logged(&members[1], &mesh(2), "up", 2)
            && members.iter().all(|m| all_three_routed(m, 2))
    });
    if !rejoined {
        for (i, m) in members.iter().enumerate() {
            eprintln!(
                "--- member {i}:\n{}",
                m.output(crate::support::launcher::Pipe::Stdout)
                    + &m.output(crate::support::launcher::Pipe::Stderr)
            );
        }
    }
    assert!(
        rejoined,
        "C should rejoin A and B after the partition heals"
    );
    println!(
        "partition healed: C rejoined both after {:?}",
        healed.elapsed()
    );
    assert!(
        members[2]
            .wait_for_line("rejoined", Duration::ZERO)
            .is_some(),
        "C, declared dead, comes back as its next generation"
    );
}
