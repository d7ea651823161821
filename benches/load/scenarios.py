"""The load benchmark's scenarios beyond steady load: reload to serving at 10,000
routes, failed requests while reloading under load, and cache hits.

Each scenario starts its own proxy instances (HAProxy in master-worker mode, so that a reload is
its usual signal), so the steady-load processes measured by run.py stay untouched.
"""
import os
import signal
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request

import run  # noqa: E402 (run imports this module too; names are looked up at call time)

RELOAD_ROUTES = 10_000
NEW_PATH = "/new-route"


def get_status(url, timeout=2.0):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def wait_status(url, status, deadline=30.0):
    """Polls `url` on fresh connections until it answers `status`; returns when, or None."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if get_status(url) == status:
            return time.monotonic()
        time.sleep(0.0005)
    return None


# --- configurations -------------------------------------------------------------------------

def switchyard_config(port, admin, b1, b2, routes=(), catch_all=True, cache=False):
    """The bench config, plus one exact-path route per entry of `routes`."""
    out = [f"""[runtime]
workers = 1
[admin]
listen = "127.0.0.1:{admin}"
[log]
access = false
[[listeners]]
name = "bench"
listen = "127.0.0.1:{port}"
"""]
    if cache:
        out.append('[cache]\nmax_bytes = "64MiB"\n')
    for path in routes:
        out.append(f'[[routes]]\nname = "{path.strip("/")}"\nmatch = {{ path = "{path}" }}\n'
                   f'cluster = "backend"\n')
    if cache:
        out.append('[[routes]]\nname = "cached"\nmatch = { path_prefix = "/c" }\n'
                   'cluster = "backend"\ncache = true\n')
    if catch_all:
        out.append('[[routes]]\nname = "all"\ncluster = "backend"\n')
    out.append(f"""[clusters.backend]
balance = "round_robin"
endpoints = ["127.0.0.1:{b1}", "127.0.0.1:{b2}"]
""")
    return "".join(out)


def haproxy_config(port, b1, b2, routes=(), catch_all=True, cache=False, h2_port=None):
    """HAProxy's bench config; `h2_port` adds a second bind speaking h2c."""
    h2_bind = f"  bind 127.0.0.1:{h2_port} proto h2\n" if h2_port else ""
    rules = "".join(f"  use_backend backend if {{ path {p} }}\n" for p in routes)
    default = "  default_backend backend\n" if catch_all else ""
    cache_section = "cache small\n  total-max-size 64\n  max-age 3600\n" if cache else ""
    cache_rules = ("  http-request cache-use small\n  http-response cache-store small\n"
                   if cache else "")
    return f"""global
  nbthread 1
  maxconn 9800
defaults
  mode http
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  option http-keep-alive
{cache_section}frontend bench
  bind 127.0.0.1:{port}
{h2_bind}{rules}{default}backend backend
  balance roundrobin
  http-reuse always
{cache_rules}  server s1 127.0.0.1:{b1}
  server s2 127.0.0.1:{b2}
"""


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def route_paths(n, extra=()):
    return [f"/r{i}" for i in range(n)] + list(extra)


# --- reload to serving ----------------------------------------------------------------------

def reload_to_serving(args, work, b1, b2, reps=7):
    """ms from the reload request (POST /reload; HAProxy: SIGUSR2 to the master) to the first
    answer of a route that only the new config has, at RELOAD_ROUTES routes. Median of `reps`."""
    out = {}
    base, grown = route_paths(RELOAD_ROUTES), route_paths(RELOAD_ROUTES, [NEW_PATH])
    # switchyard
    port, admin = run.free_port(), run.free_port()
    cfg = f"{work}/reload-sy.toml"
    times = []
    write(cfg, switchyard_config(port, admin, b1, b2, base, catch_all=False))
    srv = run.Server("reload-switchyard", [args.switchyard, "run", "-c", cfg], port, work)
    try:
        for i in range(reps):
            write(cfg, switchyard_config(port, admin, b1, b2, grown if i % 2 == 0 else base,
                                         catch_all=False))
            want = 200 if i % 2 == 0 else 404
            start = time.monotonic()
            req = urllib.request.Request(f"http://127.0.0.1:{admin}/reload", method="POST")
            with urllib.request.urlopen(req, timeout=60) as r:
                r.read()
            done = wait_status(f"http://127.0.0.1:{port}{NEW_PATH}", want)
            if done is not None:
                times.append((done - start) * 1000)
    finally:
        srv.stop()
    out["switchyard"] = statistics.median(times) if times else float("nan")
    # HAProxy, master-worker: SIGUSR2 re-reads the file and starts a new worker.
    port = run.free_port()
    cfg = f"{work}/reload-haproxy.cfg"
    times = []
    write(cfg, haproxy_config(port, b1, b2, base, catch_all=False))
    srv = run.Server("reload-haproxy", ["haproxy", "-W", "-f", cfg], port, work)
    try:
        for i in range(reps):
            write(cfg, haproxy_config(port, b1, b2, grown if i % 2 == 0 else base,
                                      catch_all=False))
            want = 200 if i % 2 == 0 else 503
            start = time.monotonic()
            srv.proc.send_signal(signal.SIGUSR2)
            done = wait_status(f"http://127.0.0.1:{port}{NEW_PATH}", want)
            if done is not None:
                times.append((done - start) * 1000)
            time.sleep(1)  # let the old worker leave before the next reload
    finally:
        srv.stop()
    out["haproxy"] = statistics.median(times) if times else float("nan")
    return out


