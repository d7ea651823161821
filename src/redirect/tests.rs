//! The generated script, line by line, for every option; validation errors. That nft accepts
//! these scripts is checked against the real nft in a network namespace by
//! `tests/control/transparent_redirect.rs`.

use super::*;

fn args(uid: u32) -> RuleArgs {
    RuleArgs {
        proxy_uid: uid,
        ..RuleArgs::default()
    }
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter()
        .map(|c| c.parse().unwrap_or_else(|e| panic!("{c}: {e}")))
        .collect()
}

fn rules(args: &RuleArgs) -> Rules {
    Rules::new(args, &ConfigPorts::default()).expect("valid options")
}

/// The lines of `script` with their indentation removed, for `contains` checks that do not
/// depend on tabs.
fn lines(script: &str) -> Vec<String> {
    script.lines().map(|l| l.trim().to_owned()).collect()
}

/// The body of the chain or set `name` in `script` (the lines between its `{` and `}`).
fn block(script: &str, header: &str) -> Vec<String> {
    let all = lines(script);
    let start = all
        .iter()
        .position(|l| l == &format!("{header} {{"))
        .unwrap_or_else(|| panic!("no {header:?} in\n{script}"));
    all[start + 1..]
        .iter()
        .take_while(|l| *l != "}")
        .cloned()
        .collect()
}

#[test]
fn defaults_give_the_documented_script_exactly() {
    let script = rules(&args(4242)).script();
    let expected = "#!/usr/sbin/nft -f
# switchyard redirect: replaces table inet switchyard atomically (one transaction)
table inet switchyard
delete table inet switchyard
table inet switchyard {
\tset skip_inbound_ports {
\t\ttype inet_service
\t\telements = { 15006 }
\t}
\tset skip_outbound_ports {
\t\ttype inet_service
\t}
\tset skip_outbound_v4 {
\t\ttype ipv4_addr
\t\tflags interval
\t\tauto-merge
\t}
\tset skip_outbound_v6 {
\t\ttype ipv6_addr
\t\tflags interval
\t\tauto-merge
\t}
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tiifname \"lo\" return
\t\tmeta l4proto != tcp return
\t\ttcp dport @skip_inbound_ports return
\t\tmeta l4proto tcp counter redirect to :15006
\t}
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tmeta skuid 4242 counter return
\t\tmeta l4proto != tcp return
\t\tip daddr 127.0.0.0/8 return
\t\tip6 daddr ::1 return
\t\tip daddr @skip_outbound_v4 return
\t\tip6 daddr @skip_outbound_v6 return
\t\ttcp dport @skip_outbound_ports return
\t\tmeta l4proto tcp counter redirect to :15001
\t}
}
";
    assert_eq!(script, expected);
}

#[test]
fn the_table_is_replaced_in_one_script_create_delete_recreate() {
    let all = lines(&rules(&args(1)).script());
    let code: Vec<&String> = all.iter().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(code[0], "table inet switchyard");
    assert_eq!(code[1], "delete table inet switchyard");
    assert_eq!(code[2], "table inet switchyard {");
    // Nothing outside the table: no other table, no flush of the ruleset.
    assert_eq!(all.last().map(String::as_str), Some("}"));
    assert!(!all.iter().any(|l| l.contains("flush")), "{all:?}");
    let tables = all.iter().filter(|l| l.starts_with("table ")).count();
    assert_eq!(tables, 2);
}

#[test]
fn every_option_lands_in_its_rule_or_set() {
    let options = RuleArgs {
        proxy_uid: 2102,
        inbound_port: Some(4143),
        outbound_port: Some(4140),
        skip_inbound_ports: vec![22, 9901, 22],
        skip_outbound_ports: vec![25, 3306],
        skip_outbound_cidrs: cidrs(&["10.0.0.0/8", "fd00::/8", "192.168.1.7", "2001:db8::1"]),
    };
    let script = rules(&options).script();
    assert_eq!(
        block(&script, "set skip_inbound_ports"),
        ["type inet_service", "elements = { 22, 4143, 9901 }"],
        "sorted, deduplicated, and the inbound port itself"
    );
    assert_eq!(
        block(&script, "set skip_outbound_ports"),
        ["type inet_service", "elements = { 25, 3306 }"]
    );
    assert_eq!(
        block(&script, "set skip_outbound_v4"),
        [
            "type ipv4_addr",
            "flags interval",
            "auto-merge",
            "elements = { 10.0.0.0/8, 192.168.1.7 }"
        ]
    );
    assert_eq!(
        block(&script, "set skip_outbound_v6"),
        [
            "type ipv6_addr",
            "flags interval",
            "auto-merge",
            "elements = { 2001:db8::1, fd00::/8 }"
        ]
    );
    let prerouting = block(&script, "chain prerouting");
    assert_eq!(
        prerouting.last().map(String::as_str),
        Some("meta l4proto tcp counter redirect to :4143")
    );
    let output = block(&script, "chain output");
    assert_eq!(output[1], "meta skuid 2102 counter return");
    assert_eq!(
        output.last().map(String::as_str),
        Some("meta l4proto tcp counter redirect to :4140")
    );
}

