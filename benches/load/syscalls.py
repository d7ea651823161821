#!/usr/bin/env python3
"""Syscalls per request, by name, for switchyard and HAProxy under the load benchmark's loads.

Starts one proxy (run.py's config, behind run.py's nginx backend), warms it up, attaches
`strace -c -f` to it (every thread), runs a fixed load, detaches and prints each syscall's
calls per request. strace slows every syscall down, so the load runs slower than in run.py and
timing-dependent counts (epoll_wait per request, how many events one wake-up finds) read higher
than unstraced; counts that follow from the code path (accept4, setsockopt, close, connect,
socket, ...) are exact. Compare proxies with the same load and duration.

    python3 benches/load/syscalls.py --switchyard target/release/switchyard [--haproxy]
    python3 benches/load/syscalls.py --switchyard BIN --tests close,h1 --duration 3

Needs strace, wrk and nginx.
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import run
import scenarios

LOADS = {
    "close": ("conn per request (wrk, 50 conns, close)", ["Connection: close"]),
    "h1": ("HTTP/1.1 keep-alive (wrk, 50 conns)", []),
}


def strace_counts(pid, load, out):
    """{syscall: calls} for `pid`'s threads while `load()` runs, and load()'s result."""
    tracer = subprocess.Popen(["strace", "-c", "-f", "-q", "-o", out, "-p", str(pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached to every thread before the load starts
    try:
        result = load()
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
    counts = {}
    with open(out) as f:
        for line in f:
            # % time  seconds  usecs/call  calls  [errors]  syscall
            m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:(\d+)\s+)?([a-z_0-9]+)\s*$",
                         line)
            if m and m.group(3) != "total":
                counts[m.group(3)] = int(m.group(1))
    return counts, result


def measure(name, cmd, port, work, tests, duration):
    out = {}
    for test in tests:
        _, headers = LOADS[test]
        srv = run.Server(f"strace-{name}-{test}", cmd, port, work)
        try:
            run.wait_ok(f"http://127.0.0.1:{port}/")
            url = f"http://127.0.0.1:{port}/"
            run.wrk(url, 50, 1, headers)
            counts, result = strace_counts(
                srv.proc.pid, lambda: run.wrk(url, 50, duration, headers),
                os.path.join(work, f"strace.{name}.{test}"))
        finally:
            srv.stop()
        out[test] = (counts, max(result["requests"], 1))
    return out


def report(figures, tests):
    names = list(figures)
    for test in tests:
        label, _ = LOADS[test]
        print(f"\n{label}: syscalls per request")
        print("| syscall | " + " | ".join(names) + " |")
        print("|---" * (len(names) + 1) + "|")
        calls = sorted({c for n in names for c in figures[n][test][0]},
                       key=lambda c: -max(figures[n][test][0].get(c, 0) / figures[n][test][1]
                                          for n in names))
        for c in calls:
            cells = " | ".join(f"{figures[n][test][0].get(c, 0) / figures[n][test][1]:.2f}"
                               for n in names)
            print(f"| {c} | {cells} |")
        totals = " | ".join(f"**{sum(figures[n][test][0].values()) / figures[n][test][1]:.2f}**"
                            for n in names)
        print(f"| **total** | {totals} |")
        print("requests: " + ", ".join(f"{n} {figures[n][test][1]:,}" for n in names))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--switchyard", action="append", default=[],
                    help="a binary to measure (repeatable: a baseline and yours)")
    ap.add_argument("--haproxy", action="store_true", help="also measure HAProxy")
    ap.add_argument("--tests", default="close", help="comma-separated: close, h1")
    ap.add_argument("--duration", type=int, default=3, help="seconds of traced load per test")
    args = ap.parse_args()
    tests = [t for t in args.tests.split(",") if t]
    if set(tests) - set(LOADS):
        ap.error(f"known tests: {', '.join(LOADS)}")
    run.raise_nofile()
    work = tempfile.mkdtemp(prefix="switchyard-syscalls-")
    os.chmod(work, 0o755)
    b1, b2, port, admin = (run.free_port() for _ in range(4))
    temp = " ".join(f"{k}_temp_path {work}/{k};" for k in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    with open(f"{work}/backend.conf", "w") as f:
        f.write(f"""worker_processes 1; daemon off; worker_rlimit_nofile 30000;
events {{ worker_connections 20000; }} pid {work}/backend.pid; error_log {work}/backend.err;
http {{ access_log off; keepalive_requests 10000000; {temp}
  server {{ listen 127.0.0.1:{b1}; listen 127.0.0.1:{b2};
    location = / {{ return 200 "ok"; }} }} }}""")
    with open(f"{work}/switchyard.toml", "w") as f:
        f.write(scenarios.switchyard_config(port, admin, b1, b2))
    with open(f"{work}/haproxy.cfg", "w") as f:
        f.write(scenarios.haproxy_config(port, b1, b2))
    commands = {}
    for i, binary in enumerate(args.switchyard):
        name = os.path.basename(binary) if binary not in commands else f"{binary}#{i}"
        commands[name] = [os.path.abspath(binary), "run", "-c", f"{work}/switchyard.toml"]
    if args.haproxy:
        commands["haproxy"] = ["haproxy", "-f", f"{work}/haproxy.cfg"]
    if not commands:
        ap.error("nothing to measure: give --switchyard and/or --haproxy")
    backend = run.Server("backend", ["nginx", "-c", f"{work}/backend.conf", "-p", work], b1, work)
    figures = {}
    try:
        for name, cmd in commands.items():
            print(f"syscalls: {name}", file=sys.stderr)
            figures[name] = measure(name, cmd, port, work, tests, args.duration)
    finally:
        backend.stop()
    print(run.machine())
    report(figures, tests)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
