//! Transparent sidecars (issue 27) end to end. A pod is a network namespace on a bridge (a hub
//! namespace, as in `mesh_partition`) with an app and, except in the plain pod, a sidecar: the
//! real binary under its own UID behind the nftables rules `switchyard redirect` writes. The apps
//! call each other's IP and port with no proxy settings; the tests read what the apps saw, the
//! sidecars' metrics (their admin API on 127.0.0.1:9901 inside the pod, fetched by an app) and
//! logs, and nftables counters on the pod's ingress.
//!
//! The apps are this test binary re-executed inside the namespace in a role (see
//! [`app_process`]): a CI machine has no python, and the roles are a few std-only functions.
//! Needs root, `ip` (iproute2), `nft` (nftables) and `setpriv` (util-linux); `.ci/run`
//! installs them, and every test fails (never skips) without them.
//!
//! Every pod's inbound listener has the same per-port policy: 8080 permissive, 8081 strict,
//! 8082 allows only `spiffe://local/a`; 3306 is an opaque port (server speaks first) on both
//! sides. A client pod's outbound sidecar knows B's app (`B_IP:8080`) as the cluster `podb`;
//! every other destination passes through to its original address. Each sidecar runs one
//! worker: upstream pools are per worker, and with one the next request of a test meets the
//! connection the previous one pooled (test 6 depends on it, the counts of test 5 are simpler).
//!
//! The `redirect` rules themselves (idempotence, `--remove`) are tested in
//! `transparent_redirect`.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::netns::{run, Namespaces};
use crate::support::launcher::{BinProcess, Pipe};
use crate::support::metrics::sum;
use crate::support::wait_until;

/// The sidecars' UID (and GID): their own connections are the ones the rules leave alone.
const PROXY_UID: u32 = 1337;
/// Pod `i` has address `SUBNET.(i+1)`.
const SUBNET: &str = "10.232.0";
/// Where each sidecar's admin API listens, inside its pod.
const ADMIN: &str = "127.0.0.1:9901";
/// The apps' ports (see the module doc for their policies).
const HTTP_PORTS: [u16; 3] = [8080, 8081, 8082];
const ECHO_PORT: u16 = 9000;
const BANNER_PORT: u16 = 3306;
/// Set in a re-executed test binary to the app role it plays.
const ROLE_ENV: &str = "SY_TRANSPARENT_APP";
/// The path, inside the control test binary, of the test that plays the apps.
const APP_TEST: &str = "transparent::app_process";
/// Total payload of the opaque echo test.
const ECHO_BYTES: usize = 10 * 1024 * 1024;
/// An endpoint of pod A's cluster `spare` where nothing listens: a connection to it is
/// refused (the sidecar's own connections are not redirected).
const REFUSING: &str = "127.0.0.1:8089";
/// The request headers about the forwarding chain that the HTTP app reports (`fwd=`).
const FORWARDING: [&str; 8] = [
    "via",
    "x-forwarded-for",
    "x-real-ip",
    "forwarded",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-host",
    "x-forwarded-prefix",
];
/// How long a mesh of fresh sidecars may take before their first tunnelled request.
const MESH_READY: Duration = Duration::from_secs(25);

// ---------------------------------------------------------------------------------------------
// The topology

/// One pod of a test: its namespace, address, and the processes running in it.
struct Pod {
    /// `a`, `b`, ...: also its identity `spiffe://local/NAME` when it has a sidecar.
    name: String,
    ns: String,
    ip: String,
    sidecar: Option<BinProcess>,
    app: Option<BinProcess>,
}

impl Pod {
    fn identity(&self) -> String {
        format!("spiffe://local/{}", self.name)
    }

    fn sidecar(&self) -> &BinProcess {
        self.sidecar
            .as_ref()
            .unwrap_or_else(|| panic!("pod {} has no sidecar", self.name))
    }

    fn app(&self) -> &BinProcess {
        self.app
            .as_ref()
            .unwrap_or_else(|| panic!("pod {} runs no app servers", self.name))
    }

    /// Everything the sidecar printed (its logs, access log lines included).
    fn sidecar_log(&self) -> String {
        let s = self.sidecar();
        s.output(Pipe::Stdout) + "\n" + &s.output(Pipe::Stderr)
    }

    /// Everything the app servers printed (a `SYAPP request` line per request).
    fn app_log(&self) -> String {
        let a = self.app();
        a.output(Pipe::Stdout) + "\n" + &a.output(Pipe::Stderr)
    }
}

/// What a test wants of one pod.
#[derive(Clone, Copy)]
struct PodSpec {
    name: &'static str,
    /// Runs a sidecar (identity `spiffe://local/NAME`) behind `switchyard redirect`.
    sidecar: bool,
    /// Runs the app servers (HTTP on 8080-8082, echo on 9000, banner on 3306).
    servers: bool,
}

const fn pod(name: &'static str, sidecar: bool, servers: bool) -> PodSpec {
    PodSpec {
        name,
        sidecar,
        servers,
    }
}

/// The pods of one test. Field order is drop order: processes first, then the namespaces,
/// then the files.
struct Pods {
    pods: Vec<Pod>,
    _ns: Namespaces,
    dir: tempfile::TempDir,
    /// A counter for the client runs' output files.
    runs: std::cell::Cell<u32>,
}

