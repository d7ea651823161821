//! `switchyard redirect`: the privileged init step of transparent mode (like `linkerd-init` or
//! `istio-iptables`). It writes nftables rules in the current network namespace that send the
//! workload's TCP to the sidecar's listeners:
//!
//! - inbound TCP (hook `prerouting`: not from `lo`, destination port not skipped) is redirected
//!   to the inbound listener's port (15006 by default);
//! - outbound TCP (hook `output`: not from the proxy's UID, not to loopback, not to a skipped
//!   CIDR or port) is redirected to the outbound listener's port (15001 by default).
//!
//! Everything lives in one table, `inet switchyard`; nothing else in the ruleset is touched.
//! This module only generates text ([`Rules::script`], [`remove_script`]) and validates
//! options, as pure functions the unit tests check line by line; [`nft`] runs the script.
//!
//! **Why a subprocess (`nft -f -`) and not a netlink crate.** `nft -f` applies a whole file as
//! one kernel transaction, so replacing the table (`table` / `delete table` / `table { .. }`) is
//! atomic: there is never a moment without rules, and a second run leaves the same ruleset
//! (idempotent). The script is also exactly what an operator reads with `--dry-run` and debugs
//! with `nft list table inet switchyard`, in the tool they already know. The anchors do the same
//! (linkerd-init and istio-iptables shell out to `iptables-restore`). A netlink crate would add
//! a dependency and its own batch encoding for a step that runs once per pod start, and it would
//! still need the operator to translate its calls back into nft syntax to debug them.
//!
//! **Why the inbound port itself is skipped inbound.** A peer sidecar's tunnel is addressed to
//! `POD_IP:INBOUND_PORT`. Redirecting it would rewrite its destination to the primary address
//! of the incoming interface, so on a pod address that is not the primary one the inbound
//! listener would see an original destination different from its local address and take the
//! tunnel for redirected plaintext. Not touching it keeps `SO_ORIGINAL_DST` equal to the local
//! address (or absent), which is how the inbound listener recognises a tunnel.
//!
//! The mesh port is UDP and is never redirected (only TCP is), so only the admin port is
//! added to the inbound skips from a config file. A config file also gives the inbound and
//! outbound ports (its `mode = "inbound"` / `"outbound"` listeners'), which the flags
//! override ([`ConfigPorts`]).

pub mod nft;

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::config::{Config, ListenerMode};

/// The nftables table (family `inet`: IPv4 and IPv6 in one) that holds every rule this step
/// writes; its name is what `--remove` deletes and what an operator lists.
pub const TABLE: &str = "switchyard";

/// The inbound listener's port when neither a flag nor the config says otherwise (Istio's).
pub const DEFAULT_INBOUND_PORT: u16 = 15006;

/// The outbound listener's port when neither a flag nor the config says otherwise (Istio's).
pub const DEFAULT_OUTBOUND_PORT: u16 = 15001;

/// The validated rule options: everything [`Rules::script`] needs, nothing it must check again.
/// Sets are ordered so that the same options always give the same script, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// The sidecar's UID: its own connections are never redirected (no loop).
    pub proxy_uid: u32,
    /// Where inbound TCP goes (the `mode = "inbound"` listener's port).
    pub inbound_port: u16,
    /// Where outbound TCP goes (the `mode = "outbound"` listener's port).
    pub outbound_port: u16,
    /// Destination ports of inbound TCP left alone (SSH, the admin API, the inbound port).
    pub skip_inbound_ports: BTreeSet<u16>,
    /// Destination ports of outbound TCP left alone (SMTP, a database the app must reach
    /// directly).
    pub skip_outbound_ports: BTreeSet<u16>,
    /// Outbound destinations left alone, IPv4 and IPv6 (the two kinds go to two nft sets).
    pub skip_outbound_cidrs: BTreeSet<Cidr>,
}

/// What the command line (or an embedder) asks for, before validation and before the config
/// file's defaults are merged in. `None` means "not given".
#[derive(Debug, Clone, Default)]
pub struct RuleArgs {
    /// `--proxy-uid`: checked by [`validate_uid`].
    pub proxy_uid: u32,
    /// `--inbound-port`; `None` takes the config's inbound listener, then 15006.
    pub inbound_port: Option<u16>,
    /// `--outbound-port`; `None` takes the config's outbound listener, then 15001.
    pub outbound_port: Option<u16>,
    /// `--skip-inbound-ports`, in the order given (duplicates allowed; the set drops them).
    pub skip_inbound_ports: Vec<u16>,
    /// `--skip-outbound-ports`, as given.
    pub skip_outbound_ports: Vec<u16>,
    /// `--skip-outbound-cidrs`, IPv4 and IPv6 mixed, as given.
    pub skip_outbound_cidrs: Vec<Cidr>,
}

/// What a config file contributes: ports to skip inbound and listener ports. Its own type so
/// the merge ([`Rules::new`]) is a pure function the tests call without a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigPorts {
    /// The admin API's port (TCP); never redirected inbound.
    pub skip_inbound: Vec<u16>,
    /// The inbound listener's port, when the config has one.
    pub inbound_port: Option<u16>,
    /// The outbound listener's port, when the config has one.
    pub outbound_port: Option<u16>,
}

