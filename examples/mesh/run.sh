#!/usr/bin/env bash
# Three sidecars in one gossip mesh, on this machine only (127.0.0.1): web (:8080) routes
# `orders` to whatever the mesh announces; orders-1 (:8081) and orders-2 (:8082) announce
# themselves, each in front of a toy app (:9001, :9002). Needs python3. Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")"
bin="${SWITCHYARD:-../../target/release/switchyard}"
[ -x "$bin" ] || (cd ../.. && cargo build --release)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
mkdir -p app1 app2
echo "orders-1" > app1/index.html
echo "orders-2" > app2/index.html
python3 -m http.server 9001 --bind 127.0.0.1 --directory app1 >/dev/null 2>&1 & pids+=($!)
python3 -m http.server 9002 --bind 127.0.0.1 --directory app2 >/dev/null 2>&1 & pids+=($!)
"$bin" run -c web.toml & pids+=($!)
"$bin" run -c orders-1.toml & pids+=($!)
"$bin" run -c orders-2.toml & pids+=($!)
echo "try: curl http://127.0.0.1:8080/   (answers orders-1 or orders-2)"
echo "     curl http://127.0.0.1:9901/mesh/members"
echo "     kill one orders sidecar and watch it turn dead, then leave the others with Ctrl-C"
wait
