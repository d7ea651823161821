//! `switchyard redirect` against the real nft, in network namespaces the tests make: the rules
//! apply, a second run changes nothing, `--dry-run` touches nothing, `--remove` restores the
//! original ruleset exactly (twice in a row), and the rules really redirect inbound and outbound
//! TCP while the proxy's own UID and the skipped ports and CIDRs pass untouched. Needs root,
//! `ip` (iproute2), `nft` (nftables), `setpriv` and `bash` (util-linux and bash are in every
//! Debian image; `.ci/run` installs the other two); CI runs as root.

use std::process::{Command, Output};

use super::netns::{run, Namespaces};
use crate::support::launcher::{BinProcess, BinProxy};

/// The UID the rules exempt (`--proxy-uid`); the probes that must pass untouched run under it.
const PROXY_UID: &str = "4242";

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// Runs a command to completion and returns its output; panics if it cannot start.
fn output(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e} (is it installed?)"))
}

/// `ip netns exec NS PROGRAM ARGS...`, to completion.
fn in_ns(ns: &str, program: &str, args: &[&str]) -> Output {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    output("ip", &all)
}

/// The namespace's whole ruleset as `nft list ruleset` prints it.
fn ruleset(ns: &str) -> String {
    run("ip", &["netns", "exec", ns, "nft", "list", "ruleset"])
}

/// `switchyard redirect ARGS...` inside `ns`.
fn redirect(ns: &str, args: &[&str]) -> Output {
    let mut all = vec!["redirect"];
    all.extend_from_slice(args);
    in_ns(ns, BIN, &all)
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what}: exit {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Namespaces {
    fn add(&mut self, name: String) -> String {
        run("ip", &["netns", "add", &name]);
        self.names.push(name.clone());
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        name
    }
}

/// A name prefix no other test process uses at the same time.
fn prefix(test: &str) -> String {
    format!("syr{}{test}", std::process::id() % 100_000)
}

#[test]
fn redirect_twice_equals_once_and_remove_restores_the_original_ruleset() {
    let mut namespaces = Namespaces { names: Vec::new() };
    let ns = namespaces.add(prefix("r"));
    // Somebody else's table, which redirect must leave exactly as it is.
    let other = "table inet other {\n\
                 \tchain input {\n\
                 \t\ttype filter hook input priority filter; policy accept;\n\
                 \t\ttcp dport 1234 counter\n\
                 \t}\n}\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let other_file = dir.path().join("other.nft");
    std::fs::write(&other_file, other).expect("write other.nft");
    run(
        "ip",
        &[
            "netns",
            "exec",
            &ns,
            "nft",
            "-f",
            &other_file.to_string_lossy(),
        ],
    );
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        "[admin]\nlisten = \"127.0.0.1:9990\"\n\n\
         [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
         [[routes]]\nlistener = \"public\"\ncluster = \"c\"\n\n\
         [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n",
    )
    .expect("write config");
    let config = config.to_string_lossy().into_owned();
    let args = [
        "--proxy-uid",
        PROXY_UID,
        "--skip-inbound-ports",
        "22,9901",
        "--skip-outbound-ports",
        "25",
        "--skip-outbound-cidrs",
        "10.0.0.0/8,fd00::/8",
        "--skip-outbound-cidrs",
        "192.168.7.0/24",
        "--config",
        &config,
    ];

    let before = ruleset(&ns);
    assert!(before.contains("table inet other"), "{before}");

    // --dry-run prints the script and touches nothing.
    let dry = redirect(&ns, &[&args[..], &["--dry-run"]].concat());
    assert_ok("redirect --dry-run", &dry);
    let script = String::from_utf8_lossy(&dry.stdout);
    for needed in [
        "table inet switchyard {",
        "delete table inet switchyard",
        "elements = { 22, 9901, 9990, 15006 }",
        "elements = { 25 }",
        "elements = { 10.0.0.0/8, 192.168.7.0/24 }",
        "elements = { fd00::/8 }",
        "meta skuid 4242 counter return",
        "meta l4proto tcp counter redirect to :15006",
        "meta l4proto tcp counter redirect to :15001",
    ] {
        assert!(script.contains(needed), "{needed:?} not in\n{script}");
    }
    assert_eq!(ruleset(&ns), before, "--dry-run changed the ruleset");

    let first = redirect(&ns, &args);
    assert_ok("redirect", &first);
    let once = ruleset(&ns);
    assert_ne!(once, before);
    for needed in [
        "table inet switchyard {",
        "type nat hook prerouting priority dstnat; policy accept;",
        "type nat hook output priority -100; policy accept;",
        "meta skuid 4242 counter packets 0 bytes 0 return",
        "redirect to :15006",
        "redirect to :15001",
        "elements = { 10.0.0.0/8, 192.168.7.0/24 }",
        "elements = { fd00::/8 }",
    ] {
        assert!(once.contains(needed), "{needed:?} not in\n{once}");
    }
    assert!(
        once.contains(before.trim_end()),
        "the other table changed:\nbefore:\n{before}\nafter:\n{once}"
    );

    let second = redirect(&ns, &args);
    assert_ok("redirect (again)", &second);
    assert_eq!(ruleset(&ns), once, "a second run changed the ruleset");

    let dry = redirect(&ns, &[&args[..], &["--dry-run"]].concat());
    assert_ok("redirect --dry-run over the rules", &dry);
    assert_eq!(ruleset(&ns), once, "--dry-run changed the ruleset");

    let removed = redirect(&ns, &["--remove"]);
    assert_ok("redirect --remove", &removed);
    assert_eq!(ruleset(&ns), before, "--remove did not restore the ruleset");
    let again = redirect(&ns, &["--remove"]);
    assert_ok("redirect --remove (absent)", &again);
    assert_eq!(ruleset(&ns), before);

    // No skip at all: the empty sets are valid nft too.
    let bare = redirect(&ns, &["--proxy-uid", PROXY_UID]);
    assert_ok("redirect with empty skip sets", &bare);
    let rules = ruleset(&ns);
    assert!(rules.contains("redirect to :15001"), "{rules}");
    let removed = redirect(&ns, &["--remove"]);
    assert_ok("redirect --remove", &removed);
    assert_eq!(ruleset(&ns), before);
}

