#!/usr/bin/env bash
# Two sidecars talking mTLS with identities from a local CA, on this machine only (127.0.0.1):
# web app -> web sidecar (:8080, plain) -> mTLS h2 -> orders sidecar (:8443) -> app (:9000).
# Needs python3 for the toy app. Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")"
bin="${SWITCHYARD:-../../target/release/switchyard}"
[ -x "$bin" ] || (cd ../.. && cargo build --release)
if [ ! -f certs/ca.key ]; then
  "$bin" certs init --dir certs
  "$bin" certs issue --ca certs --name orders --spiffe spiffe://local/orders
  "$bin" certs issue --ca certs --name web --spiffe spiffe://local/web
fi
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
python3 -m http.server 9000 --bind 127.0.0.1 >/dev/null 2>&1 & pids+=($!)
"$bin" run -c orders.toml & pids+=($!)
"$bin" run -c web.toml & pids+=($!)
echo "try: curl -i http://127.0.0.1:8080/"
wait
