#!/usr/bin/env bash
# Load benchmark: switchyard against HAProxy and NGINX on loopback, side by side.
# Usage: benches/load/run.sh [--rounds N] [--duration SECONDS]
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
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

cargo build --release --locked --bin switchyard
exec python3 benches/load/run.py --switchyard target/release/switchyard "$@"