#[test]
fn nft_failures_exit_non_zero_with_nfts_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    // An nft that refuses whatever it is given, as nft does without CAP_NET_ADMIN.
    let fake = dir.path().join("nft");
    std::fs::write(
        &fake,
        "#!/bin/sh\ncat >/dev/null\necho 'Error: Could not process rule: Operation not permitted' >&2\nexit 1\n",
    )
    .expect("write fake nft");
    run("chmod", &["+x", &fake.to_string_lossy()]);
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = BinProcess::command(&["redirect", "--proxy-uid", PROXY_UID])
        .env("PATH", &path)
        .output()
        .expect("run switchyard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must fail: {stderr}");
    assert!(
        stderr.contains("nft -f -` failed") && stderr.contains("Operation not permitted"),
        "{stderr}"
    );
    let out = BinProcess::command(&["redirect", "--remove"])
        .env("PATH", &path)
        .output()
        .expect("run switchyard");
    assert!(!out.status.success());

    // No nft at all.
    let empty = tempfile::tempdir().expect("tempdir");
    let out = BinProcess::command(&["redirect", "--proxy-uid", PROXY_UID])
        .env("PATH", empty.path())
        .output()
        .expect("run switchyard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("is nftables installed"), "{stderr}");

    // Invalid options never reach nft.
    for bad in [
        &["--proxy-uid", "0"][..],
        &["--proxy-uid", PROXY_UID, "--skip-inbound-ports", "0"],
        &[
            "--proxy-uid",
            PROXY_UID,
            "--skip-outbound-cidrs",
            "10.0.0.1/8",
        ],
        &["--proxy-uid", PROXY_UID, "--inbound-port", "15001"],
    ] {
        let out = BinProcess::command(&[&["redirect"], bad].concat())
            .env("PATH", &path)
            .output()
            .expect("run switchyard");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bad:?} must be refused");
        assert!(
            !stderr.contains("Operation not permitted"),
            "{bad:?}: {stderr}"
        );
    }
}

/// Connects from inside `ns` (optionally as `uid`) to `host:port` with bash's `/dev/tcp`, sends
/// a GET and returns the answer's status line, or `None` when the connection failed (refused
/// or timed out after 3 s).
fn probe(ns: &str, uid: Option<&str>, host: &str, port: u16) -> Option<String> {
    let script = format!(
        "exec 3<>/dev/tcp/{host}/{port} || exit 7; \
         printf 'GET / HTTP/1.1\\r\\nhost: probe\\r\\nconnection: close\\r\\n\\r\\n' >&3; \
         head -n 1 <&3"
    );
    let mut args: Vec<&str> = Vec::new();
    if let Some(uid) = uid {
        args.extend(["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"]);
    }
    args.extend(["timeout", "3", "bash", "-c", &script]);
    let out = in_ns(ns, args[0], &args[1..]);
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && line.starts_with("HTTP/")).then_some(line)
}