impl Pods {
    /// Builds the namespaces, certificates and configs, starts the apps and waits for them to
    /// listen; no rules or sidecars yet ([`Pods::start_sidecars`]). `tag` makes the namespace
    /// names unique among the tests of this process.
    fn create(tag: &str, specs: &[PodSpec]) -> Self {
        let prefix = format!("syt{}{tag}", std::process::id() % 100_000);
        let hub = format!("{prefix}h");
        let mut ns = Namespaces {
            names: vec![hub.clone()],
        };
        run("ip", &["netns", "add", &hub]);
        run("ip", &["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        run("ip", &["-n", &hub, "link", "set", "br0", "up"]);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut pods = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let name = format!("{prefix}{}", spec.name);
            run("ip", &["netns", "add", &name]);
            ns.names.push(name.clone());
            let outer = format!("p{}", spec.name);
            run(
                "ip",
                &[
                    "-n", &hub, "link", "add", &outer, "type", "veth", "peer", "name", "eth0",
                    "netns", &name,
                ],
            );
            run(
                "ip",
                &["-n", &hub, "link", "set", &outer, "master", "br0", "up"],
            );
            let ip = format!("{SUBNET}.{}", i + 1);
            run(
                "ip",
                &[
                    "-n",
                    &name,
                    "addr",
                    "add",
                    &format!("{ip}/24"),
                    "dev",
                    "eth0",
                ],
            );
            run("ip", &["-n", &name, "link", "set", "eth0", "up"]);
            run("ip", &["-n", &name, "link", "set", "lo", "up"]);
            pods.push(Pod {
                name: spec.name.to_owned(),
                ns: name,
                ip,
                sidecar: None,
                app: None,
            });
        }
        let pods = Self {
            pods,
            _ns: ns,
            dir,
            runs: std::cell::Cell::new(0),
        };
        pods.write_sidecar_files(specs);
        let mut pods = pods;
        for (i, spec) in specs.iter().enumerate() {
            if spec.servers {
                let app = pods.spawn_app(i, &[(ROLE_ENV, "serve")]);
                for port in HTTP_PORTS {
                    app.expect_line(&format!("SYAPP listening http {port}"));
                }
                app.expect_line(&format!("SYAPP listening echo {ECHO_PORT}"));
                app.expect_line(&format!("SYAPP listening banner {BANNER_PORT}"));
                pods.pods[i].app = Some(app);
            }
        }
        pods
    }

    /// [`Pods::create`], then every sidecar.
    fn start(tag: &str, specs: &[PodSpec]) -> Self {
        let mut pods = Self::create(tag, specs);
        pods.start_sidecars(specs);
        pods
    }

    /// `switchyard redirect` and the sidecar in every pod of `specs` that has one.
    fn start_sidecars(&mut self, specs: &[PodSpec]) {
        for spec in specs.iter().filter(|s| s.sidecar) {
            self.start_sidecar(spec.name);
        }
    }

    fn config_path(&self, pod: &str) -> PathBuf {
        self.dir.path().join(format!("{pod}.toml"))
    }

    /// `switchyard redirect` in pod `name` (as root), then its sidecar under [`PROXY_UID`];
    /// waits for the admin API.
    fn start_sidecar(&mut self, name: &str) {
        let binary = self.proxy_binary();
        let config = self.config_path(name).to_string_lossy().into_owned();
        let i = self
            .pods
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"));
        let ns = self.pods[i].ns.clone();
        let uid = PROXY_UID.to_string();
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                &binary,
                "redirect",
                "--proxy-uid",
                &uid,
                "--config",
                &config,
            ],
        );
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns, "setpriv"])
            .arg(format!("--reuid={PROXY_UID}"))
            .arg(format!("--regid={PROXY_UID}"))
            .args(["--clear-groups", "--", &binary, "run", "-c", &config])
            .current_dir(self.dir.path());
        let sidecar = BinProcess::spawn_command(cmd);
        sidecar.expect_line(&format!("admin API listening on http://{ADMIN}"));
        self.pods[i].sidecar = Some(sidecar);
    }

    /// The certificates (a CA, a leaf per sidecar), the mesh key and each sidecar's config,
    /// readable by [`PROXY_UID`] (the sidecar drops root before it reads them).
    fn write_sidecar_files(&self, specs: &[PodSpec]) {
        let dir = self.dir.path();
        let bin = env!("CARGO_BIN_EXE_switchyard");
        let certs = dir.join("certs");
        let certs_arg = certs.to_string_lossy().into_owned();
        run(bin, &["certs", "init", "--dir", &certs_arg]);
        std::fs::write(
            dir.join("mesh.key"),
            "transparent test key, at least thirty-two bytes\n",
        )
        .expect("mesh key");
        let meshed: Vec<&Pod> = specs
            .iter()
            .zip(&self.pods)
            .filter(|(s, _)| s.sidecar)
            .map(|(_, p)| p)
            .collect();
        let b_ip = self.pod("b").ip.clone();
        for pod in &meshed {
            run(
                bin,
                &[
                    "certs",
                    "issue",
                    "--ca",
                    &certs_arg,
                    "--name",
                    &pod.name,
                    "--spiffe",
                    &pod.identity(),
                ],
            );
            let seeds: Vec<String> = meshed
                .iter()
                .filter(|p| p.name != pod.name)
                .map(|p| format!("\"{}:7946\"", p.ip))
                .collect();
            let mut clusters = if pod.name == "b" {
                String::new()
            } else {
                format!("[clusters.podb]\nendpoints = [\"{b_ip}:8080\"]\n\n")
            };
            if pod.name == "a" {
                // Test 7: B's port 8082 as a cluster whose other endpoint refuses connections.
                clusters.push_str(&format!(
                    "[clusters.spare]\nbalance = \"round_robin\"\n\
                     endpoints = [\"{REFUSING}\", \"{b_ip}:8082\"]\n\n"
                ));
            }
            let config = format!(
                "# Pod {name}'s sidecar ({identity}).\n\
                 [runtime]\nworkers = 1\n\n\
                 [admin]\nlisten = \"{ADMIN}\"\n\n\
                 [identity]\ncert = \"certs/{name}.pem\"\nkey = \"certs/{name}.key\"\nca = \"certs/ca.pem\"\n\n\
                 [[listeners]]\nname = \"outbound\"\nlisten = \"127.0.0.1:15001\"\nmode = \"outbound\"\n\
                 detect_timeout = \"10s\"\nopaque_ports = [{BANNER_PORT}]\n\n\
                 [[listeners]]\nname = \"inbound\"\nlisten = \"0.0.0.0:15006\"\nmode = \"inbound\"\n\
                 identity_header = \"x-client-identity\"\nopaque_ports = [{BANNER_PORT}]\n\
                 ports = {{ \"8080\" = {{ mtls = \"permissive\" }}, \"8081\" = {{ mtls = \"strict\" }}, \
                 \"8082\" = {{ allow = [\"spiffe://local/a\"] }} }}\n\n\
                 {clusters}\
                 [mesh]\nlisten = \"{ip}:7946\"\nseeds = [{seeds}]\nsecret_file = \"mesh.key\"\n",
                name = pod.name,
                identity = pod.identity(),
                ip = pod.ip,
                seeds = seeds.join(", "),
            );
            std::fs::write(self.config_path(&pod.name), config).expect("config");
        }
        give_to_proxy_uid(dir);
    }

    /// The switchyard binary as the sidecars' UID can run it: Cargo's own when every folder
    /// above it lets others through, else a copy in the test's folder (CI may build under a
    /// home directory closed to other users).
    fn proxy_binary(&self) -> String {
        let built = Path::new(env!("CARGO_BIN_EXE_switchyard"));
        if others_can_reach(built) {
            return built.to_string_lossy().into_owned();
        }
        // Copied once per test: a second copy onto a running sidecar's file would fail (ETXTBSY).
        let copy = self.dir.path().join("switchyard");
        if !copy.exists() {
            std::fs::copy(built, &copy).expect("copy the switchyard binary");
        }
        copy.to_string_lossy().into_owned()
    }

    fn pod(&self, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name}"))
    }

    /// This test binary, re-executed in pod `i` as [`app_process`] with `env`.
    fn app_command(&self, i: usize, env: &[(&str, &str)]) -> Command {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.pods[i].ns])
            .arg(exe)
            .args([APP_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env("SY_POD", &self.pods[i].name);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    fn spawn_app(&self, i: usize, env: &[(&str, &str)]) -> BinProcess {
        BinProcess::spawn_command(self.app_command(i, env))
    }

    /// Runs the client role in pod `from` with `env` (see [`client`]) and returns what it
    /// wrote to its output file; panics (with the client's output) if it fails or hangs.
    fn client(&self, from: &str, env: &[(&str, &str)]) -> String {
        let i = self
            .pods
            .iter()
            .position(|p| p.name == from)
            .unwrap_or_else(|| panic!("no pod {from}"));
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let out = self.dir.path().join(format!("client-{n}.out"));
        let out_arg = out.to_string_lossy().into_owned();
        let mut env = env.to_vec();
        env.push((ROLE_ENV, "client"));
        env.push(("SY_OUT", &out_arg));
        let mut process = self.spawn_app(i, &env);
        let status = process.wait_exit(Duration::from_secs(60));
        let output = || {
            format!(
                "--- stdout:\n{}\n--- stderr:\n{}",
                process.output(Pipe::Stdout),
                process.output(Pipe::Stderr)
            )
        };
        let Some(status) = status else {
            panic!(
                "client in pod {from} {env:?} still running after 60 s\n{}",
                output()
            );
        };
        assert!(
            status.success(),
            "client in pod {from} {env:?} failed ({status})\n{}\n{}",
            output(),
            self.logs()
        );
        std::fs::read_to_string(&out).unwrap_or_else(|e| {
            panic!(
                "client in pod {from} wrote no {}: {e}\n{}",
                out.display(),
                output()
            )
        })
    }

    /// One HTTP/1.1 request (`Connection: close`) from pod `from`'s app to `addr` with
    /// `host` (default: `addr`); the answer as `(status, body)`, status `closed` / `reset` /
    /// `refused` / `timeout` when there was none.
    fn http(&self, from: &str, addr: &str, path: &str, host: Option<&str>) -> (String, String) {
        let host = host.unwrap_or(addr);
        let out = self.client(
            from,
            &[
                ("SY_ACTION", "http"),
                ("SY_ADDR", addr),
                ("SY_PATH", path),
                ("SY_HOST", host),
            ],
        );
        split_http(&out)
    }

    /// The sidecar metrics of pod `name`, fetched by an app inside the pod.
    fn metrics(&self, name: &str) -> String {
        let (status, body) = self.http(name, ADMIN, "/metrics", None);
        assert_eq!(status, "200", "/metrics of pod {name}: {body}");
        body
    }

    /// [`sum`] of `metric` with `labels` in pod `name`'s sidecar.
    fn sum(&self, name: &str, metric: &str, labels: &[&str]) -> f64 {
        sum(&self.metrics(name), metric, labels)
    }

    /// Waits until pod `from`'s sidecar knows B as a meshed workload (its `/mesh/members`
    /// shows B's tunnel identity), then until `from`'s requests to B's app arrive through the
    /// tunnel (B's inbound passes `from`'s identity to the app). No request goes out before
    /// the first; the second asks B's strict port 8081, which A's sidecar passes through per
    /// connection (no cluster knows it): a plaintext request to the cluster `podb` would leave
    /// a pooled plaintext connection behind (see
    /// `a_plaintext_connection_pooled_before_the_peer_was_meshed_is_not_reused_after`).
    fn wait_meshed(&self, from: &str) {
        self.wait_mesh_knows_b(from);
        let b = self.pod("b");
        let identity = self.pod(from).identity();
        let addr = format!("{}:8081", b.ip);
        let out = self.client(
            from,
            &[
                ("SY_ACTION", "http"),
                ("SY_ADDR", &addr),
                ("SY_PATH", "/ready"),
                ("SY_HOST", &addr),
                ("SY_UNTIL", &format!("identity={identity} ")),
                ("SY_WAIT_MS", &MESH_READY.as_millis().to_string()),
            ],
        );
        let (status, body) = split_http(&out);
        assert!(
            status == "200" && body.contains(&format!("identity={identity} ")),
            "pod {from}'s requests to B never came through the tunnel within {MESH_READY:?}: \
             last answer {status} {body:?}\n{}",
            self.logs()
        );
    }

    /// Waits until pod `from`'s sidecar knows B as a meshed workload: its `/mesh/members`
    /// shows B's tunnel identity.
    fn wait_mesh_knows_b(&self, from: &str) {
        let b = self.pod("b");
        let members = self.client(
            from,
            &[
                ("SY_ACTION", "http"),
                ("SY_ADDR", ADMIN),
                ("SY_PATH", "/mesh/members"),
                ("SY_HOST", ADMIN),
                ("SY_UNTIL", &format!("\"{}\"", b.identity())),
                ("SY_WAIT_MS", &MESH_READY.as_millis().to_string()),
            ],
        );
        assert!(
            members.contains(&format!("\"{}\"", b.identity())),
            "pod {from}'s sidecar never saw B's tunnel in the mesh within {MESH_READY:?}: \
             {members}\n{}",
            self.logs()
        );
    }

    /// Every process's output, for failure messages.
    fn logs(&self) -> String {
        let mut text = String::new();
        for pod in &self.pods {
            if pod.sidecar.is_some() {
                let log = tail(&pod.sidecar_log(), 30);
                text += &format!("--- sidecar {} (first and last lines):\n{log}\n", pod.name);
            }
            if pod.app.is_some() {
                let log = tail(&pod.app_log(), 10);
                text += &format!("--- app {} (first and last lines):\n{log}\n", pod.name);
            }
        }
        text
    }

    /// Runs `nft ARGS` in pod `name`.
    fn nft(&self, name: &str, args: &[&str]) -> String {
        let ns = &self.pod(name).ns;
        let mut all = vec!["netns", "exec", ns, "nft"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// The packet count of the named nftables counter `counter` in pod `name`'s `sytest` table.
    fn counter(&self, name: &str, counter: &str) -> u64 {
        let listing = self.nft(name, &["list", "counter", "inet", "sytest", counter]);
        let rest = listing
            .split("packets ")
            .nth(1)
            .unwrap_or_else(|| panic!("no packets in {listing:?}"));
        rest.split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet count in {listing:?}"))
    }
}

/// Hands the test folder to [`PROXY_UID`]: folders 0755 (a tempdir is 0700, and the root-run
/// apps write their output files there), files 0600 (keys, and the mesh secret the sidecar
/// warns about when others can read it).
fn give_to_proxy_uid(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(path, Some(PROXY_UID), Some(PROXY_UID)).expect("chown");
    let mode = if path.is_dir() { 0o755 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            give_to_proxy_uid(&entry.expect("dir entry").path());
        }
    }
}

/// The first and last `n` lines of `text` (start-up, then the latest), for failure messages:
/// a sidecar's access log can be long.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.len() <= 2 * n {
        return lines.join("\n");
    }
    let skipped = lines.len() - 2 * n;
    format!(
        "{}\n[... {skipped} lines ...]\n{}",
        lines[..n].join("\n"),
        lines[lines.len() - n..].join("\n")
    )
}

