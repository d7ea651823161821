#!/usr/bin/env python3
"""Soak: mixed HTTP/1.1, HTTP/2 and gRPC load through switchyard with injected faults and two
reloads a minute, on loopback only. Run through benches/soak.sh.

The backend is nginx with two endpoints plus a closed port in the cluster. Faults injected:
- on the first endpoint, about 1 in 16 requests to /flaky answer 503, and 1 in 16 to /drop
  close the connection without an answer (nginx's 444); the second endpoint is sound, so a
  request that meets a fault always has a sound endpoint left for its retry (each try goes to
  a different endpoint), and every client-visible error is one the proxy should have avoided;
- one endpoint of the cluster is a closed port (connect failures until ejected, and again at
  every half-open probe);
- the config is rewritten and reloaded every 30 s (`POST /reload`), alternating a header.
Retries (5xx, reset, connect-failure) and ejection must absorb every injected fault: the
clients must see no error at all. The summary prints client errors (must be 0), switchyard's own
5xx count, RSS every 30 s (must be flat after warm-up), and the idle gauges after the load stops
(downstream connections and tasks back to their pre-load values).
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
import urllib.request

# The load benchmark's port helpers (benches/load/run.py).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "load"))
from run import free_port, wait_port  # noqa: E402


NGINX = """
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000;
    # The faulty endpoint: about 1 in 16 requests to /flaky get a 503, and 1 in 16 to /drop
    # a closed connection (444).
    server {{
        listen 127.0.0.1:{p1};
        location /ok {{ return 200 "ok"; }}
        location /flaky {{
            if ($request_id ~ "0$") {{ return 503; }}
            return 200 "ok";
        }}
        location /drop {{
            if ($request_id ~ "0$") {{ return 444; }}
            return 200 "ok";
        }}
    }}
    # The sound endpoint.
    server {{
        listen 127.0.0.1:{p2};
        location / {{ return 200 "ok"; }}
    }}
    server {{
        listen 127.0.0.1:{grpc} http2;
        location / {{
            add_header content-type application/grpc always;
            add_trailer grpc-status 0 always;
            return 200 "";
        }}
    }}
}}
"""

CONFIG = """
[runtime]
workers = 2

[admin]
listen = "127.0.0.1:{admin}"

[log]
access = false

[[listeners]]
name = "public"
listen = "127.0.0.1:{port}"

[[routes]]
match = {{ path_prefix = "/soak.Echo/" }}
cluster = "grpc"
retry = {{ attempts = 3, on = ["connect-failure", "reset", "5xx", "gateway-error", "refused-stream"], budget = {{ ratio = 0.5, min_per_sec = 100 }} }}

[[routes]]
match = {{ path_prefix = "/" }}
cluster = "web"
retry = {{ attempts = 3, on = ["connect-failure", "reset", "5xx", "gateway-error"], budget = {{ ratio = 0.5, min_per_sec = 100 }} }}
headers = {{ response_add = {{ "x-soak-generation" = "{generation}" }} }}

[clusters.web]
endpoints = ["127.0.0.1:{p1}", "127.0.0.1:{p2}", "127.0.0.1:{dead}"]
pool = {{ idle_timeout = "5s" }}
# Envoy's default of 3 concurrent retries per cluster (ours too) is meant to stop retry
# storms; 64 concurrent streams with 1 in 16 failing need more headroom than that.
circuit_breaker = {{ max_retries = 64 }}
outlier_detection = {{ consecutive_gateway_errors = 3, base_time = "5s", max_percent = 50 }}

