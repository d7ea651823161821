//! Starting the proxy for a test: in-process from a TOML string ([`Proxy::start_toml`]), or as
//! the real binary with captured output ([`BinProcess`]).

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use switchyard::runtime::ProxyHandle;

use super::{wait_until, DEADLINE};

/// Namespace for the in-process launcher, as tests read it: `Proxy::start_toml(...)`.
pub struct Proxy;

impl Proxy {
    /// See [`TestProxy::start_toml`].
    pub fn start_toml(toml: &str) -> TestProxy {
        TestProxy::start_toml(toml)
    }
}

/// A proxy running inside the test process; shut down on drop.
pub struct TestProxy {
    handle: Option<ProxyHandle>,
    path: PathBuf,
    // Kept alive for the proxy's lifetime: relative paths in the config resolve against it.
    _dir: tempfile::TempDir,
}

impl TestProxy {
    /// Writes `toml` to `switchyard.toml` in a fresh temp folder, parses it with
    /// `config::parse` and starts it. Listener addresses are used as written (use port 0 and
    /// [`TestProxy::addr`]). Panics with the config errors or start error.
    pub fn start_toml(toml: &str) -> Self {
        match Self::try_start_toml(toml) {
            Ok(p) => p,
            Err(e) => panic!("test proxy did not start: {e}"),
        }
    }

    /// [`TestProxy::start_toml`] that returns the failure as text instead of panicking.
    pub fn try_start_toml(toml: &str) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = dir.path().join("switchyard.toml");
        std::fs::write(&path, toml).map_err(|e| e.to_string())?;
        let mut config = switchyard::config::parse(toml, &path).map_err(|e| format!("{e}"))?;
        admin_on_free_port(toml, &mut config);
        // Started on a plain thread: `start` may build and block on runtimes of its own, which
        // tokio forbids from inside the async test that calls us.
        let handle = std::thread::scope(|s| {
            s.spawn(|| switchyard::runtime::start(config))
                .join()
                .map_err(|_| "runtime::start panicked".to_string())
        })?
        .map_err(|e| format!("{e}"))?;
        Ok(Self {
            handle: Some(handle),
            path,
            _dir: dir,
        })
    }

    /// The bound address of listener `name`; panics if there is no such listener.
    pub fn addr(&self, listener: &str) -> SocketAddr {
        self.handle
            .as_ref()
            .and_then(|h| h.listener_addr(listener))
            .unwrap_or_else(|| panic!("no listener named {listener:?}"))
    }

    /// `http://ADDR{path}` for listener `name`.
    pub fn url(&self, listener: &str, path: &str) -> String {
        format!("http://{}{}", self.addr(listener), path)
    }

    /// The admin listener's bound address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.handle
            .as_ref()
            .map(ProxyHandle::admin_addr)
            .unwrap_or_else(|| panic!("proxy already shut down"))
    }

    /// `http://ADMIN{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr(), path)
    }

    /// The running proxy's handle (snapshot, endpoint registry).
    pub fn handle(&self) -> &ProxyHandle {
        self.handle
            .as_ref()
            .unwrap_or_else(|| panic!("proxy already shut down"))
    }

    /// The mesh member's UDP address (the proxy must have `[mesh]`).
    #[allow(dead_code)] // not every test binary runs a mesh
    pub fn mesh_addr(&self) -> SocketAddr {
        self.handle().mesh().expect("mesh configured").local_addr()
    }

    /// The config file the proxy was started from (its folder is the test's scratch space).
    pub fn config_path(&self) -> &Path {
        &self.path
    }

    /// Shuts the proxy down and waits for it.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            // Same reason as in `try_start_toml`: shutdown may block on the proxy's runtimes.
            std::thread::scope(|s| {
                let _ = s.spawn(move || handle.shutdown()).join();
            });
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Moves the admin listener to a free port unless the test's TOML has an `[admin]` section:
/// tests run in parallel in one process, and every proxy on the default 127.0.0.1:9901 would
/// clash with the next one.
pub fn admin_on_free_port(toml: &str, config: &mut switchyard::config::Config) {
    if !toml.contains("[admin]") {
        config.admin.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    }
}