/// Whether every folder above `path` lets other users through (mode o+x).
fn others_can_reach(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.ancestors().skip(1).all(|dir| {
        dir.as_os_str().is_empty()
            || std::fs::metadata(dir).is_ok_and(|m| m.permissions().mode() & 0o001 != 0)
    })
}

/// A client's `http` output: the status on the first line, the body after it.
fn split_http(out: &str) -> (String, String) {
    let (status, body) = out.split_once('\n').unwrap_or((out, ""));
    (status.to_owned(), body.to_owned())
}

/// A nonce for request paths, so log and app lines belong to one test run.
fn nonce() -> String {
    format!("{}-{}", std::process::id(), fastrand::u32(..))
}

// ---------------------------------------------------------------------------------------------
// The tests

/// 1. An app in A calls B's IP and port with no proxy settings: the request goes through A's
///    outbound sidecar (to the cluster `podb`) and B's inbound sidecar, both log and count it,
///    and B's app sees the Host and path the client sent. A's outbound adds no forwarding
///    headers or `via` (either way): B's app sees only those B's inbound adds, with A's pod
///    address as the client, and A's app one `via` on the response, B's.
#[test]
fn an_app_calls_another_pod_through_both_sidecars_and_keeps_host_and_path() {
    let pods = Pods::start("h", &[pod("a", true, false), pod("b", true, true)]);
    pods.wait_meshed("a");
    let (a, b) = (pods.pod("a"), pods.pod("b"));
    let addr = format!("{}:8080", b.ip);
    let n = nonce();
    let path = format!("/t1/{n}/orders?id=7");
    let (status, body) = pods.http("a", &addr, &path, None);
    assert_eq!(status, "200", "{body}\n{}", pods.logs());
    assert!(
        body.contains(&format!(
            "host={addr} path={path} identity=spiffe://local/a "
        )),
        "B's app saw {body:?}"
    );
    // Only B's forwarding fields, in the order its pre-rendered lines put them (none of A's
    // came to be parsed and replaced), naming A's pod as the client; one `via` entry each way.
    let fwd = format!(
        "fwd=x-forwarded-for={a_ip};x-real-ip={a_ip};forwarded=for={a_ip};proto=http;\
         x-forwarded-proto=http;x-forwarded-port=8080;via=1.1 switchyard;\
         x-forwarded-host={addr};\n",
        a_ip = a.ip
    );
    assert!(
        body.contains(&fwd),
        "B's app saw {body:?}, expected {fwd:?}"
    );
    assert!(
        body.ends_with("\nresponse-via=1.1 switchyard\n"),
        "A's app got {body:?}: one via, B's"
    );
    let custom = format!("/t1/{n}/custom");
    let (status, body) = pods.http("a", &addr, &custom, Some("orders.example"));
    assert_eq!(status, "200", "{body}\n{}", pods.logs());
    assert!(
        body.contains(&format!("host=orders.example path={custom} ")),
        "B's app saw {body:?}"
    );

    // Both sidecars wrote an access-log line for it, on their own listener.
    let logged = |pod: &Pod, listener: &str| {
        pod.sidecar_log()
            .lines()
            .any(|l| l.contains(&path) && l.contains(&format!("listener={listener}")))
    };
    assert!(
        wait_until(Duration::from_secs(10), || logged(a, "outbound")
            && logged(b, "inbound")),
        "both sidecars should log {path}\n{}",
        pods.logs()
    );
    let metric = "switchyard_intercepted_connections_total";
    let outbound = pods.sum(
        "a",
        metric,
        &[
            "direction=\"outbound\"",
            "protocol=\"http1\"",
            "target=\"podb\"",
        ],
    );
    assert!(outbound >= 2.0, "A's outbound counted {outbound}");
    let inbound = pods.sum(
        "b",
        metric,
        &[
            "direction=\"inbound\"",
            "protocol=\"http1\"",
            "tls=\"mtls\"",
        ],
    );
    assert!(inbound >= 1.0, "B's inbound counted {inbound}");
    assert!(
        b.app_log().contains(&format!("path={path} ")),
        "B's app logged no {path}"
    );
}

