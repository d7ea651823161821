//! The hardening fault catalogue (issue 16): backends and clients that misbehave, against
//! `switchyard run` as a child process, so that its own `/metrics`, `/upstreams` and
//! `/proc/PID/fd` describe nothing but this proxy.
//!
//! After every fault the proxy must come back to where it was: no downstream connection, no
//! request in flight, the worker runtimes' task count and the open descriptors at their idle
//! values. A fault that leaks a task or a socket fails here even when every response looked right.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::support::backend::Action;
use crate::support::backend::{Backend, Behavior};
use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::launcher::BinProxy;
use crate::support::raw_client::{raw_request, RawConn};
use crate::support::{wait_until, DEADLINE};
use bytes::Bytes;

/// A running `switchyard run` with its config directory.
struct Running {
    bin: BinProxy,
    proxy: SocketAddr,
    admin: SocketAddr,
    /// One keep-alive connection for every scrape, so the scrapes themselves add a constant
    /// one descriptor rather than a varying number of closing ones.
    scrape: std::sync::Mutex<RawConn>,
}

/// The figures that must return to their idle values after a fault.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Vitals {
    downstream: u64,
    in_flight: u64,
    worker_tasks: u64,
    fds: usize,
}

/// Starts the binary (one worker) with one listener and one route to `endpoint`. Idle upstream
/// connections expire after 200 ms, so pooled sockets do not blur the descriptor count; ejection
/// is out of reach, so every request meets the fault. `route` is appended to the route table
/// (route keys) and `tail` to the file (sections).
fn start(endpoint: SocketAddr, route: &str, tail: &str) -> Running {
    start_with(&[endpoint], route, tail, |cmd| cmd)
}

/// [`start`] with several endpoints and a hook to wrap the command (e.g. in a shell that sets
/// limits). `tail` goes right after the cluster table, so it may hold cluster keys too.
fn start_with(
    endpoints: &[SocketAddr],
    route: &str,
    tail: &str,
    wrap: impl FnOnce(std::process::Command) -> std::process::Command,
) -> Running {
    let endpoints: Vec<String> = endpoints.iter().map(|a| format!("\"{a}\"")).collect();
    let endpoints = endpoints.join(", ");
    let toml = format!(
        r#"
[runtime]
workers = 1
drain_timeout = "2s"

[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "public"
listen = "127.0.0.1:0"

[[routes]]
cluster = "app"
{route}

[clusters.app]
endpoints = [{endpoints}]
pool = {{ idle_timeout = "200ms" }}
outlier_detection = {{ consecutive_5xx = 1000, consecutive_gateway_errors = 1000, failure_rate = 1.0, min_requests = 1000 }}

{tail}
"#
    );
    let bin = BinProxy::start_with(&toml, wrap);
    Running {
        proxy: bin.addr,
        admin: bin.admin,
        scrape: std::sync::Mutex::new(RawConn::connect(bin.admin)),
        bin,
    }
}

impl Running {
    fn admin_get(&self, path: &str) -> String {
        let mut conn = self
            .scrape
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .expect("admin request");
        let response = conn.read_response();
        assert_eq!(response.status, 200, "admin {path}: {response:?}");
        response.body_text()
    }

    fn vitals(&self) -> Vitals {
        let metrics = self.admin_get("/metrics");
        let upstreams = self.admin_get("/upstreams");
        let upstreams: serde_json::Value =
            serde_json::from_str(&upstreams).expect("/upstreams is JSON");
        let fds = std::fs::read_dir(format!("/proc/{}/fd", self.bin.process.pid()))
            .expect("/proc/PID/fd")
            .count();
        Vitals {
            downstream: sample_sum(&metrics, "switchyard_downstream_connections", ""),
            in_flight: json_sum(&upstreams, "in_flight"),
            worker_tasks: sample_sum(&metrics, "switchyard_runtime_tasks", "runtime=\"worker-"),
            fds,
        }
    }

    /// Waits until the vitals equal `baseline`, failing with both if they never do.
    fn assert_back_to(&self, baseline: Vitals, fault: &str) {
        let mut last = self.vitals();
        let back = wait_until(DEADLINE, || {
            last = self.vitals();
            last == baseline
        });
        assert!(
            back,
            "after {fault}: {last:?}, idle was {baseline:?}\n{}",
            self.bin
                .process
                .output(crate::support::launcher::Pipe::Stderr)
        );
    }

    /// The idle vitals, once they stop moving. One request first (only its first bytes are
    /// awaited: some backends here never finish), so the worker's lazily started pool reaper is
    /// part of the baseline rather than a "leak"; then the readings must hold for a second,
    /// longer than a pooled connection's 200 ms idle timeout plus the reaper's 250 ms tick.
    fn idle(&self) -> Vitals {
        let mut warm_up = TcpStream::connect(self.proxy).expect("connect");
        std::io::Write::write_all(&mut warm_up, b"GET /warm-up HTTP/1.1\r\nHost: app\r\n\r\n")
            .expect("send");
        warm_up.set_read_timeout(Some(DEADLINE)).expect("timeout");
        let _ = warm_up.read(&mut [0u8; 64]);
        drop(warm_up);
        let mut previous = self.vitals();
        let mut stable_since = Instant::now();
        let settled = wait_until(DEADLINE * 2, || {
            std::thread::sleep(Duration::from_millis(100));
            let now = self.vitals();
            if now != previous || now.downstream != 0 || now.in_flight != 0 {
                stable_since = Instant::now();
            }
            previous = now;
            stable_since.elapsed() >= Duration::from_secs(1)
        });
        assert!(settled, "vitals never settled: {previous:?}");
        previous
    }

    /// utime + stime of the proxy process in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.bin.process.pid()))
            .expect("/proc/PID/stat");
        // Fields after the command name, which is in parentheses and may contain spaces.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat(5), i.e. 11 and 12 after the state.
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }
}