#[test]
fn the_proxy_uid_returns_before_anything_else_in_output() {
    let output = block(&rules(&args(1337)).script(), "chain output");
    assert!(output[0].starts_with("type nat hook output"), "{output:?}");
    assert_eq!(output[1], "meta skuid 1337 counter return");
    // The redirect is the last rule: every return comes before it.
    let redirect = output
        .iter()
        .position(|l| l.contains("redirect"))
        .expect("a redirect rule");
    assert_eq!(redirect, output.len() - 1);
    for needed in [
        "ip daddr 127.0.0.0/8 return",
        "ip6 daddr ::1 return",
        "meta l4proto != tcp return",
    ] {
        assert!(output.iter().any(|l| l == needed), "{needed}: {output:?}");
    }
}

#[test]
fn prerouting_skips_loopback_other_protocols_and_skipped_ports_before_redirecting() {
    let prerouting = block(&rules(&args(7)).script(), "chain prerouting");
    assert_eq!(
        prerouting,
        [
            "type nat hook prerouting priority dstnat; policy accept;",
            "iifname \"lo\" return",
            "meta l4proto != tcp return",
            "tcp dport @skip_inbound_ports return",
            "meta l4proto tcp counter redirect to :15006",
        ]
    );
}

#[test]
fn empty_skip_sets_are_declared_without_elements() {
    let script = rules(&args(5)).script();
    for set in [
        "skip_outbound_ports",
        "skip_outbound_v4",
        "skip_outbound_v6",
    ] {
        let body = block(&script, &format!("set {set}"));
        assert!(
            !body.iter().any(|l| l.starts_with("elements")),
            "{set}: {body:?}"
        );
    }
    // `elements = { }` would be a syntax error in nft.
    assert!(
        !script.contains("{  }") && !script.contains("{ }"),
        "{script}"
    );
}

#[test]
fn only_v6_or_only_v4_cidrs_leave_the_other_set_empty() {
    let mut options = args(5);
    options.skip_outbound_cidrs = cidrs(&["::/0"]);
    let script = rules(&options).script();
    assert_eq!(
        block(&script, "set skip_outbound_v6")
            .last()
            .map(String::as_str),
        Some("elements = { ::/0 }")
    );
    assert!(!block(&script, "set skip_outbound_v4")
        .iter()
        .any(|l| l.starts_with("elements")));

    options.skip_outbound_cidrs = cidrs(&["0.0.0.0/0"]);
    let script = rules(&options).script();
    assert_eq!(
        block(&script, "set skip_outbound_v4")
            .last()
            .map(String::as_str),
        Some("elements = { 0.0.0.0/0 }")
    );
    assert!(!block(&script, "set skip_outbound_v6")
        .iter()
        .any(|l| l.starts_with("elements")));
}

#[test]
fn the_same_options_in_another_order_give_the_same_script() {
    let mut a = args(9);
    a.skip_inbound_ports = vec![9901, 22];
    a.skip_outbound_cidrs = cidrs(&["fd00::/8", "10.0.0.0/8"]);
    let mut b = args(9);
    b.skip_inbound_ports = vec![22, 9901, 9901];
    b.skip_outbound_cidrs = cidrs(&["10.0.0.0/8", "fd00::/8", "10.0.0.0/8"]);
    assert_eq!(rules(&a).script(), rules(&b).script());
}

#[test]
fn the_config_adds_its_admin_port_and_flags_win_over_its_listener_ports() {
    let config = ConfigPorts {
        skip_inbound: vec![9990, 0],
        inbound_port: Some(16006),
        outbound_port: Some(16001),
    };
    let from_config = Rules::new(&args(3), &config).expect("valid");
    assert_eq!(from_config.inbound_port, 16006);
    assert_eq!(from_config.outbound_port, 16001);
    assert_eq!(
        from_config.skip_inbound_ports,
        BTreeSet::from([9990, 16006]),
        "port 0 (any free port) is not a port to skip"
    );
    let mut flags = args(3);
    flags.inbound_port = Some(4143);
    flags.outbound_port = Some(4140);
    let from_flags = Rules::new(&flags, &config).expect("valid");
    assert_eq!(
        (from_flags.inbound_port, from_flags.outbound_port),
        (4143, 4140)
    );
    assert_eq!(from_flags.skip_inbound_ports, BTreeSet::from([4143, 9990]));
}