/// Which pipe a captured line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipe {
    Stdout,
    Stderr,
}

#[derive(Default)]
struct Captured {
    lines: Vec<(Pipe, String)>,
    /// Pipes that reached EOF (0..=2): when both have, no line will ever come.
    closed: usize,
}

/// Lines captured from a child, with a condvar so waiting needs no polling.
#[derive(Default)]
struct Capture {
    state: Mutex<Captured>,
    changed: Condvar,
}

/// The `switchyard` binary running as a child process; killed on drop.
pub struct BinProcess {
    child: Child,
    capture: Arc<Capture>,
}

/// Exit status and complete output of a finished run.
#[derive(Debug)]
pub struct BinOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl BinProcess {
    /// The command for the binary Cargo built for this test run, for callers that need to set
    /// a working directory or environment before [`BinProcess::spawn_command`].
    pub fn command(args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_switchyard"));
        cmd.args(args);
        cmd
    }

    /// Runs `switchyard ARGS...` with stdout and stderr captured.
    pub fn spawn(args: &[&str]) -> Self {
        Self::spawn_command(Self::command(args))
    }

    /// Spawns a prepared [`BinProcess::command`] with stdout and stderr captured.
    pub fn spawn_command(mut cmd: Command) -> Self {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn switchyard binary");
        let capture = Arc::new(Capture::default());
        if let Some(out) = child.stdout.take() {
            read_lines(out, Pipe::Stdout, capture.clone());
        }
        if let Some(err) = child.stderr.take() {
            read_lines(err, Pipe::Stderr, capture.clone());
        }
        Self { child, capture }
    }

    /// Runs the binary to completion (killing it after `deadline`, which fails the test).
    pub fn run(args: &[&str], deadline: Duration) -> BinOutput {
        let mut p = Self::spawn(args);
        let status = p
            .wait_exit(deadline)
            .unwrap_or_else(|| panic!("switchyard {args:?} still running after {deadline:?}"));
        // Both pipes reach EOF once the process is gone; wait so no output is missed.
        let drained = p.wait_pipes_closed(deadline);
        assert!(drained, "output pipes of switchyard {args:?} stayed open");
        BinOutput {
            status,
            stdout: p.output(Pipe::Stdout),
            stderr: p.output(Pipe::Stderr),
        }
    }