/// 2. The bytes between the pods are TLS: B's ingress counts TLS handshake records from A on
///    the tunnel port and no plaintext `GET ` from A at all (while it does count the plaintext
///    pod D's), both sidecars count the tunnel with the other's identity, a plaintext probe of
///    the tunnel port gets no HTTP answer, and B's access log names A's identity.
#[test]
fn traffic_between_sidecars_is_mutual_tls_and_the_tunnel_port_refuses_plaintext() {
    let pods = Pods::start(
        "t",
        &[
            pod("a", true, false),
            pod("b", true, true),
            pod("d", false, false),
        ],
    );
    let (a, b, d) = (pods.pod("a"), pods.pod("b"), pods.pod("d"));
    // Counters on B's ingress before any NAT (priority raw): the payload's first bytes.
    let rules = pods.dir.path().join("sytest.nft");
    std::fs::write(
        &rules,
        format!(
            "table inet sytest {{\n\
               counter a_get {{ }}\n counter d_get {{ }}\n counter a_tls {{ }}\n counter a_app {{ }}\n\
               chain pre {{\n\
                 type filter hook prerouting priority raw; policy accept;\n\
                 ip saddr {a} meta l4proto tcp @ih,0,32 0x47455420 counter name a_get\n\
                 ip saddr {d} meta l4proto tcp @ih,0,32 0x47455420 counter name d_get\n\
                 ip saddr {a} tcp dport 15006 @ih,0,8 0x16 counter name a_tls\n\
                 ip saddr {a} tcp dport 8080 counter name a_app\n\
               }}\n\
             }}\n",
            a = a.ip,
            d = d.ip
        ),
    )
    .expect("nft rules");
    pods.nft("b", &["-f", &rules.to_string_lossy()]);
    pods.wait_meshed("a");

    let addr = format!("{}:8080", b.ip);
    let path = format!("/t2/{}", nonce());
    let (status, body) = pods.http("a", &addr, &path, None);
    assert_eq!(status, "200", "{body}\n{}", pods.logs());
    // The control: D has no sidecar, so its request crosses the bridge as plaintext.
    let (status, body) = pods.http("d", &addr, &format!("{path}/plain"), None);
    assert_eq!(status, "200", "{body}\n{}", pods.logs());
    assert!(body.contains("identity=- "), "D has no identity: {body}");
    assert!(
        pods.counter("b", "d_get") >= 1,
        "the plaintext counter counts"
    );
    assert_eq!(
        pods.counter("b", "a_get"),
        0,
        "no plaintext request from A crossed the bridge"
    );
    assert_eq!(
        pods.counter("b", "a_app"),
        0,
        "A's sidecar never connects to B's app port"
    );
    assert!(
        pods.counter("b", "a_tls") >= 1,
        "A opened TLS to B's tunnel port"
    );

    let tunnels = "switchyard_tunnel_connections_total";
    let server = pods.sum(
        "b",
        tunnels,
        &["direction=\"server\"", "peer_identity=\"spiffe://local/a\""],
    );
    assert!(server >= 1.0, "B counted {server} tunnels from A");
    let client = pods.sum(
        "a",
        tunnels,
        &["direction=\"client\"", "peer_identity=\"spiffe://local/b\""],
    );
    assert!(client >= 1.0, "A counted {client} tunnels to B");
    assert!(
        pods.sidecar_log_has("b", |l| l.contains(&path) && l.contains(&a.identity())),
        "B's access log names A's identity for {path}\n{}",
        tail(&b.sidecar_log(), 30)
    );

    // A plaintext probe of the tunnel port from D: no HTTP answer, and it never reaches an app.
    let refused = "switchyard_intercepted_refused_total";
    let handshakes = pods.sum("b", refused, &["reason=\"tunnel_handshake\""]);
    let probe_path = format!("/t2-probe/{}", nonce());
    let tunnel = format!("{}:15006", b.ip);
    let out = pods.client(
        "d",
        &[
            ("SY_ACTION", "probe"),
            ("SY_ADDR", &tunnel),
            ("SY_PATH", &probe_path),
        ],
    );
    assert!(out.contains("http=false"), "probe of {tunnel}: {out}");
    assert!(
        out.contains("end=eof") || out.contains("end=reset"),
        "the tunnel port closes on a plaintext client: {out}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            pods.sum("b", refused, &["reason=\"tunnel_handshake\""]) > handshakes
        }),
        "B counts the failed handshake"
    );
    assert!(
        !b.app_log().contains(&probe_path),
        "the probe reached B's app"
    );
}