/// The sum of every sample of `name` whose label text contains `label`.
fn sample_sum(metrics: &str, name: &str, label: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The sum of every number under key `key` anywhere in `value`.
fn json_sum(value: &serde_json::Value, key: &str) -> u64 {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                if k == key {
                    v.as_u64().unwrap_or(0)
                } else {
                    json_sum(v, key)
                }
            })
            .sum(),
        serde_json::Value::Array(items) => items.iter().map(|v| json_sum(v, key)).sum(),
        _ => 0,
    }
}

/// One plain GET over a fresh connection; the status, or 0 when the connection broke.
fn get_status(addr: SocketAddr, path: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n");
    raw_request(addr, request.as_bytes()).status
}

#[test]
fn a_backend_dying_mid_body_aborts_the_response_and_leaks_nothing() {
    let backend = Backend::start(Behavior::DieMidBody);
    let proxy = start(backend.addr(), "", "");
    let idle = proxy.idle();
    for _ in 0..5 {
        let mut conn = RawConn::connect(proxy.proxy);
        conn.send(b"GET /big HTTP/1.1\r\nHost: app\r\n\r\n")
            .expect("send");
        let response = conn.read_response();
        // The head went out before the backend died: the client sees 200 and a short body,
        // then the connection closes (the body cannot be completed).
        assert!(response.closed || response.status == 200, "{response:?}");
        assert!(
            conn.wait_closed(DEADLINE),
            "the broken response left the connection open"
        );
    }
    proxy.assert_back_to(idle, "backends dying mid-body");
}

#[test]
fn a_backend_resetting_before_answering_is_502_and_leaks_nothing() {
    let backend = Backend::start(Behavior::Reset);
    let proxy = start(backend.addr(), "retry = { attempts = 1 }", "");
    let idle = proxy.idle();
    for _ in 0..10 {
        assert_eq!(get_status(proxy.proxy, "/"), 502);
    }
    proxy.assert_back_to(idle, "resets");
}