/// The packet count of the rule containing `needle` in `chain` of our table (nat rules see the
/// first packet of each connection only, so this counts connections).
fn counter(ns: &str, chain: &str, needle: &str) -> u64 {
    let listing = run(
        "ip",
        &[
            "netns",
            "exec",
            ns,
            "nft",
            "list",
            "chain",
            "inet",
            "switchyard",
            chain,
        ],
    );
    let line = listing
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no rule with {needle:?} in\n{listing}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "packets")
        .unwrap_or_else(|| panic!("no counter in {line:?}"));
    words
        .get(at + 1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {line:?}"))
}

/// Runs `switchyard run` on `toml` inside `ns`.
fn proxy_in(ns: &str, toml: &str) -> BinProxy {
    BinProxy::start_with(toml, |cmd| {
        let mut wrapped = Command::new("ip");
        wrapped
            .args(["netns", "exec", ns])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        wrapped
    })
}

#[test]
fn the_rules_redirect_inbound_and_outbound_tcp_but_not_the_proxy_uid_or_skipped_traffic() {
    // Pod P (10.78.0.1, fd78::1) and a peer C (10.78.0.2, fd78::2; also 10.9.9.9, 10.8.0.5,
    // fd99::9, fd77::5) on a veth pair; P's default routes go to C, so an outbound connection
    // that is not redirected reaches C.
    let mut namespaces = Namespaces { names: Vec::new() };
    let p = namespaces.add(prefix("p"));
    let c = namespaces.add(prefix("c"));
    run(
        "ip",
        &[
            "-n", &p, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &c,
        ],
    );
    run(
        "ip",
        &["-n", &p, "addr", "add", "10.78.0.1/24", "dev", "eth0"],
    );
    run(
        "ip",
        &["-n", &c, "addr", "add", "10.78.0.2/24", "dev", "eth0"],
    );
    run("ip", &["-n", &c, "addr", "add", "10.9.9.9/32", "dev", "lo"]);
    run("ip", &["-n", &c, "addr", "add", "10.8.0.5/32", "dev", "lo"]);
    run("ip", &["-n", &p, "link", "set", "eth0", "up"]);
    run("ip", &["-n", &c, "link", "set", "eth0", "up"]);
    run(
        "ip",
        &["-n", &p, "route", "add", "default", "via", "10.78.0.2"],
    );
    // The same over IPv6 (no duplicate address detection: the addresses are usable at once).
    for (ns, addr, dev) in [
        (&p, "fd78::1/64", "eth0"),
        (&c, "fd78::2/64", "eth0"),
        (&c, "fd99::9/128", "lo"),
        (&c, "fd77::5/128", "lo"),
    ] {
        run("ip", &["-n", ns, "addr", "add", addr, "dev", dev, "nodad"]);
    }
    run(
        "ip",
        &["-n", &p, "-6", "route", "add", "default", "via", "fd78::2"],
    );

    // P's sidecar: the outbound (127.0.0.1 and ::1) and inbound listeners answer 502 (their
    // cluster is down). C's server on 10.9.9.9:80 and [fd99::9]:80 answers 404 (no route matches): who answered tells whether a
    // connection was redirected.
    let _sidecar = proxy_in(
        &p,
        "[admin]\nlisten = \"127.0.0.1:9990\"\n\n\
         [[listeners]]\nname = \"outbound\"\nlisten = \"127.0.0.1:15001\"\n\n\
         [[listeners]]\nname = \"outbound6\"\nlisten = \"[::1]:15001\"\n\n\
         [[listeners]]\nname = \"inbound\"\nlisten = \"0.0.0.0:15006\"\n\n\
         [[routes]]\nlistener = \"outbound\"\ncluster = \"down\"\n\n\
         [[routes]]\nlistener = \"outbound6\"\ncluster = \"down\"\n\n\
         [[routes]]\nlistener = \"inbound\"\ncluster = \"down\"\n\n\
         [clusters.down]\nendpoints = [\"127.0.0.1:1\"]\n",
    );
    let _direct = proxy_in(
        &c,
        "[admin]\nlisten = \"127.0.0.1:9990\"\n\n\
         [[listeners]]\nname = \"direct\"\nlisten = \"10.9.9.9:80\"\n\n\
         [[listeners]]\nname = \"direct6\"\nlisten = \"[fd99::9]:80\"\n\n\
         [[routes]]\nlistener = \"direct\"\nmatch = { path_prefix = \"/never\" }\ncluster = \"down\"\n\n\
         [[routes]]\nlistener = \"direct6\"\nmatch = { path_prefix = \"/never\" }\ncluster = \"down\"\n\n\
         [clusters.down]\nendpoints = [\"127.0.0.1:1\"]\n",
    );
    let sidecar = "HTTP/1.1 502";
    let direct = "HTTP/1.1 404";
    let answered = |ns: &str, uid: Option<&str>, host: &str, port: u16| {
        probe(ns, uid, host, port).unwrap_or_else(|| panic!("{host}:{port} from {ns}: no answer"))
    };

    // Without rules: outbound reaches C, inbound to an app port nobody serves is refused.
    assert!(answered(&p, None, "10.9.9.9", 80).starts_with(direct));
    assert!(answered(&p, None, "fd99::9", 80).starts_with(direct));
    assert_eq!(probe(&c, None, "10.78.0.1", 8080), None);

    let applied = redirect(
        &p,
        &[
            "--proxy-uid",
            PROXY_UID,
            "--skip-inbound-ports",
            "22",
            "--skip-outbound-ports",
            "25",
            "--skip-outbound-cidrs",
            "10.8.0.0/16,fd77::/16",
        ],
    );
    assert_ok("redirect", &applied);
    let outbound = || counter(&p, "output", "redirect to :15001");
    let inbound = || counter(&p, "prerouting", "redirect to :15006");
    let proxy_uid = || counter(&p, "output", "meta skuid");
    assert_eq!((outbound(), inbound(), proxy_uid()), (0, 0, 0));

    // The app's outbound connection goes to the outbound listener.
    let line = answered(&p, None, "10.9.9.9", 80);
    assert!(line.starts_with(sidecar), "not redirected: {line}");
    assert_eq!(outbound(), 1);

    // The proxy's own connection to the same address is not intercepted again: it reaches C.
    let line = answered(&p, Some(PROXY_UID), "10.9.9.9", 80);
    assert!(
        line.starts_with(direct),
        "the proxy UID was redirected: {line}"
    );
    assert_eq!(outbound(), 1, "the proxy UID's connection hit the redirect");
    assert_eq!(proxy_uid(), 1);

    // A skipped port and a skipped CIDR pass untouched (C refuses them: nothing listens there).
    assert_eq!(probe(&p, None, "10.9.9.9", 25), None);
    assert_eq!(probe(&p, None, "10.8.0.5", 80), None);
    assert_eq!(outbound(), 1, "a skipped port or CIDR hit the redirect");

    // IPv6: redirected to [::1]:15001; the proxy UID and a skipped v6 CIDR are not.
    let line = answered(&p, None, "fd99::9", 80);
    assert!(
        line.starts_with(sidecar),
        "not redirected over IPv6: {line}"
    );
    assert_eq!(outbound(), 2);
    let line = answered(&p, Some(PROXY_UID), "fd99::9", 80);
    assert!(
        line.starts_with(direct),
        "the proxy UID was redirected (v6): {line}"
    );
    assert_eq!(probe(&p, None, "fd77::5", 80), None);
    assert_eq!(
        outbound(),
        2,
        "the proxy UID or a skipped v6 CIDR hit the redirect"
    );
    assert_eq!(proxy_uid(), 2);

    // Inbound: C's connection to P's app port reaches the inbound listener; a skipped port
    // does not (refused: nothing listens on 22).
    let line = answered(&c, None, "10.78.0.1", 8080);
    assert!(line.starts_with(sidecar), "not redirected inbound: {line}");
    assert_eq!(inbound(), 1);
    assert_eq!(probe(&c, None, "10.78.0.1", 22), None);
    assert_eq!(inbound(), 1, "a skipped inbound port hit the redirect");

    // Removed: back to the direct path.
    assert_ok("redirect --remove", &redirect(&p, &["--remove"]));
    assert!(answered(&p, None, "10.9.9.9", 80).starts_with(direct));
    assert!(answered(&p, None, "fd99::9", 80).starts_with(direct));
    assert_eq!(probe(&c, None, "10.78.0.1", 8080), None);
}