impl Pods {
    /// Whether a line of pod `name`'s sidecar output satisfies `pred` (waiting up to 10 s: log
    /// lines are written when a response body ends).
    fn sidecar_log_has(&self, name: &str, pred: impl Fn(&str) -> bool) -> bool {
        let pod = self.pod(name);
        wait_until(Duration::from_secs(10), || {
            pod.sidecar_log().lines().any(&pred)
        })
    }
}

/// 3. An opaque protocol (a length-prefixed echo, 10 MiB byte-exact, with a half-close the
///    server answers after) and a server-speaks-first protocol on an opaque port both work
///    through the two sidecars, and are counted as opaque mTLS connections.
#[test]
fn opaque_and_server_speaks_first_protocols_pass_byte_exact() {
    let pods = Pods::start("o", &[pod("a", true, false), pod("b", true, true)]);
    pods.wait_meshed("a");
    let b = pods.pod("b");
    let echo = format!("{}:{ECHO_PORT}", b.ip);
    let out = pods.client(
        "a",
        &[
            ("SY_ACTION", "echo"),
            ("SY_ADDR", &echo),
            ("SY_BYTES", &ECHO_BYTES.to_string()),
        ],
    );
    assert!(out.starts_with("ok "), "echo through the sidecars: {out}");
    println!("opaque echo of {ECHO_BYTES} bytes: {out}");

    let banner = format!("{}:{BANNER_PORT}", b.ip);
    let out = pods.client("a", &[("SY_ACTION", "banner"), ("SY_ADDR", &banner)]);
    assert!(
        out.contains("banner=220 b ready") && out.contains("reply=250 HELO a"),
        "server-speaks-first through the sidecars: {out}"
    );
    let ms: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ms= in {out}"));
    // detect_timeout is 10 s: an opaque port must not wait for it.
    assert!(ms < 5_000, "the banner took {ms} ms: did detection wait?");

    let metric = "switchyard_intercepted_connections_total";
    let inbound = pods.sum(
        "b",
        metric,
        &[
            "direction=\"inbound\"",
            "protocol=\"opaque\"",
            "tls=\"mtls\"",
        ],
    );
    assert!(
        inbound >= 2.0,
        "B counted {inbound} opaque mTLS connections"
    );
    let outbound = pods.sum(
        "a",
        metric,
        &["direction=\"outbound\"", "protocol=\"opaque\""],
    );
    assert!(outbound >= 2.0, "A counted {outbound} opaque connections");
    let bytes = "switchyard_opaque_bytes_total";
    let least = 2.0 * ECHO_BYTES as f64;
    assert!(
        wait_until(Duration::from_secs(10), || {
            pods.sum("a", bytes, &["direction=\"outbound\""]) >= least
                && pods.sum("b", bytes, &["direction=\"inbound\""]) >= least
        }),
        "both sidecars count the echo's bytes both ways\n{}",
        pods.metrics("a")
    );
}

/// 4. `strict` refuses a plaintext client (pod D, no sidecar) that `permissive` serves, and
///    `allow` refuses pod C's identity while it lets A in; B's app never sees a refused request.
#[test]
fn strict_refuses_plaintext_and_allow_refuses_another_identity() {
    let pods = Pods::start(
        "p",
        &[
            pod("a", true, false),
            pod("b", true, true),
            pod("c", true, false),
            pod("d", false, false),
        ],
    );
    pods.wait_meshed("a");
    pods.wait_meshed("c");
    let b = pods.pod("b");
    let n = nonce();
    let refused = "switchyard_intercepted_refused_total";
    let before = pods.metrics("b");
    let plaintext_before = sum(&before, refused, &["reason=\"plaintext\""]);
    let not_allowed_before = sum(&before, refused, &["reason=\"not_allowed\""]);

    // Strict port 8081: A (mTLS) gets in, D (plaintext) does not; D is served on 8080.
    let strict = format!("{}:8081", b.ip);
    let (status, body) = pods.http("a", &strict, &format!("/t4/{n}/strict-a"), None);
    assert_eq!(
        status,
        "200",
        "A on the strict port: {body}\n{}",
        pods.logs()
    );
    assert!(body.contains("identity=spiffe://local/a "), "{body}");
    let denied = format!("/t4/{n}/strict-d");
    let (status, body) = pods.http("d", &strict, &denied, None);
    assert_eq!(status, "403", "plaintext D on the strict port: {body}");
    let (status, body) = pods.http(
        "d",
        &format!("{}:8080", b.ip),
        &format!("/t4/{n}/permissive-d"),
        None,
    );
    assert_eq!(status, "200", "plaintext D on the permissive port: {body}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            pods.sum("b", refused, &["reason=\"plaintext\""]) > plaintext_before
        }),
        "B counts the plaintext refusal"
    );

    // Port 8082 allows spiffe://local/a only: C's sidecar has spiffe://local/c.
    let allow = format!("{}:8082", b.ip);
    let (status, body) = pods.http("a", &allow, &format!("/t4/{n}/allow-a"), None);
    assert_eq!(
        status,
        "200",
        "A on the allow port: {body}\n{}",
        pods.logs()
    );
    let other = format!("/t4/{n}/allow-c");
    let (status, body) = pods.http("c", &allow, &other, None);
    assert_eq!(status, "403", "C on A's port: {body}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            pods.sum("b", refused, &["reason=\"not_allowed\""]) > not_allowed_before
        }),
        "B counts the identity refusal"
    );
    let app = b.app_log();
    assert!(
        !app.contains(&denied) && !app.contains(&other),
        "a refused request reached B's app:\n{app}"
    );
}