#[test]
fn config_ports_come_from_the_admin_listener() {
    let text = "[admin]\nlisten = \"127.0.0.1:9990\"\n\n\
                [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:0\"\n\n\
                [[routes]]\nlistener = \"public\"\ncluster = \"c\"\n\n\
                [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n";
    let config = crate::config::parse(text, std::path::Path::new("t.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let ports = ConfigPorts::from_config(&config);
    assert_eq!(ports.skip_inbound, [9990]);
}

#[test]
fn config_ports_come_from_the_inbound_and_outbound_listeners() {
    let config_of = |inbound: &str, outbound: &str| {
        let text = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [[listeners]]\nname = \"public\"\nlisten = \"127.0.0.1:8080\"\n\n\
             [[listeners]]\nname = \"in\"\nlisten = \"{inbound}\"\nmode = \"inbound\"\n\n\
             {outbound}\
             [[routes]]\nlistener = \"public\"\ncluster = \"c\"\n\n\
             [clusters.c]\nendpoints = [\"127.0.0.1:1\"]\n"
        );
        crate::config::parse(&text, std::path::Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let outbound = "[[listeners]]\nname = \"out\"\nlisten = \"127.0.0.1:16001\"\n\
                    mode = \"outbound\"\n\n";
    let ports = ConfigPorts::from_config(&config_of("0.0.0.0:16006", outbound));
    assert_eq!(
        ports,
        ConfigPorts {
            skip_inbound: Vec::new(),
            inbound_port: Some(16006),
            outbound_port: Some(16001),
        },
        "the http listener's 8080 is neither; admin port 0 is not skipped"
    );
    let rules = Rules::new(&args(3), &ports).expect("valid");
    assert_eq!((rules.inbound_port, rules.outbound_port), (16006, 16001));

    // Port 0 (any free port) is no port to redirect to; no outbound listener, no port.
    let ports = ConfigPorts::from_config(&config_of("0.0.0.0:0", ""));
    assert_eq!((ports.inbound_port, ports.outbound_port), (None, None));
    let rules = Rules::new(&args(3), &ports).expect("valid");
    assert_eq!(
        (rules.inbound_port, rules.outbound_port),
        (DEFAULT_INBOUND_PORT, DEFAULT_OUTBOUND_PORT)
    );
}

#[test]
fn invalid_options_are_refused_with_the_flag_named() {
    let refused = |options: RuleArgs, needle: &str| {
        let err = Rules::new(&options, &ConfigPorts::default()).expect_err("must be refused");
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
    };
    refused(args(0), "--proxy-uid 0");
    refused(args(u32::MAX), "--proxy-uid");
    let mut same = args(5);
    same.inbound_port = Some(15001);
    refused(same, "must differ");
    let mut zero = args(5);
    zero.skip_outbound_ports = vec![0];
    refused(zero, "--skip-outbound-ports");
    let mut zero = args(5);
    zero.skip_inbound_ports = vec![0];
    refused(zero, "--skip-inbound-ports");
    let mut zero = args(5);
    zero.inbound_port = Some(0);
    refused(zero, "--inbound-port");
}

#[test]
fn ports_and_uids_parse_with_their_range_in_the_error() {
    assert_eq!(parse_port("1"), Ok(1));
    assert_eq!(parse_port(" 65535 "), Ok(65535));
    for bad in ["0", "65536", "-1", "ssh", ""] {
        let err = parse_port(bad).expect_err(bad);
        assert!(err.contains("1-65535"), "{bad}: {err}");
    }
    assert_eq!(parse_uid("2102"), Ok(2102));
    assert!(parse_uid("0").is_err());
    assert!(parse_uid("proxy").expect_err("name").contains("numeric"));
    assert!(parse_uid("-5").is_err());
    assert!(parse_uid("4294967295").is_err());
}

#[test]
fn cidrs_parse_with_std_types_and_refuse_host_bits() {
    let shown = |text: &str| text.parse::<Cidr>().map(|c| c.to_string());
    assert_eq!(shown("10.0.0.0/8"), Ok("10.0.0.0/8".to_owned()));
    assert_eq!(shown("10.1.2.3"), Ok("10.1.2.3".to_owned()));
    assert_eq!(shown("10.1.2.3/32"), Ok("10.1.2.3".to_owned()));
    assert_eq!(shown("0.0.0.0/0"), Ok("0.0.0.0/0".to_owned()));
    assert_eq!(shown("fd00::/8"), Ok("fd00::/8".to_owned()));
    assert_eq!(shown("FD00:0::/8"), Ok("fd00::/8".to_owned()));
    assert_eq!(shown("::1/128"), Ok("::1".to_owned()));
    assert_eq!(shown("::/0"), Ok("::/0".to_owned()));
    let err = shown("10.0.0.1/8").expect_err("host bits");
    assert!(err.contains("did you mean 10.0.0.0/8"), "{err}");
    let err = shown("fd00::1/8").expect_err("host bits");
    assert!(err.contains("did you mean fd00::/8"), "{err}");
    for bad in [
        "10.0.0.0/33",
        "fd00::/129",
        "10.0.0/8",
        "example.com",
        "10.0.0.0/",
        "",
    ] {
        assert!(shown(bad).is_err(), "{bad} must be refused");
    }
    assert!(cidrs(&["10.0.0.0/8"])[0].is_ipv4());
    assert!(!cidrs(&["fd00::/8"])[0].is_ipv4());
}

#[test]
fn remove_deletes_only_our_table_and_cannot_fail_when_it_is_absent() {
    assert_eq!(
        remove_script(),
        "table inet switchyard\ndelete table inet switchyard\n"
    );
}
