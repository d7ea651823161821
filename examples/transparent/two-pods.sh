#!/usr/bin/env bash
# Transparent mode on one machine: two "pods" (network namespaces sy-a and sy-b on a bridge in
# sy-hub, 10.233.0.1 and 10.233.0.2), each with a sidecar running under its own UID behind the
# nftables rules of `switchyard redirect`. Pod b runs a toy HTTP app on :8080; pod a's "app" is
# curl, which calls http://10.233.0.2:8080/ with no proxy settings. The request goes a's
# outbound listener -> mTLS tunnel (identities from `switchyard certs`) -> b's inbound listener
# -> the app, which sees the caller's identity in x-client-identity.
#
#   sudo examples/transparent/two-pods.sh          build it, send a request, show the metrics
#   sudo examples/transparent/two-pods.sh --down   stop everything and delete the namespaces
#
# Needs root, iproute2, nftables, setpriv (util-linux), curl and python3 (the toy app). Uses
# target/release/switchyard (built with `cargo build --release` when missing; SWITCHYARD=PATH
# picks another). Files and logs go to $STATE (default /tmp/switchyard-two-pods), owned by the
# proxy UID ($PROXY_UID, default 1337): the sidecars never run as root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
state="${STATE:-/tmp/switchyard-two-pods}"
uid="${PROXY_UID:-1337}"
pods=(a b)
ip_of() { case "$1" in a) echo 10.233.0.1 ;; b) echo 10.233.0.2 ;; esac; }

down() {
  # Processes first (by the pids this script wrote), then the namespaces: deleting a namespace
  # removes its veth, its addresses and the redirect rules with it.
  for pidfile in "$state"/*.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  for ns in sy-a sy-b sy-hub; do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$state"
  echo "two-pods: down"
}

if [ "$(id -u)" != 0 ]; then
  echo "two-pods: run as root (network namespaces and nftables)" >&2
  exit 1
fi
case "${1:-}" in
  --down) down; exit 0 ;;
  "") ;;
  *) echo "usage: $0 [--down]" >&2; exit 2 ;;
esac
for tool in ip nft setpriv curl python3; do
  command -v "$tool" >/dev/null || { echo "two-pods: $tool is missing" >&2; exit 1; }
done
if ip netns list | grep -qw sy-hub; then
  echo "two-pods: already up (tear it down with $0 --down)" >&2
  exit 1
fi

bin="${SWITCHYARD:-$root/target/release/switchyard}"
if [ ! -x "$bin" ]; then
  (cd "$root" && cargo build --release --locked --bin switchyard)
fi

echo "== files in $state"
mkdir -p "$state"
# A copy of the binary: the checkout may sit under a home directory the proxy UID cannot enter.
cp "$bin" "$state/switchyard"
cp "$here/a.toml" "$here/b.toml" "$state/"
"$state/switchyard" certs init --dir "$state/certs" >/dev/null
for p in "${pods[@]}"; do
  "$state/switchyard" certs issue --ca "$state/certs" --name "$p" --spiffe "spiffe://local/$p" >/dev/null
done
head -c 48 /dev/urandom | base64 -w0 > "$state/mesh.key"
chown -R "$uid:$uid" "$state"
chmod 755 "$state"
chmod 600 "$state/mesh.key" "$state"/certs/*.key

echo "== namespaces: sy-hub (bridge), sy-a $(ip_of a), sy-b $(ip_of b)"
ip netns add sy-hub
ip -n sy-hub link add br0 type bridge
ip -n sy-hub link set br0 up
for p in "${pods[@]}"; do
  ns="sy-$p"
  ip netns add "$ns"
  ip -n sy-hub link add "v$p" type veth peer name eth0 netns "$ns"
  ip -n sy-hub link set "v$p" master br0 up
  ip -n "$ns" addr add "$(ip_of "$p")/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done

echo "== pod b's app on :8080"
app='
import http.server
class App(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("pod b: %s %s host=%s identity=%s\n" % (self.command, self.path,
                self.headers.get("host"), self.headers.get("x-client-identity", "-"))).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), App).serve_forever()
'
ip netns exec sy-b python3 -c "$app" >"$state/app.log" 2>&1 &
echo $! >"$state/app.pid"
for _ in $(seq 50); do
  ip netns exec sy-b bash -c 'exec 3<>/dev/tcp/127.0.0.1/8080' 2>/dev/null && break
  sleep 0.1
done

for p in "${pods[@]}"; do
  echo "== pod $p: switchyard redirect, then the sidecar as UID $uid"
  ip netns exec "sy-$p" "$state/switchyard" redirect --proxy-uid "$uid" --config "$state/$p.toml"
  ip netns exec "sy-$p" setpriv --reuid="$uid" --regid="$uid" --clear-groups -- \
    "$state/switchyard" run -c "$state/$p.toml" >"$state/$p.log" 2>&1 &
  echo $! >"$state/$p.pid"
done

echo "== a -> http://$(ip_of b):8080/hello (waiting for the mesh to announce b's tunnel)"
# Until a's sidecar has b's mesh record, the request leaves a in plaintext and b's policy for
# port 8080 (only spiffe://local/a) refuses it: retry for up to 15 s.
answer=""
for _ in $(seq 30); do
  answer="$(ip netns exec sy-a curl -s -m 2 "http://$(ip_of b):8080/hello" || true)"
  case "$answer" in *"identity=spiffe://local/a"*) break ;; esac
  sleep 0.5
done
echo "$answer"
case "$answer" in
  *"identity=spiffe://local/a"*) ;;
  *) echo "two-pods: no tunnelled answer; see $state/a.log and $state/b.log" >&2; exit 1 ;;
esac

for p in "${pods[@]}"; do
  echo "== pod $p's sidecar metrics (transparent series that are not 0)"
  ip netns exec "sy-$p" curl -s "http://127.0.0.1:9901/metrics" |
    grep -E '^switchyard_(intercepted_connections|intercepted_refused|tunnel_connections|opaque_bytes)_total' |
    awk '$NF != 0' || true
done
echo
echo "logs: $state/a.log $state/b.log; more requests: ip netns exec sy-a curl http://$(ip_of b):8080/"
echo "tear down: $0 --down"