/// 5. The sidecars' own upstream connections are not intercepted again: each app connection
///    is exactly one intercepted connection in A's outbound sidecar, B's sidecar's connections
///    to its app never enter B's outbound listener, and nothing is refused as a loop.
#[test]
fn sidecar_upstream_connections_are_not_intercepted_again() {
    let pods = Pods::start("l", &[pod("a", true, false), pod("b", true, true)]);
    pods.wait_meshed("a");
    let b = pods.pod("b");
    let metric = "switchyard_intercepted_connections_total";
    let refused = "switchyard_intercepted_refused_total";
    let outbound = ["direction=\"outbound\""];
    let (a_before, b_before) = (pods.metrics("a"), pods.metrics("b"));

    let http = format!("{}:8080", b.ip);
    let n = nonce();
    const REQUESTS: usize = 3;
    for i in 0..REQUESTS {
        let (status, body) = pods.http("a", &http, &format!("/t5/{n}/{i}"), None);
        assert_eq!(status, "200", "{body}\n{}", pods.logs());
    }
    let out = pods.client(
        "a",
        &[
            ("SY_ACTION", "echo"),
            ("SY_ADDR", &format!("{}:{ECHO_PORT}", b.ip)),
            ("SY_BYTES", "4096"),
        ],
    );
    assert!(out.starts_with("ok "), "{out}");
    let connections = (REQUESTS + 1) as f64;

    let a_after = pods.metrics("a");
    let b_after = pods.metrics("b");
    let delta = |after: &str, before: &str, name: &str, labels: &[&str]| {
        sum(after, name, labels) - sum(before, name, labels)
    };
    assert_eq!(
        delta(&a_after, &a_before, metric, &outbound),
        connections,
        "A's outbound intercepts each app connection once\n{a_after}"
    );
    assert_eq!(
        delta(&b_after, &b_before, metric, &outbound),
        0.0,
        "B's connections to its app are not intercepted by its own outbound listener"
    );
    let inbound = delta(&b_after, &b_before, metric, &["direction=\"inbound\""]);
    assert!(
        (1.0..=connections).contains(&inbound),
        "B's inbound saw {inbound} connections for {connections} app connections"
    );
    for (pod, scrape) in [("a", &a_after), ("b", &b_after)] {
        for reason in ["loop", "not_redirected"] {
            let label = format!("reason=\"{reason}\"");
            assert_eq!(
                sum(scrape, refused, &[label.as_str()]),
                0.0,
                "pod {pod} refused connections as {reason}"
            );
        }
    }
}

/// 6. A connection that A's sidecar pooled to B while it did not know B as meshed (a slow
///    join, a partition: plaintext, the only way then, which B's permissive port serves) is
///    not used once B is meshed: every request after that goes through the tunnel (B's app sees
///    A's identity). Otherwise a busy pooled connection would carry plaintext, and meet a
///    strict port's 403, for as long as it lives.
#[test]
fn a_plaintext_connection_pooled_before_the_peer_was_meshed_is_not_reused_after() {
    let specs = [pod("a", true, false), pod("b", true, true)];
    let mut pods = Pods::create("u", &specs);
    // Hold the mesh back: A drops gossip both ways until the plaintext request is pooled.
    let rules = pods.dir.path().join("nomesh.nft");
    std::fs::write(
        &rules,
        "table inet synomesh {\n\
           chain input { type filter hook input priority 0; policy accept; udp dport 7946 drop; }\n\
           chain output { type filter hook output priority 0; policy accept; udp dport 7946 drop; }\n\
         }\n",
    )
    .expect("nft rules");
    pods.nft("a", &["-f", &rules.to_string_lossy()]);
    pods.start_sidecars(&specs);
    let addr = format!("{}:8080", pods.pod("b").ip);
    let n = nonce();
    let (status, body) = pods.http("a", &addr, &format!("/t6/{n}/before"), None);
    assert_eq!(status, "200", "{body}\n{}", pods.logs());
    assert!(body.contains("identity=- "), "no tunnel yet: {body}");

    pods.nft("a", &["delete", "table", "inet", "synomesh"]);
    pods.wait_meshed("a");
    for i in 0..3 {
        let (status, body) = pods.http("a", &addr, &format!("/t6/{n}/after-{i}"), None);
        assert_eq!(status, "200", "{body}\n{}", pods.logs());
        assert!(
            body.contains("identity=spiffe://local/a "),
            "request {i} after B joined the mesh did not come through the tunnel: {body}"
        );
    }
}

/// 7. The synthetic route's retry of a connection failure: pod A's cluster `spare` is B's port
///    8082 and an endpoint that refuses connections, balanced round robin, so some requests
///    pick the refusing one first. Every request is answered by B's app with the head the
///    client sent, and A's sidecar counts the retries as `connect_failure` on `outbound:spare`
///    (the first attempt goes out without a copy of the request; the retry sends the one the
///    refused attempt handed back).
#[test]
fn a_refused_endpoint_of_an_outbound_cluster_is_retried_at_another() {
    let pods = Pods::start("r", &[pod("a", true, false), pod("b", true, true)]);
    pods.wait_meshed("a");
    let addr = format!("{}:8082", pods.pod("b").ip);
    let retries = "switchyard_retries_total";
    let labels = ["route=\"outbound:spare\"", "reason=\"connect_failure\""];
    let before = pods.sum("a", retries, &labels);
    let n = nonce();
    const REQUESTS: usize = 4;
    for i in 0..REQUESTS {
        let path = format!("/t7/{n}/{i}?q={i}");
        let (status, body) = pods.http("a", &addr, &path, Some("spare.example"));
        assert_eq!(status, "200", "request {i}: {body}\n{}", pods.logs());
        assert!(
            body.contains(&format!(
                "host=spare.example path={path} identity=spiffe://local/a port=8082 "
            )),
            "request {i}: B's app saw {body:?}"
        );
    }
    let retried = pods.sum("a", retries, &labels) - before;
    assert!(
        (1.0..=REQUESTS as f64).contains(&retried),
        "A's sidecar retried {retried} connect failures for {REQUESTS} requests over two \
         endpoints, one refusing\n{}",
        pods.metrics("a")
    );
}

/// `examples/transparent/{a,b}.toml` load, next to the certificates and mesh key that
/// `two-pods.sh` makes for them.
#[test]
fn example_configs_load() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/transparent");
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = env!("CARGO_BIN_EXE_switchyard");
    let certs = dir.path().join("certs").to_string_lossy().into_owned();
    run(bin, &["certs", "init", "--dir", &certs]);
    std::fs::write(
        dir.path().join("mesh.key"),
        "example test key, at least thirty-two bytes long\n",
    )
    .expect("mesh key");
    for pod in ["a", "b"] {
        let identity = format!("spiffe://local/{pod}");
        run(
            bin,
            &[
                "certs", "issue", "--ca", &certs, "--name", pod, "--spiffe", &identity,
            ],
        );
        let file = dir.path().join(format!("{pod}.toml"));
        std::fs::copy(examples.join(format!("{pod}.toml")), &file).expect("copy example");
        let config = switchyard::config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        assert!(config.summary().contains("outbound"), "{pod}.toml");
    }
}