[clusters.grpc]
protocol = "h2"
endpoints = ["127.0.0.1:{grpc}"]
pool = {{ idle_timeout = "5s" }}
"""

WRK_SCRIPT = """
local paths = {"/ok", "/flaky", "/drop"}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
"""


def scrape(admin):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5) as r:
        return r.read().decode()


def metric_sum(text, name, label=""):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--switchyard", required=True)
    ap.add_argument("--minutes", type=float, default=10.0)
    args = ap.parse_args()
    seconds = int(args.minutes * 60)

    work = tempfile.mkdtemp(prefix="switchyard-soak-")
    p1, p2, grpc, port, admin = (free_port() for _ in range(5))
    dead = free_port()  # bound and released again: nothing listens there
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(NGINX.format(dir=work, p1=p1, p2=p2, grpc=grpc))
    nginx = subprocess.Popen(["nginx", "-c", f"{work}/nginx.conf", "-g", "daemon off;"])
    config_path = f"{work}/switchyard.toml"

    def write_config(generation):
        with open(config_path, "w") as f:
            f.write(CONFIG.format(admin=admin, port=port, p1=p1, p2=p2, grpc=grpc,
                                  dead=dead, generation=generation))

    write_config(0)
    proxy = subprocess.Popen([args.switchyard, "run", "-c", config_path],
                             stdout=subprocess.DEVNULL, stderr=open(f"{work}/switchyard.log", "w"))
    procs = [nginx, proxy]
    try:
        for p in (p1, p2, grpc, port, admin):
            wait_port(p, deadline=15.0)
        # Idle baseline once start-up has settled (every worker's accept loop running): two
        # scrapes half a second apart that agree.
        idle_tasks, settle_end = -1.0, time.time() + 10
        while time.time() < settle_end:
            tasks_now = metric_sum(scrape(admin), "switchyard_runtime_tasks", 'runtime="worker-')
            if tasks_now == idle_tasks:
                break
            idle_tasks = tasks_now
            time.sleep(0.5)
        # Each worker starts its upstream pool's reaper (one task) on first use: the only task
        # that may stay after the load.
        workers = 2
        with open(f"{work}/paths.lua", "w") as f:
            f.write(WRK_SCRIPT)
        with open(f"{work}/grpc.bin", "wb") as f:
            f.write(b"\x00\x00\x00\x00\x05hello")

        base = f"http://127.0.0.1:{port}"
        loads = {
            "http1 (wrk, 32 conns: /ok /flaky /drop)": subprocess.Popen(
                ["wrk", "-t1", "-c32", f"-d{seconds}s", "-s", f"{work}/paths.lua", base + "/"],
                stdout=subprocess.PIPE, text=True),
            "http2 (h2load, 4 conns x 8 streams: /flaky)": subprocess.Popen(
                ["h2load", "-c4", "-m8", f"-D{seconds}", base + "/flaky"],
                stdout=subprocess.PIPE, text=True),
            "grpc (h2load, 2 conns x 8 streams)": subprocess.Popen(
                ["h2load", "-c2", "-m8", f"-D{seconds}", "-d", f"{work}/grpc.bin",
                 "-H", "content-type: application/grpc", "-H", "te: trailers",
                 base + "/soak.Echo/Call"],
                stdout=subprocess.PIPE, text=True),
        }
        procs += list(loads.values())

        rss = []
        reloads = {"ok": 0, "failed": 0}
        start = time.time()
        generation = 0
        next_reload = start + 30
        next_sample = start
        while time.time() - start < seconds:
            now = time.time()
            if now >= next_sample:
                rss.append((int(now - start), rss_kib(proxy.pid)))
                next_sample += 30
            if now >= next_reload:
                generation += 1
                write_config(generation)
                req = urllib.request.Request(f"http://127.0.0.1:{admin}/reload", method="POST")
                try:
                    with urllib.request.urlopen(req, timeout=10) as r:
                        reloads["ok" if r.status == 200 else "failed"] += 1
                except Exception:
                    reloads["failed"] += 1
                next_reload += 30
            time.sleep(0.5)
        rss.append((int(time.time() - start), rss_kib(proxy.pid)))

        outputs = {name: p.communicate(timeout=60)[0] for name, p in loads.items()}
        # The load generators have closed their connections: the gauges must come back (pooled
        # upstream connections, each a task, expire after the 5 s pool idle timeout).
        end = time.time() + 30
        while True:
            after = scrape(admin)
            downstream = metric_sum(after, "switchyard_downstream_connections")
            tasks = metric_sum(after, "switchyard_runtime_tasks", 'runtime="worker-')
            if (downstream == 0 and tasks <= idle_tasks + workers) or time.time() > end:
                break
            time.sleep(0.5)

        print(f"\nsoak: {args.minutes:g} min, reloads ok {reloads['ok']} failed {reloads['failed']}")
        client_errors = 0
        for name, out in outputs.items():
            if name.startswith("http1"):
                reqs = int(re.search(r"(\d+) requests in", out).group(1))
                non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
                sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
                errors = (int(non2xx.group(1)) if non2xx else 0) + \
                    (sum(int(x) for x in sock.groups()) if sock else 0)
            else:
                m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
                reqs = int(m.group(1))
                errors = int(m.group(3)) + int(m.group(4))
                codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
                errors += int(codes.group(3)) + int(codes.group(4))
            client_errors += errors
            print(f"  {name}: {reqs} requests, {errors} client-visible errors")
        retried = {reason: int(metric_sum(after, "switchyard_retries_total", f'reason="{reason}"'))
                   for reason in ("gateway_error", "reset", "connect_failure")}
        refused = int(metric_sum(after, "switchyard_circuit_rejections_total"))
        exhausted = int(metric_sum(after, "switchyard_retry_budget_exhausted_total"))
        print(f"  injected faults absorbed: 503s retried {retried['gateway_error']}, resets retried "
              f"{retried['reset']}, connect failures retried {retried['connect_failure']}; "
              f"circuit rejections {refused}, retry budget exhausted {exhausted}")
        proxy_5xx = int(sum(metric_sum(after, "switchyard_requests_total", f'code="{c}"')
                            for c in ("500", "502", "503", "504")))
        print(f"  switchyard answered 5xx: {proxy_5xx}")
        print("  RSS KiB over time: " + ", ".join(f"{t}s {kib}" for t, kib in rss))
        warm = [kib for t, kib in rss if t >= 120] or [kib for _, kib in rss]
        growth = (warm[-1] / warm[0]) if warm and warm[0] else 1.0
        print(f"  RSS after warm-up: first {warm[0]} KiB, last {warm[-1]} KiB (x{growth:.2f})")
        print(f"  after the load: downstream_connections {int(downstream)}, worker tasks {int(tasks)} "
              f"(before any traffic {int(idle_tasks)}, plus one pool reaper per worker)")
        ok = client_errors == 0 and proxy_5xx == 0 and growth <= 1.2 and downstream == 0 \
            and tasks <= idle_tasks + workers and reloads["failed"] == 0
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
