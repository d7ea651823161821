"""What a route's traffic policy costs per request: instructions (callgrind) on a plain route
against the same load on routes with a local rate limit that is never hit, a `prefer_local`
cluster whose endpoints are all in our zone, and a mirror that samples none (`percent = 0`) or
every request (`percent = 100`, for information: it sends a second request). Issue 28 asks the
first two to stay within 3 % of the plain route.

One switchyard process under callgrind, one listener per policy (so every load is `GET /` to
the same backends): for each listener the counters are zeroed after a warm-up and dumped after
a fixed load, as instructions.py does for the proxies.

    python3 benches/load/run.py --switchyard BIN --policy-only      # just this table
"""
import os
import re
import subprocess
import sys

import instructions
import run

# (listener / route name, the route's extra lines, the cluster it targets)
POLICIES = (
    ("plain", "", "backend"),
    ("rate_limit", 'rate_limit = { requests = 100000000, per = "1s", key = "client_ip" }\n',
     "backend"),
    ("prefer_local", "", "local"),
    ("mirror_0", 'mirror = { cluster = "shadow", percent = 0 }\n', "backend"),
    ("mirror_100", 'mirror = { cluster = "shadow", percent = 100 }\n', "backend"),
)


def config(ports, admin, b1, b2):
    """One listener and one catch-all route per policy; `local` is the backends with
    `locality = "prefer_local"`, all in our zone; `shadow` is the mirror's cluster."""
    out = [f"""[runtime]
workers = 1
zone = "a"
[admin]
listen = "127.0.0.1:{admin}"
[log]
access = false
"""]
    for (name, extra, cluster), port in zip(POLICIES, ports):
        out.append(f'[[listeners]]\nname = "{name}"\nlisten = "127.0.0.1:{port}"\n')
        out.append(f'[[routes]]\nname = "{name}"\nlistener = "{name}"\ncluster = "{cluster}"\n'
                   f"{extra}")
    endpoints = (f'[{{ address = "127.0.0.1:{b1}", zone = "a" }}, '
                 f'{{ address = "127.0.0.1:{b2}", zone = "a" }}]')
    for cluster, extra in (("backend", ""), ("local", 'locality = "prefer_local"\n'),
                           ("shadow", "")):
        out.append(f'[clusters.{cluster}]\nbalance = "round_robin"\n{extra}'
                   f"endpoints = {endpoints}\n")
    return "".join(out)


def measure(args, work, b1, b2):
    """Instructions per request per policy: {name: figure}."""
    ports = [run.free_port() for _ in POLICIES]
    admin = run.free_port()
    cfg = os.path.join(work, "policy.toml")
    with open(cfg, "w") as f:
        f.write(config(ports, admin, b1, b2))
    dump = os.path.join(work, "callgrind.policy")
    srv = run.Server("callgrind-policy",
                     ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}",
                      args.switchyard, "run", "-c", cfg],
                     ports[0], work, start_deadline=60)
    out = {}
    try:
        for part, ((name, _, _), port) in enumerate(zip(POLICIES, ports), start=1):
            print(f"policy instructions: {name}", file=sys.stderr)
            url = f"http://127.0.0.1:{port}/"
            run.wait_ok(url, deadline=60)
            run.wrk(url, 50, instructions.WARMUP_S)
            subprocess.run(["callgrind_control", "-z", str(srv.proc.pid)], check=True,
                           capture_output=True)
            served = run.wrk(url, 50, args.duration)["requests"]
            subprocess.run(["callgrind_control", "-d", str(srv.proc.pid)], check=True,
                           capture_output=True)
            with open(f"{dump}.{part}") as f:
                total = int(re.search(r"^summary: (\d+)", f.read(), re.M).group(1))
            out[name] = total / max(served, 1)
    finally:
        srv.stop()
    return out


def report(figures):
    """The table: instructions per request and the ratio to the plain route."""
    plain = figures["plain"]
    print("| route policy (HTTP/1.1, 50 conns) | instructions per request | ÷ plain |")
    print("|---|---|---|")
    for name, _, _ in POLICIES:
        if name in figures:
            print(f"| {name} | {figures[name]:,.0f} | {figures[name] / plain:.3f} |")