#[test]
fn a_bandwidth_capped_backend_streams_the_body_byte_exact() {
    let body: Vec<u8> = (0..96 * 1024).map(|i: u32| (i % 253) as u8).collect();
    let backend = Backend::start(Behavior::fixed(200, Bytes::from(body.clone())));
    let slow = FaultProxy::start(backend.addr());
    slow.set(Fault::Bandwidth(64 * 1024));
    let proxy = start(slow.addr(), "", "");
    let idle = proxy.idle();
    let started = Instant::now();
    let response = raw_request(
        proxy.proxy,
        b"GET /file HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(response.status, 200);
    assert!(response.body == body, "the capped body arrived altered");
    // The cap really applied (96 KiB at 64 KiB/s), so this was a slow stream, not a fast one.
    assert!(started.elapsed() >= Duration::from_millis(900));
    proxy.assert_back_to(idle, "a bandwidth-capped stream");
}

#[test]
fn a_slow_backend_past_the_route_timeout_is_504_and_its_connection_is_dropped() {
    let backend = Backend::start(Behavior::fixed(200, "late"));
    let slow = FaultProxy::start(backend.addr());
    slow.set(Fault::Latency(Duration::from_millis(800)));
    let proxy = start(slow.addr(), "timeout = \"150ms\"", "");
    let idle = proxy.idle();
    for _ in 0..3 {
        assert_eq!(get_status(proxy.proxy, "/"), 504);
    }
    // The timed-out exchanges' upstream connections are closed, not pooled half-used.
    assert!(
        wait_until(DEADLINE, || slow.open_connections() == 0),
        "{} upstream connections left open",
        slow.open_connections()
    );
    proxy.assert_back_to(idle, "route timeouts");
}

#[test]
fn an_upstream_that_half_closes_still_gets_its_answer_relayed() {
    let backend = Backend::start(Behavior::fixed(200, "answered"));
    let half = FaultProxy::start(backend.addr());
    half.set(Fault::HalfClose);
    let proxy = start(half.addr(), "retry = { attempts = 1 }", "");
    let idle = proxy.idle();
    for _ in 0..3 {
        let response = raw_request(
            proxy.proxy,
            b"GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n",
        );
        // Either the backend answers its half-closed connection (200, relayed), or it treats
        // the EOF as an abort (502): never a hang, never a wrong body.
        match response.status {
            200 => assert_eq!(response.body_text(), "answered"),
            502 => {}
            other => panic!("half-closed upstream gave {other}"),
        }
    }
    proxy.assert_back_to(idle, "half-closed upstreams");
}

#[test]
fn a_client_leaving_mid_request_body_releases_everything() {
    let backend = Backend::start(Behavior::Echo);
    let proxy = start(backend.addr(), "", "");
    let idle = proxy.idle();
    for _ in 0..5 {
        let mut conn = RawConn::connect(proxy.proxy);
        conn.send(b"POST /upload HTTP/1.1\r\nHost: app\r\nContent-Length: 1048576\r\n\r\n")
            .expect("send head");
        conn.send(&[b'x'; 16 * 1024])
            .expect("send part of the body");
        // Wait until the request reached the backend, then vanish.
        let seen = backend.connections();
        assert!(wait_until(DEADLINE, || backend.connections() >= seen.max(1)));
        drop(conn);
    }
    proxy.assert_back_to(idle, "clients leaving mid-body");
    assert!(
        wait_until(DEADLINE, || backend.open_connections() == 0),
        "the aborted uploads left {} upstream connections open",
        backend.open_connections()
    );
}

#[test]
fn a_client_leaving_mid_response_closes_the_upstream_stream() {
    let backend = Backend::start(Behavior::SlowBody {
        chunk: Bytes::from_static(&[b'y'; 1024]),
        interval: Duration::from_millis(50),
        chunks: 400,
    });
    let proxy = start(backend.addr(), "", "");
    let idle = proxy.idle();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(proxy.proxy).expect("connect");
        std::io::Write::write_all(&mut stream, b"GET /stream HTTP/1.1\r\nHost: app\r\n\r\n")
            .expect("send");
        stream
            .set_read_timeout(Some(DEADLINE))
            .expect("read timeout");
        let mut first = [0u8; 256];
        let n = stream.read(&mut first).expect("the response starts");
        assert!(first[..n].starts_with(b"HTTP/1.1 200"));
        drop(stream);
    }
    // The 20-second stream is abandoned at once, upstream included.
    assert!(
        wait_until(DEADLINE, || backend.open_connections() == 0),
        "{} upstream streams still running for clients that left",
        backend.open_connections()
    );
    proxy.assert_back_to(idle, "clients leaving mid-response");
}

#[test]
fn a_client_half_closing_after_its_request_still_gets_the_response() {
    let backend = Backend::start(Behavior::fixed(200, "still here"));
    let proxy = start(backend.addr(), "", "");
    let idle = proxy.idle();
    let mut conn = RawConn::connect(proxy.proxy);
    conn.send(b"GET / HTTP/1.1\r\nHost: app\r\n\r\n")
        .expect("send");
    conn.shutdown_write();
    let response = conn.read_response();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body_text(), "still here");
    drop(conn);
    proxy.assert_back_to(idle, "a half-closing client");
}