impl ConfigPorts {
    /// Reads the ports from a validated config: the admin listener's port is skipped inbound,
    /// and the `mode = "inbound"` / `"outbound"` listeners' ports are where redirected TCP
    /// goes (validation allows at most one of each). Port 0, "any free port", cannot be known
    /// here and is left out: the flag or the default then applies.
    pub fn from_config(config: &Config) -> Self {
        let known = |port: u16| (port != 0).then_some(port);
        let port_of = |wanted: fn(&ListenerMode) -> bool| {
            config
                .listeners
                .iter()
                .find(|listener| wanted(&listener.mode))
                .and_then(|listener| known(listener.listen.port()))
        };
        Self {
            skip_inbound: known(config.admin.listen.port()).into_iter().collect(),
            inbound_port: port_of(|mode| matches!(mode, ListenerMode::Inbound(_))),
            outbound_port: port_of(|mode| matches!(mode, ListenerMode::Outbound(_))),
        }
    }
}

impl Rules {
    /// Validates `args` and merges in `config` (flags win over the config, the config over the
    /// defaults). Every error names the flag and the value.
    pub fn new(args: &RuleArgs, config: &ConfigPorts) -> Result<Self, String> {
        let proxy_uid = validate_uid(args.proxy_uid)
            .map_err(|e| format!("--proxy-uid {}: {e}", args.proxy_uid))?;
        let inbound_port = args
            .inbound_port
            .or(config.inbound_port)
            .unwrap_or(DEFAULT_INBOUND_PORT);
        let outbound_port = args
            .outbound_port
            .or(config.outbound_port)
            .unwrap_or(DEFAULT_OUTBOUND_PORT);
        check_port("--inbound-port", inbound_port)?;
        check_port("--outbound-port", outbound_port)?;
        if inbound_port == outbound_port {
            return Err(format!(
                "--inbound-port and --outbound-port are both {inbound_port}: the listener a \
                 connection reaches tells its direction, so they must differ"
            ));
        }
        let mut skip_inbound_ports = BTreeSet::new();
        for &port in &args.skip_inbound_ports {
            check_port("--skip-inbound-ports", port)?;
            skip_inbound_ports.insert(port);
        }
        skip_inbound_ports.extend(config.skip_inbound.iter().copied().filter(|&p| p != 0));
        // Tunnels from peer sidecars are addressed to the inbound port: see the module doc.
        skip_inbound_ports.insert(inbound_port);
        let mut skip_outbound_ports = BTreeSet::new();
        for &port in &args.skip_outbound_ports {
            check_port("--skip-outbound-ports", port)?;
            skip_outbound_ports.insert(port);
        }
        Ok(Self {
            proxy_uid,
            inbound_port,
            outbound_port,
            skip_inbound_ports,
            skip_outbound_ports,
            skip_outbound_cidrs: args.skip_outbound_cidrs.iter().copied().collect(),
        })
    }

    /// The `nft -f` script that replaces the table with these rules in one transaction: the
    /// empty `table` line creates the table if absent so that `delete table` cannot fail, and
    /// the new table follows in the same batch, so the kernel switches from the old rules to the
    /// new ones at once. Running it twice leaves the same ruleset (counters start at zero).
    pub fn script(&self) -> String {
        let mut s = String::new();
        // Writing into a String cannot fail; `let _` keeps the generator free of unwraps.
        let _ = self.write_script(&mut s);
        s
    }

    fn write_script(&self, s: &mut String) -> fmt::Result {
        writeln!(s, "#!/usr/sbin/nft -f")?;
        writeln!(
            s,
            "# switchyard redirect: replaces table inet {TABLE} atomically (one transaction)"
        )?;
        writeln!(s, "table inet {TABLE}")?;
        writeln!(s, "delete table inet {TABLE}")?;
        writeln!(s, "table inet {TABLE} {{")?;
        let v4: Vec<String> = self
            .skip_outbound_cidrs
            .iter()
            .filter(|c| c.is_ipv4())
            .map(Cidr::to_string)
            .collect();
        let v6: Vec<String> = self
            .skip_outbound_cidrs
            .iter()
            .filter(|c| !c.is_ipv4())
            .map(Cidr::to_string)
            .collect();
        let ports = |set: &BTreeSet<u16>| set.iter().map(u16::to_string).collect::<Vec<_>>();
        write_set(
            s,
            "skip_inbound_ports",
            "inet_service",
            false,
            &ports(&self.skip_inbound_ports),
        )?;
        write_set(
            s,
            "skip_outbound_ports",
            "inet_service",
            false,
            &ports(&self.skip_outbound_ports),
        )?;
        write_set(s, "skip_outbound_v4", "ipv4_addr", true, &v4)?;
        write_set(s, "skip_outbound_v6", "ipv6_addr", true, &v6)?;

        writeln!(s, "\tchain prerouting {{")?;
        writeln!(
            s,
            "\t\ttype nat hook prerouting priority dstnat; policy accept;"
        )?;
        writeln!(s, "\t\tiifname \"lo\" return")?;
        writeln!(s, "\t\tmeta l4proto != tcp return")?;
        writeln!(s, "\t\ttcp dport @skip_inbound_ports return")?;
        writeln!(
            s,
            "\t\tmeta l4proto tcp counter redirect to :{}",
            self.inbound_port
        )?;
        writeln!(s, "\t}}")?;

        writeln!(s, "\tchain output {{")?;
        writeln!(s, "\t\ttype nat hook output priority -100; policy accept;")?;
        // First, so nothing the proxy itself opens is ever looked at again (no loop); counted,
        // so an operator (and the netns test) can see its connections pass by.
        writeln!(s, "\t\tmeta skuid {} counter return", self.proxy_uid)?;
        writeln!(s, "\t\tmeta l4proto != tcp return")?;
        writeln!(s, "\t\tip daddr 127.0.0.0/8 return")?;
        writeln!(s, "\t\tip6 daddr ::1 return")?;
        writeln!(s, "\t\tip daddr @skip_outbound_v4 return")?;
        writeln!(s, "\t\tip6 daddr @skip_outbound_v6 return")?;
        writeln!(s, "\t\ttcp dport @skip_outbound_ports return")?;
        writeln!(
            s,
            "\t\tmeta l4proto tcp counter redirect to :{}",
            self.outbound_port
        )?;
        writeln!(s, "\t}}")?;
        writeln!(s, "}}")
    }
}

