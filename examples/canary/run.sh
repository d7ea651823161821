#!/usr/bin/env bash
# The canary example end to end, on this machine only (127.0.0.1): two "stable" backends
# (:9001, :9002) and one "canary" (:9011), each a python3 http.server serving a file that says
# which version it is, and the proxy on :8080 (admin and status page on :9901).
# Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")"
bin="${SWITCHYARD:-../../target/release/switchyard}"
[ -x "$bin" ] || (cd ../.. && cargo build --release)
root="$(mktemp -d)"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$root"' EXIT
for spec in stable:9001 stable:9002 canary:9011; do
  version="${spec%%:*}" port="${spec##*:}"
  mkdir -p "$root/$port" && echo "$version ($port)" > "$root/$port/index.html"
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$root/$port" >/dev/null 2>&1 & pids+=($!)
done
"$bin" run -c switchyard.toml & pids+=($!)
echo "try: for i in \$(seq 100); do curl -s http://127.0.0.1:8080/; done | sort | uniq -c"
echo "     curl -s -H 'x-canary: 1' http://127.0.0.1:8080/      # always the canary"
echo "     open http://127.0.0.1:9901/                         # status page: per-cluster rates"
wait