# --- failed requests during reloads under load ----------------------------------------------

def reloads_under_load(args, work, b1, b2, reloads=10, every=0.5):
    """wrk at 50 connections while the proxy reloads `reloads` times, `every` seconds apart;
    returns errors + non-2xx answers per proxy."""
    duration = int(reloads * every + 3)
    out = {}

    def under_load(srv, url, reload_once):
        result = {}

        def load():
            result.update(run.wrk(url, 50, duration))

        t = threading.Thread(target=load)
        t.start()
        time.sleep(1)
        for i in range(reloads):
            reload_once(i)
            time.sleep(every)
        t.join()
        return result.get("errors", -1)

    port, admin = run.free_port(), run.free_port()
    cfg = f"{work}/busy-sy.toml"
    write(cfg, switchyard_config(port, admin, b1, b2))
    srv = run.Server("busy-switchyard", [args.switchyard, "run", "-c", cfg], port, work)

    def sy_reload(i):
        write(cfg, switchyard_config(port, admin, b1, b2, [f"/x{i}"]))
        req = urllib.request.Request(f"http://127.0.0.1:{admin}/reload", method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            r.read()

    try:
        out["switchyard"] = under_load(srv, f"http://127.0.0.1:{port}/", sy_reload)
    finally:
        srv.stop()

    port = run.free_port()
    cfg = f"{work}/busy-haproxy.cfg"
    write(cfg, haproxy_config(port, b1, b2))
    srv = run.Server("busy-haproxy", ["haproxy", "-W", "-f", cfg], port, work)

    def hp_reload(i):
        write(cfg, haproxy_config(port, b1, b2, [f"/x{i}"]))
        srv.proc.send_signal(signal.SIGUSR2)

    try:
        out["haproxy"] = under_load(srv, f"http://127.0.0.1:{port}/", hp_reload)
    finally:
        srv.stop()

    nginx_conf = f"{work}/nginx.conf"
    port = args.nginx_port
    srv = run.Server("busy-nginx", ["nginx", "-c", nginx_conf, "-p", work], port, work)
    try:
        out["nginx"] = under_load(srv, f"http://127.0.0.1:{port}/",
                                  lambda i: srv.proc.send_signal(signal.SIGHUP))
    finally:
        srv.stop()
    return out


# --- cache hits -----------------------------------------------------------------------------

def switchyard_caches(binary, cfg):
    """Whether this switchyard build serves `cache = true` (check passes and does not list the
    cache as not active yet)."""
    checked = subprocess.run([binary, "check", "-c", cfg], capture_output=True, text=True)
    if checked.returncode != 0:
        return False
    inactive = checked.stdout.split("not active yet:", 1)
    return len(inactive) == 1 or "cache" not in inactive[1]


def cache_hits(args, work, b1, b2):
    """CPU µs/req and req/s at 50 connections on a cached 2-byte answer (`/c`, backend says
    `Cache-Control: max-age=3600`), after one request warmed the cache."""
    out = {}
    url = "/c"
    port, admin = run.free_port(), run.free_port()
    cfg = f"{work}/cache-sy.toml"
    write(cfg, switchyard_config(port, admin, b1, b2, cache=True))
    proxies = []
    if switchyard_caches(args.switchyard, cfg):
        proxies.append(("switchyard", [args.switchyard, "run", "-c", cfg], port))
    hp = run.free_port()
    write(f"{work}/cache-haproxy.cfg", haproxy_config(hp, b1, b2, cache=True))
    proxies.append(("haproxy", ["haproxy", "-f", f"{work}/cache-haproxy.cfg"], hp))
    proxies.append(("nginx", ["nginx", "-c", f"{work}/nginx-cache.conf", "-p", work],
                    args.nginx_cache_port))
    vp = run.free_port()
    if args.varnish:
        proxies.append(("varnish", [args.varnish, "-F", "-n", f"{work}/varnish",
                                    "-a", f"127.0.0.1:{vp}", "-b", f"127.0.0.1:{b1}",
                                    "-s", "malloc,64m", "-p", "thread_pools=1"], vp))
    for name, cmd, p in proxies:
        try:
            srv = run.Server(f"cache-{name}", cmd, p, work)
        except RuntimeError:
            continue
        try:
            for _ in range(3):
                get_status(f"http://127.0.0.1:{p}{url}")
            target = f"http://127.0.0.1:{p}{url}"
            out[name] = srv.measure(lambda: run.wrk(target, 50, args.duration))
        finally:
            srv.stop()
    return out


def nginx_cache_conf(common, work, temp, port, b1, b2):
    return f"""{common} pid {work}/nginx-cache.pid; error_log {work}/nginx-cache.err;
http {{ access_log off; keepalive_requests 10000000; {temp}
  proxy_cache_path {work}/cache keys_zone=c:10m max_size=64m;
  upstream backend {{ server 127.0.0.1:{b1}; server 127.0.0.1:{b2}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_cache c;
      proxy_set_header Connection ""; proxy_set_header Host $host; }} }} }}"""


def available_varnish():
    for path in ("/usr/sbin/varnishd", "/usr/bin/varnishd"):
        if os.access(path, os.X_OK):
            return path
    return None
