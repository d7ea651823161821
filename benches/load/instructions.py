"""User-space instructions per request, counted by valgrind's callgrind (on whenever valgrind
is present; `--no-instructions` turns it off). Their ratio is the report's headline.

CPU µs per request moves with whatever else the machine runs: on a shared VM the same proxy
can measure several times slower on a busy day than on a calm one. An instruction count does
not move, so a change of a few percent in our own code shows here when the timed figures cannot
tell it from noise. It leaves out the kernel (most of a proxy's time under load: the syscalls
and the scheduler), so it complements the timed table and does not replace it.

Each proxy runs alone under callgrind, pinned like the rest of the benchmark; the counters are
zeroed after a warm-up and dumped after a fixed load, so start-up and shutdown are not counted.
NGINX is left out: its worker is a child process, which callgrind would count separately.
Traefik and Caddy are left out too: they are Go programs, which valgrind does not support (Go's
runtime is not written to run under it), so their counts would not be trusted.
"""
import os
import re
import shutil
import subprocess
import sys

import run

WARMUP_S = 2
# The loads: keep-alive HTTP/1.1 (run.py's "50 conns, small"), h2c, and a new connection per
# request (run.py's "conn per request": the same wrk load with `Connection: close`).
TESTS = ("h1", "h2", "close")
NOT_COUNTED = ("nginx", "traefik", "caddy")


def available():
    """Whether callgrind and its control tool are installed."""
    return all(shutil.which(tool) for tool in ("valgrind", "callgrind_control"))


def load(test, port, h2port):
    """The load of `test` (one of TESTS) as a function of its duration in seconds."""
    url = f"http://127.0.0.1:{port}/"
    if test == "h1":
        return lambda secs: run.wrk(url, 50, secs)
    if test == "close":
        return lambda secs: run.wrk(url, 50, secs, ["Connection: close"])
    return lambda secs: run.h2load(f"http://127.0.0.1:{h2port}/", secs)


def measure(name, cmd, port, h2port, work, duration, tests=("h1", "h2")):
    """Instructions per request at 50 connections (HTTP/1.1) and h2load 10 x 10 (h2c), and
    with `tests` including "close", on a new connection per request."""
    out = {}
    for test in tests:
        dump = os.path.join(work, f"callgrind.{name}.{test}")
        # valgrind starts a program about 50 times slower.
        srv = run.Server(f"callgrind-{name}-{test}",
                         ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}"] + cmd,
                         port, work, start_deadline=60)
        try:
            run_load = load(test, port, h2port)
            run_load(WARMUP_S)
            subprocess.run(["callgrind_control", "-z", str(srv.proc.pid)], check=True,
                           capture_output=True)
            served = run_load(duration)["requests"]
            subprocess.run(["callgrind_control", "-d", str(srv.proc.pid)], check=True,
                           capture_output=True)
        finally:
            srv.stop()
        # The dump requested above is part 1: counts from the zeroing to the dump.
        with open(f"{dump}.1") as f:
            total = int(re.search(r"^summary: (\d+)", f.read(), re.M).group(1))
        out[test] = total / max(served, 1)
    return out


def compare(commands, work, duration):
    """`commands`: name -> (argv, port, h2 port, env); returns name -> {"h1", "h2"}."""
    figures = {}
    for name, (cmd, port, h2port, _env) in commands.items():
        if name in NOT_COUNTED:
            continue
        print(f"instructions: {name}", file=sys.stderr)
        figures[name] = measure(name, cmd, port, h2port, work, duration)
    return figures


def report(figures):
    names = list(figures)
    ratios = [n for n in names if n != "switchyard"]
    print("| instructions per request (user space, callgrind) | " + " | ".join(names)
          + " | " + " | ".join("÷ " + r for r in ratios) + " |")
    print("|---" * (len(names) + len(ratios) + 1) + "|")
    for test, label in (("h1", "HTTP/1.1, 50 conns, small"), ("h2", "h2c, 10 conns x 10 streams")):
        cells = " | ".join(f"{figures[n][test]:,.0f}" for n in names)
        rel = " | ".join(f"{figures['switchyard'][test] / figures[r][test]:.2f}" for r in ratios)
        print(f"| {label} | {cells} | {rel} |")