    /// The child's process id, for signals the helpers do not wrap.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first line (stdout or stderr) containing `needle`, waiting up to `deadline`;
    /// `None` if it never appears (or the process exits without printing it).
    pub fn wait_for_line(&self, needle: &str, deadline: Duration) -> Option<String> {
        let end = Instant::now() + deadline;
        let mut state = self.lock();
        loop {
            if let Some((_, line)) = state.lines.iter().find(|(_, l)| l.contains(needle)) {
                return Some(line.clone());
            }
            let now = Instant::now();
            if state.closed == 2 || now >= end {
                return None;
            }
            state = self
                .capture
                .changed
                .wait_timeout(state, end - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// [`BinProcess::wait_for_line`] with [`DEADLINE`], panicking with all output if the line
    /// does not appear.
    pub fn expect_line(&self, needle: &str) -> String {
        self.wait_for_line(needle, DEADLINE).unwrap_or_else(|| {
            panic!(
                "switchyard never printed {needle:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                self.output(Pipe::Stdout),
                self.output(Pipe::Stderr)
            )
        })
    }

    /// The mesh member's UDP address, from the `mesh listening on ADDR` line a process with
    /// `[mesh]` logs at start (port 0 resolved).
    #[allow(dead_code)] // not every test binary runs a mesh
    pub fn mesh_addr(&self) -> SocketAddr {
        const NEEDLE: &str = "mesh listening on ";
        let line = self.expect_line(NEEDLE);
        let rest = &line[line.find(NEEDLE).unwrap_or(0) + NEEDLE.len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"')
            .unwrap_or(rest.len());
        rest[..end]
            .parse()
            .unwrap_or_else(|_| panic!("no mesh address in {line:?}"))
    }

    /// Waits for a line containing `needle` followed by `http://ADDR` and returns ADDR, e.g.
    /// `wait_for_addr("listening on")` for `switchyard demo listening on http://127.0.0.1:4242`.
    pub fn wait_for_addr(&self, needle: &str) -> SocketAddr {
        let line = self.expect_line(needle);
        parse_url_addr(&line[line.find(needle).unwrap_or(0)..])
            .unwrap_or_else(|| panic!("no http://ADDR after {needle:?} in {line:?}"))
    }

    /// Everything captured so far from one pipe, one line per line.
    pub fn output(&self, pipe: Pipe) -> String {
        let state = self.lock();
        let lines: Vec<&str> = state
            .lines
            .iter()
            .filter(|(p, _)| *p == pipe)
            .map(|(_, l)| l.as_str())
            .collect();
        lines.join("\n")
    }

    /// Sends SIGTERM (through the `kill` utility: no libc binding needed for one signal).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM failed");
    }

    /// The exit status once the process ends, or `None` if it is still running at `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(deadline, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    fn wait_pipes_closed(&self, deadline: Duration) -> bool {
        wait_until(deadline, || self.lock().closed == 2)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.capture
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for BinProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_lines(pipe: impl Read + Send + 'static, which: Pipe, capture: Arc<Capture>) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    let mut state = capture.state.lock().unwrap_or_else(PoisonError::into_inner);
                    state.lines.push((which, line));
                    capture.changed.notify_all();
                }
            }
        }
        let mut state = capture.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.closed += 1;
        capture.changed.notify_all();
    });
}

/// The socket address in the first `http://ADDR` of `text`. ADDR ends at the first character
/// an address cannot hold, so a JSON log line's closing quote ends it too.
pub fn parse_url_addr(text: &str) -> Option<SocketAddr> {
    let rest = &text[text.find("http://")? + "http://".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The real binary running a config file of its own (`switchyard run -c`), for tests that need
/// a process: signals, exit codes, its logs, its own memory or file descriptors.
pub struct BinProxy {
    /// The running binary; its output is captured.
    pub process: BinProcess,
    /// The first listener's address.
    pub addr: SocketAddr,
    /// The admin API's address.
    pub admin: SocketAddr,
    // The config file's folder, kept for the process's lifetime (relative paths resolve in it).
    dir: tempfile::TempDir,
}

impl BinProxy {
    /// Writes `toml` to `switchyard.toml` in a fresh temp folder and runs the binary on it. The
    /// admin API gets a free port unless `toml` has an `[admin]` section (then it must listen on
    /// port 0 too).
    pub fn start(toml: &str) -> Self {
        Self::start_with(toml, |cmd| cmd)
    }

    /// [`BinProxy::start`] with a hook that prepares the command (environment variables, a
    /// wrapping shell that sets limits).
    pub fn start_with(toml: &str, wrap: impl FnOnce(Command) -> Command) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("switchyard.toml");
        let mut text = toml.to_owned();
        if !toml.contains("[admin]") {
            text += "\n[admin]\nlisten = \"127.0.0.1:0\"\n";
        }
        std::fs::write(&path, text).expect("write config");
        let config = path.to_string_lossy().into_owned();
        let process = BinProcess::spawn_command(wrap(BinProcess::command(&["run", "-c", &config])));
        // The first such line is the proxy listener's; the admin API's comes after.
        let addr = process.wait_for_addr("listening on http://");
        let admin = process.wait_for_addr("admin API listening on http://");
        Self {
            process,
            addr,
            admin,
            dir,
        }
    }

    /// The folder of the config file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// [`parse_url_addr`] of a log line the test knows holds one; panics with the line otherwise.
pub fn addr_in(line: &str) -> SocketAddr {
    parse_url_addr(line).unwrap_or_else(|| panic!("no address in {line:?}"))
}