// ---------------------------------------------------------------------------------------------
// The apps

/// The apps of the pods: with `SY_TRANSPARENT_APP` set this process was re-executed inside a
/// pod (by [`Pods::spawn_app`]) and plays that role: `serve` (the app servers, until killed) or
/// `client` (one action, see [`client`]). Without it, this is the roles' own test: each server
/// on 127.0.0.1 against its client, so a transparent test failing says something about the
/// sidecars, not the apps.
#[test]
fn app_process() {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("serve") => serve_all("0.0.0.0"),
        Ok("client") => client(),
        Ok(other) => panic!("unknown app role {other:?}"),
        Err(_) => self_test(),
    }
}

fn self_test() {
    let http = bind("127.0.0.1", 0);
    let http_addr = http.local_addr().expect("addr");
    std::thread::spawn(move || serve(http, "pod", http_server));
    let echo = bind("127.0.0.1", 0);
    let echo_addr = echo.local_addr().expect("addr");
    std::thread::spawn(move || serve(echo, "pod", echo_server));
    let banner = bind("127.0.0.1", 0);
    let banner_addr = banner.local_addr().expect("addr");
    std::thread::spawn(move || serve(banner, "pod", banner_server));

    let (status, body) = split_http(&http_once(
        http_addr,
        "/x?y=1",
        "example",
        Duration::from_secs(10),
    ));
    assert_eq!(status, "200");
    assert!(
        body.starts_with(&format!(
            "host=example path=/x?y=1 identity=- port={}",
            http_addr.port()
        )),
        "{body}"
    );
    assert!(echo_once(echo_addr, 1 << 20).starts_with("ok "));
    let out = banner_once(banner_addr, "pod");
    assert!(
        out.contains("banner=220 pod ready") && out.contains("reply=250 HELO pod"),
        "{out}"
    );
    // The probe tells an HTTP answer from none, so its `http=false` in the tests means something.
    assert!(probe_once(http_addr, "/probe").contains("http=true"));
    let closed = bind("127.0.0.1", 0);
    let closed_addr = closed.local_addr().expect("addr");
    std::thread::spawn(move || {
        if let Ok((s, _)) = closed.accept() {
            drop(s);
        }
    });
    // Closed with the request unread: the kernel resets rather than ends the connection.
    let out = probe_once(closed_addr, "/probe");
    assert!(
        out.contains("http=false") && (out.contains("end=eof") || out.contains("end=reset")),
        "{out}"
    );
}

fn bind(ip: &str, port: u16) -> TcpListener {
    TcpListener::bind((ip, port)).unwrap_or_else(|e| panic!("bind {ip}:{port}: {e}"))
}

/// The `serve` role: every app server of a pod, each printing `SYAPP listening KIND PORT`.
fn serve_all(ip: &str) {
    let pod = std::env::var("SY_POD").unwrap_or_else(|_| "pod".into());
    let mut threads = Vec::new();
    let mut start = |kind: &'static str, port: u16, handler: fn(TcpStream, &str, u16)| {
        let listener = bind(ip, port);
        println!("SYAPP listening {kind} {port}");
        let pod = pod.clone();
        threads.push(std::thread::spawn(move || serve(listener, &pod, handler)));
    };
    for port in HTTP_PORTS {
        start("http", port, http_server);
    }
    start("echo", ECHO_PORT, echo_server);
    start("banner", BANNER_PORT, banner_server);
    for t in threads {
        let _ = t.join();
    }
}

/// Accepts forever, a thread per connection.
fn serve(listener: TcpListener, pod: &str, handler: fn(TcpStream, &str, u16)) {
    let port = listener.local_addr().map_or(0, |a| a.port());
    for stream in listener.incoming().flatten() {
        let pod = pod.to_owned();
        std::thread::spawn(move || handler(stream, &pod, port));
    }
}

/// HTTP/1.1 (keep-alive): answers every request with `host=H path=P identity=I port=N fwd=F`
/// (F: each [`FORWARDING`] line as `name=value;`, in the order received) and prints
/// `SYAPP request port=N path=P identity=I`.
fn http_server(mut stream: TcpStream, _pod: &str, port: u16) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = Vec::new();
    loop {
        let Some(head_len) = read_head(&mut stream, &mut buf) else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let path = request_line.split(' ').nth(1).unwrap_or("-").to_owned();
        let mut host = "-".to_owned();
        let mut identity = "-".to_owned();
        let mut length = 0usize;
        let mut close = false;
        let mut fwd = String::new();
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            let name = name.trim().to_ascii_lowercase();
            if FORWARDING.contains(&name.as_str()) {
                fwd.push_str(&format!("{name}={value};"));
            }
            match name.as_str() {
                "host" => host = value.to_owned(),
                "x-client-identity" => identity = value.to_owned(),
                "content-length" => length = value.parse().unwrap_or(0),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        buf.drain(..head_len);
        // Discard a body (the tests send none; wrk-style clients may).
        while buf.len() < length {
            let mut chunk = [0u8; 16 * 1024];
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..length);
        println!("SYAPP request port={port} path={path} identity={identity}");
        let body = format!("host={host} path={path} identity={identity} port={port} fwd={fwd}\n");
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if stream.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Reads into `buf` until it holds a whole head; its length, or `None` at EOF or an error.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Length-prefixed echo: each frame (u32 big-endian length, payload) is sent back as it came;
/// at the client's half-close, a zero-length frame and the total payload received (u64) follow,
/// then the server closes. So the client learns that its EOF arrived while it could still read.
fn echo_server(mut stream: TcpStream, _pod: &str, _port: u16) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut total = 0u64;
    let mut payload = vec![0u8; 64 * 1024];
    loop {
        let mut len = [0u8; 4];
        match stream.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => break,
            Err(_) => return,
        }
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > payload.len() {
            return;
        }
        if stream.read_exact(&mut payload[..n]).is_err() {
            return;
        }
        total += n as u64;
        if stream.write_all(&len).is_err() || stream.write_all(&payload[..n]).is_err() {
            return;
        }
    }
    let mut trailer = [0u8; 12];
    trailer[4..].copy_from_slice(&total.to_be_bytes());
    let _ = stream.write_all(&trailer);
    let _ = stream.shutdown(Shutdown::Write);
}