#[test]
fn out_of_descriptors_the_accept_loop_backs_off_instead_of_spinning() {
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = start_with(&[backend.addr()], "", "", |cmd| {
        // `ulimit -n 256` before exec: the proxy's own raise stops at this hard limit.
        let program = cmd.get_program().to_string_lossy().into_owned();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut shell = std::process::Command::new("bash");
        shell.args(["-c", "ulimit -n 256 && exec \"$0\" \"$@\"", &program]);
        shell.args(args);
        shell
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", proxy.bin.process.pid()))
        .expect("/proc/PID/limits");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 256 ")),
        "{limits}"
    );
    // Far more connections than descriptors: the kernel completes them into the backlog, and
    // accept fails with EMFILE once the proxy's table is full.
    let held: Vec<TcpStream> = (0..400)
        .map(|_| TcpStream::connect(proxy.proxy).expect("connect"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let before = proxy.cpu_ticks();
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let used = proxy.cpu_ticks() - before;
    let elapsed = window.elapsed().as_secs_f64();
    // A spinning accept loop burns a whole core (~100 ticks a second); backing off at up to one
    // second per retry costs next to nothing. A third of a core leaves room for a loaded box.
    assert!(
        (used as f64) < 33.0 * elapsed,
        "{used} ticks of CPU in {elapsed:.1} s while out of descriptors"
    );
    drop(held);
    // Descriptors free again: the proxy serves and the admin API answers.
    assert!(
        wait_until(DEADLINE, || get_status(proxy.proxy, "/") == 200),
        "no 200 after the descriptors were freed"
    );
    let health = raw_request(
        proxy.admin,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(health.status, 200);
}

#[test]
fn ten_thousand_idle_connections_are_held_and_the_admin_api_answers() {
    const HELD: usize = 10_000;
    // The client side needs its own descriptors (the proxy is another process).
    let soft = rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE");
    assert!(
        soft >= HELD as u64 + 500,
        "RLIMIT_NOFILE hard limit {soft} is below {HELD} connections"
    );
    let backend = Backend::start(Behavior::fixed(200, "ok"));
    let proxy = start(
        backend.addr(),
        "",
        "[limits]\nmax_connections = 10000\nfirst_byte_timeout = \"120s\"\nkeepalive_timeout = \"120s\"\n",
    );
    let idle = proxy.idle();
    let held: Vec<TcpStream> = (0..HELD)
        .map(|_| TcpStream::connect(proxy.proxy).expect("connect"))
        .collect();
    assert!(
        wait_until(Duration::from_secs(30), || proxy.vitals().downstream
            == HELD as u64),
        "downstream_connections never reached {HELD}: {:?}",
        proxy.vitals()
    );
    // The limit holds: one more is closed at once.
    let mut extra = RawConn::connect(proxy.proxy);
    assert!(extra.wait_closed(DEADLINE), "connection {HELD}+1 was kept");
    // The admin API is on its own listener and runtime: it answers while the proxy is full.
    let started = Instant::now();
    let health = raw_request(
        proxy.admin,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(health.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    drop(held);
    assert!(
        wait_until(DEADLINE, || get_status(proxy.proxy, "/") == 200),
        "no 200 after the idle connections left"
    );
    proxy.assert_back_to(idle, "ten thousand idle connections");
}

#[test]
fn a_5xx_burst_on_one_endpoint_is_retried_onto_the_sound_one() {
    // The first 30 requests the bursting endpoint sees get 503, then it recovers.
    let bursting = Backend::start(Behavior::script(|_, n| {
        if n < 30 {
            Action::respond(503, "burst")
        } else {
            Action::respond(200, "recovered")
        }
    }));
    let sound = Backend::start(Behavior::fixed(200, "sound"));
    let proxy = start_with(
        &[bursting.addr(), sound.addr()],
        // A budget that covers the whole burst: the default (20 %, 10 a second) would rightly
        // refuse retries for half of these requests.
        "retry = { attempts = 2, on = [\"5xx\"], budget = { ratio = 1.0, min_per_sec = 100 } }",
        "",
        |cmd| cmd,
    );
    let idle = proxy.idle();
    for i in 0..60 {
        assert_eq!(get_status(proxy.proxy, "/"), 200, "request {i}");
    }
    assert!(bursting.request_count() > 0, "the burst was never met");
    proxy.assert_back_to(idle, "a 5xx burst");
}

#[test]
fn an_h2_upstream_sending_goaway_mid_load_loses_no_request() {
    // The h2 server runs on its own runtime's worker threads while this test blocks.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (backend, connections) = runtime.block_on(crate::support::h2_server::goaway_backend(5));
    let proxy = start_with(&[backend], "", "protocol = \"h2\"", |cmd| cmd);
    let idle = proxy.idle();
    // 6 rounds of 8 concurrent requests: GOAWAYs land while streams are in flight.
    for round in 0..6 {
        let calls: Vec<_> = (0..8)
            .map(|_| {
                let addr = proxy.proxy;
                std::thread::spawn(move || get_status(addr, "/"))
            })
            .collect();
        for call in calls {
            assert_eq!(call.join().expect("client thread"), 200, "round {round}");
        }
    }
    let opened = connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        opened >= 5,
        "only {opened} connections: were GOAWAYs ignored?"
    );
    proxy.assert_back_to(idle, "GOAWAYs");
}
