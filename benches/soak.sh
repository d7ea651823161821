#!/usr/bin/env bash
# Soak: 10 minutes of mixed HTTP/1.1, HTTP/2 and gRPC load through switchyard with injected
# faults and two reloads a minute, loopback only. Prints client-visible errors (must be 0), RSS
# over time (flat after warm-up) and the idle gauges after the load.
# Usage: benches/soak.sh [--minutes N]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

cargo build --release --locked --bin switchyard
exec python3 benches/soak.py --switchyard target/release/switchyard "$@"
