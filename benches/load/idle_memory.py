#!/usr/bin/env python3
"""Idle keep-alive connection memory, alone and fast: starts one proxy (a switchyard binary, or
HAProxy with --haproxy) with run.py's config behind an nginx backend, opens N connections one
after another, each after one `GET /` (run.py's `idle_connections`), holds them for a second and
prints idle RSS, RSS per connection and VmHWM. `--load` first runs short wrk loads as run.py does
before its memory figures; `--env K=V` sets the proxy's environment (e.g. MIMALLOC_* options).

  python3 benches/load/idle_memory.py --switchyard target/release/switchyard [-n 9000] [--runs 3]
  python3 benches/load/idle_memory.py --haproxy
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
import urllib.request

import run
import scenarios


def once(args, cmd, port, admin, work, env):
    srv = run.Server("proxy", cmd, port, work, env=env)
    try:
        run.wait_ok(f"http://127.0.0.1:{port}/")
        idle = run.status_kib(srv.proc.pid, "VmRSS")
        if args.load:
            base = f"http://127.0.0.1:{port}"
            run.wrk(base + "/", 50, 2)
            run.wrk(base + "/", 1, 2)
            run.wrk(base + "/4k", 50, 2)
            run.wrk(base + "/", 50, 2, ["Connection: close"])
        socks = run.idle_connections(port, args.n)
        time.sleep(1)
        loaded = run.status_kib(srv.proc.pid, "VmRSS")
        parked = ""
        if admin:
            text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
            parked = "".join(f", {line.split()[0]} {line.split()[-1]}" for line in text.splitlines()
                             if line.startswith("switchyard_downstream_connections"))
        for s in socks:
            s.close()
        peak = run.status_kib(srv.proc.pid, "VmHWM")
        print(f"idle RSS {idle} KiB, RSS per idle conn {(loaded - idle) / args.n:.2f} KiB, "
              f"VmHWM {peak} KiB ({loaded} KiB with the {args.n} open){parked}", flush=True)
    finally:
        srv.stop()


def main():
    ap = argparse.ArgumentParser()
    who = ap.add_mutually_exclusive_group(required=True)
    who.add_argument("--switchyard", help="the binary to measure")
    who.add_argument("--haproxy", action="store_true", help="measure HAProxy instead")
    ap.add_argument("-n", type=int, default=9000, help="idle connections (run.py's default)")
    ap.add_argument("--runs", type=int, default=1, help="fresh processes, one after another")
    ap.add_argument("--load", action="store_true", help="short wrk loads first, as run.py")
    ap.add_argument("--env", action="append", default=[], help="K=V for the proxy")
    args = ap.parse_args()
    run.raise_nofile()
    work = tempfile.mkdtemp(prefix="switchyard-idle-")
    os.chmod(work, 0o755)
    os.makedirs(f"{work}/www")
    with open(f"{work}/www/4k", "wb") as f:
        f.write(b"x" * 4096)
    b1, b2 = run.free_port(), run.free_port()
    port, admin = run.free_port(), run.free_port()
    temp = " ".join(f"{k}_temp_path {work}/{k};" for k in
                    ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    with open(f"{work}/backend.conf", "w") as f:
        f.write(f"""worker_processes 1; daemon off; worker_rlimit_nofile 30000;
events {{ worker_connections 20000; }} pid {work}/backend.pid; error_log {work}/backend.err;
http {{ access_log off; keepalive_requests 10000000; {temp}
  server {{ listen 127.0.0.1:{b1}; listen 127.0.0.1:{b2}; root {work}/www;
    location = / {{ return 200 "ok"; }} }} }}""")
    if args.haproxy:
        with open(f"{work}/haproxy.cfg", "w") as f:
            f.write(scenarios.haproxy_config(port, b1, b2))
        cmd, admin = ["haproxy", "-f", f"{work}/haproxy.cfg"], None
    else:
        with open(f"{work}/switchyard.toml", "w") as f:
            f.write(scenarios.switchyard_config(port, admin, b1, b2))
        cmd = [args.switchyard, "run", "-c", f"{work}/switchyard.toml"]
    env = dict(os.environ)
    env.update(kv.split("=", 1) for kv in args.env)
    backend = run.Server("backend", ["nginx", "-c", f"{work}/backend.conf", "-p", work], b1, work)
    try:
        print(run.machine())
        for _ in range(args.runs):
            once(args, cmd, port, admin, work, env)
    finally:
        backend.stop()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
