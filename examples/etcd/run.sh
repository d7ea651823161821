#!/usr/bin/env bash
# The etcd example end to end, on this machine only (127.0.0.1): a throwaway etcd, two demo
# backends registered with `switchyard register`, and the proxy discovering them.
# Needs `etcd` (Debian: apt-get install etcd-server) and python3 for the two toy backends.
# Stop with Ctrl-C: the registrations revoke their leases, so their keys disappear at once.
set -euo pipefail
cd "$(dirname "$0")"
bin="${SWITCHYARD:-../../target/release/switchyard}"
[ -x "$bin" ] || (cd ../.. && cargo build --release)
data="$(mktemp -d)"
pids=()
registrations=()
# Registrations first, while etcd is still up to revoke their leases; then everything else.
cleanup() {
  kill "${registrations[@]}" 2>/dev/null || true
  wait "${registrations[@]}" 2>/dev/null || true
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

etcd --data-dir "$data" --listen-client-urls http://127.0.0.1:2379 \
  --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
  --log-level error --logger zap & pids+=($!)

for port in 9001 9002; do
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$data" >/dev/null 2>&1 & pids+=($!)
  "$bin" register --etcd http://127.0.0.1:2379 --service orders \
    --address "127.0.0.1:$port" --ttl 10s & registrations+=($!)
done

"$bin" run -c switchyard.toml & pids+=($!)
echo "try: curl -s http://127.0.0.1:8080/ ; curl -s http://127.0.0.1:9901/upstreams"
wait