/// Writes one named set. Empty sets are declared without `elements` (valid nft syntax; a
/// lookup in an empty set matches nothing), so the chains are the same whatever is skipped.
/// Address sets are interval sets with `auto-merge`, so overlapping CIDRs (10.0.0.0/8 and
/// 10.1.0.0/16) merge instead of failing the transaction.
fn write_set(
    s: &mut String,
    name: &str,
    kind: &str,
    interval: bool,
    elements: &[String],
) -> fmt::Result {
    writeln!(s, "\tset {name} {{")?;
    writeln!(s, "\t\ttype {kind}")?;
    if interval {
        writeln!(s, "\t\tflags interval")?;
        writeln!(s, "\t\tauto-merge")?;
    }
    if !elements.is_empty() {
        writeln!(s, "\t\telements = {{ {} }}", elements.join(", "))?;
    }
    writeln!(s, "\t}}")
}

/// The `nft -f` script of `--remove`: deletes the table in one transaction, and succeeds when
/// it is absent (the empty `table` line creates it first; `destroy table` needs nft 1.0.8).
pub fn remove_script() -> String {
    format!("table inet {TABLE}\ndelete table inet {TABLE}\n")
}

/// A UID the rules can exempt. 0 is refused: every root process (the init step itself, a
/// debugging shell, the app if it runs as root) would bypass interception; the anchors run the
/// proxy under its own UID (Linkerd 2102, Istio 1337). `u32::MAX` is `(uid_t)-1`, "no user".
pub fn validate_uid(uid: u32) -> Result<u32, String> {
    match uid {
        0 => Err(
            "the proxy must run under its own non-root UID; exempting root (0) would \
                  let every root process bypass the redirect"
                .to_owned(),
        ),
        u32::MAX => Err(format!("{uid} is not a valid UID ((uid_t)-1)")),
        uid => Ok(uid),
    }
}

/// Parses `--proxy-uid`: a number (no user names: the init step must not depend on the
/// image's `/etc/passwd`), then [`validate_uid`].
pub fn parse_uid(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let uid = text
        .parse::<u32>()
        .map_err(|_| format!("{text:?} is not a numeric UID (0-4294967294)"))?;
    validate_uid(uid)
}

fn check_port(flag: &str, port: u16) -> Result<(), String> {
    if port == 0 {
        Err(format!("{flag}: port 0 is not a port (1-65535)"))
    } else {
        Ok(())
    }
}

/// Parses a port in 1-65535 for a flag, with an error that says the range. Used by the CLI's
/// value parsers, one comma-separated item at a time.
pub fn parse_port(text: &str) -> Result<u16, String> {
    let text = text.trim();
    match text.parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        Ok(_) => Err(format!("{text:?} is not a port (1-65535)")),
        Err(_) => Err(format!("{text:?} is not a port number (1-65535)")),
    }
}

/// An address prefix to skip, IPv4 or IPv6, parsed with std's address types. An address
/// without `/N` is a single host (/32 or /128). Host bits must be zero (`10.0.0.1/8` is
/// refused with the network it probably meant): a typo should not silently widen the skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether this prefix goes to the IPv4 set (`ip daddr`) rather than the IPv6 one.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| format!("{text:?}: {addr_text:?} is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => {
                    return Err(format!(
                        "{text:?}: the prefix length must be 0-{max} for this address"
                    ))
                }
            },
        };
        let network = mask(addr, prefix);
        if network != addr {
            return Err(format!(
                "{text:?}: host bits are set; did you mean {network}/{prefix}?"
            ));
        }
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let max = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == max {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// `addr` with every bit after the first `prefix` cleared.
fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let keep = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & keep))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let keep = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & keep))
        }
    }
}

#[cfg(test)]
mod tests;