/// Server speaks first: `220 POD ready`, then answers one line with `250 LINE` and closes.
fn banner_server(mut stream: TcpStream, pod: &str, _port: u16) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    if stream
        .write_all(format!("220 {pod} ready\r\n").as_bytes())
        .is_err()
    {
        return;
    }
    let Some(line) = read_line(&mut stream) else {
        return;
    };
    let _ = stream.write_all(format!("250 {line}\r\n").as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

/// One line (without its CRLF), or `None` at EOF or an error first.
fn read_line(stream: &mut TcpStream) -> Option<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match stream.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break,
            Ok(1) => line.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&line).trim_end().to_owned())
}

/// The `client` role: one action from the environment, its result written to `SY_OUT`.
/// - `http`: GET `SY_PATH` from `SY_ADDR` with `Host: SY_HOST`; with `SY_UNTIL`, repeated (a
///   new connection each time, for up to `SY_WAIT_MS`) until the body contains it. Writes the
///   status (or `closed`, `reset`, `refused`, `timeout`) on the first line, then the body.
/// - `echo`: `SY_BYTES` through the echo server at `SY_ADDR`, then half-close: `ok ...`.
/// - `banner`: the server-speaks-first exchange with `SY_ADDR`: `banner=`, `reply=`, `ms=`.
/// - `probe`: a plaintext request to `SY_ADDR`; whether an HTTP answer came and how it ended.
fn client() {
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} not set"));
    let addr: SocketAddr = var("SY_ADDR").parse().expect("SY_ADDR");
    let out = match var("SY_ACTION").as_str() {
        "http" => {
            let (path, host) = (var("SY_PATH"), var("SY_HOST"));
            match std::env::var("SY_UNTIL") {
                Ok(until) => {
                    let wait: u64 = var("SY_WAIT_MS").parse().expect("SY_WAIT_MS");
                    let mut last = String::new();
                    let mut tried = Instant::now() - Duration::from_secs(1);
                    // At most one request every 50 ms: wait_until polls every 5.
                    wait_until(Duration::from_millis(wait), || {
                        if tried.elapsed() < Duration::from_millis(50) {
                            return false;
                        }
                        tried = Instant::now();
                        last = http_once(addr, &path, &host, Duration::from_secs(5));
                        last.contains(&until)
                    });
                    last
                }
                Err(_) => http_once(addr, &path, &host, Duration::from_secs(20)),
            }
        }
        "echo" => echo_once(addr, var("SY_BYTES").parse().expect("SY_BYTES")),
        "banner" => banner_once(
            addr,
            &std::env::var("SY_POD").unwrap_or_else(|_| "pod".into()),
        ),
        "probe" => probe_once(addr, &var("SY_PATH")),
        other => panic!("unknown client action {other:?}"),
    };
    std::fs::write(var("SY_OUT"), out).expect("write SY_OUT");
}

/// How a failed exchange ended, as the clients report it.
fn io_end(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::ConnectionRefused => "refused",
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => "reset",
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "timeout",
        ErrorKind::UnexpectedEof => "closed",
        _ => "error",
    }
}

/// One `Connection: close` GET; `STATUS\nBODY` (status `closed` etc. when none came).
fn http_once(addr: SocketAddr, path: &str, host: &str, timeout: Duration) -> String {
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => return format!("{}\n{e}", io_end(&e)),
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nuser-agent: transparent-test\r\nconnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(request.as_bytes()) {
        return format!("{}\n{e}", io_end(&e));
    }
    let mut response = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk) {
            Ok(0) => break None,
            Ok(n) => response.extend_from_slice(&chunk[..n]),
            Err(e) => break Some(e),
        }
    };
    let text = String::from_utf8_lossy(&response).into_owned();
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        let why = end.as_ref().map_or("closed", io_end);
        return format!("{why}\n{text}");
    };
    let status = head.split(' ').nth(1).unwrap_or("?");
    // The response's `via` lines, after the body (test 1 counts the proxies on the way back).
    let via: Vec<&str> = head
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("via"))
        .map(|(_, value)| value.trim())
        .collect();
    if via.is_empty() {
        format!("{status}\n{body}")
    } else {
        format!("{status}\n{body}\nresponse-via={}\n", via.join("|"))
    }
}

/// A deterministic byte stream: frames of 1..=64 KiB of pseudo-random bytes.
fn echo_frames(total: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(27);
    let mut out = Vec::with_capacity(total + total / 1024 + 16);
    let mut left = total;
    while left > 0 {
        let n = rng.usize(1..=64 * 1024).min(left);
        out.extend_from_slice(&(n as u32).to_be_bytes());
        out.extend((0..n).map(|_| rng.u8(..)));
        left -= n;
    }
    out
}

/// `total` payload bytes through the echo server, a half-close, then the server's trailer:
/// `ok bytes=N ms=M`, or a panic saying what differed.
fn echo_once(addr: SocketAddr, total: usize) -> String {
    let sent = echo_frames(total);
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().expect("clone");
    let to_send = sent.clone();
    let writing = std::thread::spawn(move || {
        for chunk in to_send.chunks(256 * 1024) {
            writer.write_all(chunk)?;
        }
        writer.shutdown(Shutdown::Write)
    });
    let mut received = Vec::with_capacity(sent.len() + 12);
    if let Err(e) = stream.read_to_end(&mut received) {
        panic!("echo read after {} bytes: {e}", received.len());
    }
    writing
        .join()
        .expect("writer thread")
        .unwrap_or_else(|e| panic!("echo write: {e}"));
    let mut expected = sent;
    expected.extend_from_slice(&[0, 0, 0, 0]);
    expected.extend_from_slice(&(total as u64).to_be_bytes());
    if received != expected {
        let at = received
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(received.len().min(expected.len()));
        panic!(
            "echo differs at byte {at}: got {} bytes, expected {} (payload plus trailer)",
            received.len(),
            expected.len()
        );
    }
    format!("ok bytes={total} ms={}", started.elapsed().as_millis())
}

/// The banner exchange: `banner=LINE\nreply=LINE\nms=MS` (ms from connect to the banner).
fn banner_once(addr: SocketAddr, pod: &str) -> String {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let _ = stream.set_read_timeout(Some(Duration::from_secs(20)));
    let banner = read_line(&mut stream).unwrap_or_else(|| "-".into());
    let ms = started.elapsed().as_millis();
    let _ = stream.write_all(format!("HELO {pod}\r\n").as_bytes());
    let reply = read_line(&mut stream).unwrap_or_else(|| "-".into());
    format!("banner={banner}\nreply={reply}\nms={ms}\n")
}

/// A plaintext HTTP request: `bytes=N http=BOOL end=eof|reset|timeout|...`.
fn probe_once(addr: SocketAddr, path: &str) -> String {
    let mut stream = match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) => return format!("bytes=0 http=false end={}", io_end(&e)),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(request.as_bytes());
    let mut got = Vec::new();
    let end = loop {
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk) {
            Ok(0) => break "eof",
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => break io_end(&e),
        }
        if got.len() > 64 * 1024 {
            break "more";
        }
    };
    format!(
        "bytes={} http={} end={end}",
        got.len(),
        got.starts_with(b"HTTP/")
    )
}
