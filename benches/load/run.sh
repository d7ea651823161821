#!/usr/bin/env bash
# Load benchmark: switchyard against HAProxy and NGINX (and varnish for cache hits) on loopback.
# Usage: benches/load/run.sh [--rounds N] [--duration SECONDS] [--idle-connections N]
#        [--no-reload] [--no-cache] [--baseline OLD_BINARY] [--instructions]
# Installs what is missing from Debian, builds switchyard in release mode, then hands over to
# run.py, which starts every server pinned to core 0, drives load from core 1 and prints ratios.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
command -v taskset >/dev/null || need+=(util-linux)
# `--instructions` counts instructions per request under callgrind.
if [[ " $* " == *" --instructions "* ]]; then
  command -v valgrind >/dev/null || need+=(valgrind)
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
# Varnish is the second cache-hit comparison; the benchmark runs without it if it won't install.
command -v varnishd >/dev/null || [ -x /usr/sbin/varnishd ] ||
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq varnish || true

# 9,000 idle keep-alive connections need as many descriptors in this shell's children.
ulimit -n "$(ulimit -Hn)"

cargo build --release --locked --bin switchyard
exec python3 benches/load/run.py --switchyard target/release/switchyard "$@"
