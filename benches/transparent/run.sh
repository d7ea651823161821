#!/usr/bin/env bash
# Transparent mode (issue 27) in network namespaces: two pods, syb-a (10.234.0.1) and syb-b
# (10.234.0.2), on a bridge in syb-hub. Measures, in one run:
#   (a) opaque bulk throughput, iperf3 (client in a, server in b), direct vs through a's
#       outbound and b's inbound sidecar (mTLS tunnel between them);
#   (b) p50 latency of a small HTTP request at one connection (wrk -c1), direct vs one plain
#       hop (a switchyard http listener in b in front of the app) vs through both sidecars;
#   (c) memory per idle intercepted connection per sidecar: VmRSS of each sidecar before and
#       after N idle connections from a to b (an opaque port, so each one is tunnelled at once).
# and prints a table under the machine line, with the issue's targets (throughput >= 0.7x
# direct; added p50 through both sidecars <= 2x one plain hop's; <= 4 KiB per idle connection),
# the added-p50 ratio also as the median of each round's own ratio, and the CPU time per
# request (/proc/PID/stat) of the hop and of each sidecar during the p50 runs, which holds on
# a busy machine where p50 does not (instructions per request: callgrind, docs/performance.md).
# Beside throughput: the CPU seconds per GiB moved (iperf3 client and server; through the
# sidecars, theirs too): where every core is busy, its ratio bounds the throughput ratio.
#
#   sudo benches/transparent/run.sh              3 rounds, 5 s per figure, 1000 idle connections
#   sudo benches/transparent/run.sh --rounds 5 --duration 10 --idle 5000
#
# Needs root (namespaces, nftables). Installs iperf3, wrk, nginx-light and curl with apt-get
# when missing, builds target/release/switchyard (SWITCHYARD=PATH uses another binary). Each
# round takes the direct and one-hop figures without rules (`switchyard redirect --remove`),
# then the sidecar figures with them; the table shows the medians (every round's figures are
# printed under it). Each switchyard (and nginx) runs one worker thread, access logs off. The
# open-file limit bounds --idle (a's sidecar holds two descriptors per idle connection).
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"

duration=5
idle=1000
rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --idle) idle="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  echo "benches/transparent/run.sh: run as root (network namespaces and nftables)" >&2
  exit 1
fi

# One run at a time on a machine: the namespaces (syb-*) and their addresses are fixed names.
exec 9>/tmp/switchyard-transparent-bench.lock
flock 9

missing=()
command -v iperf3 >/dev/null || missing+=(iperf3)
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || missing+=(nginx-light)
command -v curl >/dev/null || missing+=(curl)
command -v nft >/dev/null || missing+=(nftables)
command -v ip >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi

bin="${SWITCHYARD:-}"
if [ -z "$bin" ]; then
  cargo build --release --locked --bin switchyard
  bin="$root/target/release/switchyard"
fi

uid=1337
a_ip=10.234.0.1
b_ip=10.234.0.2
state="$(mktemp -d /tmp/switchyard-bench-transparent.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in syb-a syb-b syb-hub; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$state"
}
trap cleanup EXIT
for ns in syb-a syb-b syb-hub; do ip netns del "$ns" 2>/dev/null || true; done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

log() { printf '\n==> %s (%s)\n' "$1" "$(date +%T)" >&2; }

# Each pod gets a core of its own when there are two: pod a (the clients and a's sidecar) on
# core 1, pod b (the apps, the plain hop and b's sidecar) on core 0, as a node would give two
# pods' containers their CPUs. Without pinning, the 1-connection latencies moved 3x between
# rounds on a 2-core machine, with where the scheduler happened to wake each process.
cores="$(nproc)"
pinned=""
if [ "$cores" -ge 2 ] && command -v taskset >/dev/null; then pinned=1; fi
pin() { # POD: the `taskset -c CORE` words for the pod's processes (none when not pinning)
  if [ -n "$pinned" ]; then
    if [ "$1" = a ]; then echo "taskset -c 1"; else echo "taskset -c 0"; fi
  fi
}

log "pods"
ip netns add syb-hub
ip -n syb-hub link add br0 type bridge
ip -n syb-hub link set br0 up
for p in a b; do
  ns="syb-$p"
  ip netns add "$ns"
  ip -n syb-hub link add "v$p" type veth peer name eth0 netns "$ns"
  ip -n syb-hub link set "v$p" master br0 up
  if [ "$p" = a ]; then addr="$a_ip"; else addr="$b_ip"; fi
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
done

# Files the sidecars (UID 1337) read: a copy of the binary (the checkout may be closed to other
# users), certificates, mesh key, configs.
cp "$bin" "$state/switchyard"
sy="$state/switchyard"
"$sy" certs init --dir "$state/certs" >/dev/null
for p in a b; do
  "$sy" certs issue --ca "$state/certs" --name "$p" --spiffe "spiffe://local/$p" >/dev/null
done
head -c 48 /dev/urandom | base64 -w0 >"$state/mesh.key"
sidecar_config() { # POD IP PEER_IP
  cat <<EOF
[runtime]
workers = 1
[log]
access = false
[admin]
listen = "127.0.0.1:9901"
[identity]
cert = "certs/$1.pem"
key = "certs/$1.key"
ca = "certs/ca.pem"
[[listeners]]
name = "outbound"
listen = "127.0.0.1:15001"
mode = "outbound"
opaque_ports = [5201, 7000]
[[listeners]]
name = "inbound"
listen = "0.0.0.0:15006"
mode = "inbound"
opaque_ports = [5201, 7000]
ports = { "8080" = {} }
[clusters.app]
endpoints = ["$b_ip:8080"]
[mesh]
listen = "$2:7946"
seeds = ["$3:7946"]
secret_file = "mesh.key"
EOF
}
sidecar_config a "$a_ip" "$b_ip" >"$state/a.toml"
sidecar_config b "$b_ip" "$a_ip" >"$state/b.toml"
cat >"$state/hop.toml" <<EOF
[runtime]
workers = 1
[log]
access = false
[admin]
listen = "127.0.0.1:9902"
[[listeners]]
name = "public"
listen = "$b_ip:8000"
[[routes]]
cluster = "app"
[clusters.app]
endpoints = ["127.0.0.1:8080"]
EOF
cat >"$state/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 65536;
daemon off;
pid $state/nginx.pid;
error_log $state/nginx.log warn;
events { worker_connections 32768; }
http {
  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_header_timeout 300s;
  server { listen 8080 reuseport; location / { return 200 "ok"; } }
  server { listen 7000; location / { return 200 "ok"; } }
}
EOF
chown -R "$uid:$uid" "$state"
chmod 755 "$state"
chmod 600 "$state/mesh.key" "$state"/certs/*.key

log "apps in b: nginx (:8080 ok, :7000 idle holder), iperf3 -s (:5201); one plain hop (:8000)"
ip netns exec syb-b $(pin b) nginx -c "$state/nginx.conf" &
pids+=($!)
ip netns exec syb-b $(pin b) iperf3 -s -p 5201 >"$state/iperf3-server.log" 2>&1 &
iperf3_pid=$!
pids+=($!)
ip netns exec syb-b $(pin b) "$sy" run -c "$state/hop.toml" >"$state/hop.log" 2>&1 &
hop_pid=$!
pids+=("$hop_pid")
wait_for() { # DESCRIPTION COMMAND...: up to 30 s
  local what="$1"
  shift
  for _ in $(seq 60); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  echo "benches/transparent/run.sh: $what did not happen within 30 s" >&2
  exit 1
}
wait_for "nginx in b" ip netns exec syb-a curl -sf -m 1 "http://$b_ip:8080/"
wait_for "the plain hop in b" ip netns exec syb-a curl -sf -m 1 "http://$b_ip:8000/"
iperf3_listening() { [ -n "$(ip netns exec syb-b ss -Hltn '( sport = :5201 )')" ]; }
wait_for "iperf3 in b" iperf3_listening

# wrk at one connection: "P50_US REQUESTS" (p50 in microseconds, requests completed).
wrk1() { # URL
  ip netns exec syb-a $(pin a) wrk -t1 -c1 -d"${duration}s" --latency "$1" |
    awk '$1 == "50%" {
      v = $2
      if (v ~ /us$/) { sub(/us$/, "", v); p = sprintf("%.0f", v) }
      else if (v ~ /ms$/) { sub(/ms$/, "", v); p = sprintf("%.0f", v * 1000) }
      else if (v ~ /s$/) { sub(/s$/, "", v); p = sprintf("%.0f", v * 1000000) }
    }
    / requests in / { n = $1 }
    END { printf "%s %s", p, n }'
}
# CPU time (user + system) of PID so far, in clock ticks (/proc/PID/stat fields 14 and 15).
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
clk_tck="$(getconf CLK_TCK)"
# One iperf3 run from a to b: sets last_gbits (the receiver's rate) and last_cpu_gib, the CPU
# seconds per GiB moved of the client, the server and the PIDs given (the sidecars) together.
# Per byte, not per second: it holds on a busy machine, and on a quiet one where every core is
# busy its ratio bounds the throughput ratio (docs/performance.md, sixteenth pass). The
# client's CPU is its parent shell's children time, read once it has exited.
bulk() {
  local before=0 after=0 client pid
  for pid in "$iperf3_pid" "$@"; do before=$((before + $(ticks "$pid"))); done
  client="$(ip netns exec syb-a $(pin a) bash -c \
    'iperf3 -c "$1" -p 5201 -t "$2" -f m >"$3"; awk "{ print \$16 + \$17 }" /proc/$$/stat' \
    _ "$b_ip" "$duration" "$state/iperf3-client.out")"
  for pid in "$iperf3_pid" "$@"; do after=$((after + $(ticks "$pid"))); done
  last_gbits="$(awk '/receiver/ { printf "%.2f", $7 / 1000 }' "$state/iperf3-client.out")"
  last_cpu_gib="$(awk -v t=$((after - before + client)) -v hz="$clk_tck" -v g="$last_gbits" \
    -v d="$duration" 'BEGIN { if (g > 0) printf "%.2f", (t / hz) / (g * d / 8.589934592); else print "-" }')"
}
# p50 at one connection, and the CPU microseconds per request each of PIDS spent meanwhile:
# sets `last_p50` and `last_cpu` ("US US ..." in the order of PIDS). CPU per request is the
# figure that holds on a busy machine (the scheduler's wake-up delays move p50, not CPU time);
# instructions per request need callgrind (docs/performance.md says how).
measure() { # URL PIDS...
  local url="$1" out p n i
  shift
  local before=()
  for p in "$@"; do before+=("$(ticks "$p")"); done
  out="$(wrk1 "$url")"
  last_p50="${out% *}"
  n="${out#* }"
  last_cpu=""
  i=0
  for p in "$@"; do
    last_cpu+="$(awk -v t="$(( $(ticks "$p") - before[i] ))" -v n="$n" -v hz="$clk_tck" \
      'BEGIN { if (n > 0) printf "%.1f ", t * 1000000 / hz / n; else printf "- " }')"
    i=$((i + 1))
  done
  last_cpu="${last_cpu% }"
}

metric() { # POD NAME LABEL: the sum of NAME's samples that carry LABEL (name="value")
  ip netns exec "syb-$1" curl -s -m 2 "http://127.0.0.1:9901/metrics" |
    awk -v m="$2{" -v l="$3" 'index($0, m) == 1 && index($0, l) { s += $NF } END { printf "%d", s }'
}
# Before a's sidecar knows b as meshed, a request would go to b in plaintext and its pooled
# connection would carry later ones too: no request goes out before the mesh shows b's tunnel.
b_meshed() {
  ip netns exec syb-a curl -s -m 1 "http://127.0.0.1:9901/mesh/members" | grep -q '"spiffe://local/b"'
}
tunnelled() {
  ip netns exec syb-a curl -sf -m 1 "http://$b_ip:8080/" >/dev/null || true
  [ "$(metric b switchyard_tunnel_connections_total 'direction="server"')" -gt 0 ]
}
rules() { # on|off, in both pods
  for p in a b; do
    if [ "$1" = on ]; then
      ip netns exec "syb-$p" "$sy" redirect --proxy-uid "$uid" --config "$state/$p.toml" >/dev/null
    else
      ip netns exec "syb-$p" "$sy" redirect --remove >/dev/null
    fi
  done
}
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A sidecar
tput_direct=() p50_direct=() p50_hop=() tput_sidecars=() p50_sidecars=()
gib_direct=() gib_sidecars=()
ratios=() cpu_hop=() cpu_a=() cpu_b=()
for round in $(seq "$rounds"); do
  if [ "$round" -gt 1 ]; then rules off; fi
  log "round $round/$rounds: direct and one plain hop (no rules)"
  bulk
  tput_direct+=("$last_gbits")
  gib_direct+=("$last_cpu_gib")
  measure "http://$b_ip:8080/"
  p50_direct+=("$last_p50")
  measure "http://$b_ip:8000/" "$hop_pid"
  p50_hop+=("$last_p50")
  cpu_hop+=("$last_cpu")
  log "round $round/$rounds: switchyard redirect in both pods, through both sidecars"
  rules on
  if [ "$round" = 1 ]; then
    for p in a b; do
      ip netns exec "syb-$p" $(pin "$p") setpriv --reuid="$uid" --regid="$uid" --clear-groups -- \
        "$sy" run -c "$state/$p.toml" >"$state/$p.log" 2>&1 &
      sidecar[$p]=$!
      pids+=($!)
    done
    wait_for "b's tunnel in a's mesh view" b_meshed
    wait_for "a tunnelled request from a to b" tunnelled
  fi
  bulk "${sidecar[a]}" "${sidecar[b]}"
  tput_sidecars+=("$last_gbits")
  gib_sidecars+=("$last_cpu_gib")
  measure "http://$b_ip:8080/" "${sidecar[a]}" "${sidecar[b]}"
  p50_sidecars+=("$last_p50")
  read -r a_cpu b_cpu <<<"$last_cpu"
  cpu_a+=("$a_cpu")
  cpu_b+=("$b_cpu")
  # This round's added-latency ratio: direct, hop and sidecars measured minutes apart drift
  # together less than across rounds, so the median of these is steadier than the ratio of
  # the medians (both are printed).
  ratios+=("$(awk -v d="${p50_direct[-1]}" -v h="${p50_hop[-1]}" -v s="$last_p50" \
    'BEGIN { if (h > d) printf "%.2f", (s - d) / (h - d); else print "-" }')")
done
kill "$hop_pid"

log "$idle idle intercepted connections"
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
idle_upstream() {
  ip netns exec syb-b ss -Htn state established '( dport = :7000 )' | wc -l
}
before_a="$(rss "${sidecar[a]}")"
before_b="$(rss "${sidecar[b]}")"
ip netns exec syb-a $(pin a) bash -c "
  ulimit -n \$(ulimit -Hn)
  for i in \$(seq $idle); do exec {fd}<>/dev/tcp/$b_ip/7000 || exit 1; done
  sleep 600" &
holder=$!
pids+=("$holder")
all_idle() { [ "$(idle_upstream)" -ge "$idle" ]; }
wait_for "$idle idle connections through both sidecars" all_idle
sleep 1
after_a="$(rss "${sidecar[a]}")"
after_b="$(rss "${sidecar[b]}")"
kill "$holder"

rounds_line="rounds $rounds: direct Gbit/s ${tput_direct[*]}; sidecars Gbit/s ${tput_sidecars[*]}; p50 us direct ${p50_direct[*]}, hop ${p50_hop[*]}, sidecars ${p50_sidecars[*]}; added-p50 ratio per round ${ratios[*]}; CPU us/request hop ${cpu_hop[*]}, a ${cpu_a[*]}, b ${cpu_b[*]}; CPU s/GiB direct ${gib_direct[*]}, sidecars ${gib_sidecars[*]}"
ratio_rounds="$(median "${ratios[@]}")"
cpu_hop="$(median "${cpu_hop[@]}")"
cpu_a="$(median "${cpu_a[@]}")"
cpu_b="$(median "${cpu_b[@]}")"
tput_direct="$(median "${tput_direct[@]}")"
gib_direct="$(median "${gib_direct[@]}")"
gib_sidecars="$(median "${gib_sidecars[@]}")"
tput_sidecars="$(median "${tput_sidecars[@]}")"
p50_direct="$(median "${p50_direct[@]}")"
p50_hop="$(median "${p50_hop[@]}")"
p50_sidecars="$(median "${p50_sidecars[@]}")"
per_conn() { awk -v a="$1" -v b="$2" -v n="$idle" 'BEGIN { printf "%.1f", (b - a) / n }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
added_sidecars=$((p50_sidecars - p50_direct))
added_hop=$((p50_hop - p50_direct))

cpu="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)"
echo
echo "machine: ${cpu:-unknown CPU}, $(nproc) cores, Linux $(uname -r) ($(uname -m))"
pinning="unpinned"
if [ -n "$pinned" ]; then pinning="pod a on core 1, pod b on core 0"; fi
echo "transparent mode: pod a -> a's outbound sidecar -> mTLS -> b's inbound sidecar -> app (one worker each, $pinning, $duration s per figure, median of $rounds rounds)"
echo
printf '| %-46s | %9s | %9s | %13s | %7s | %-8s |\n' figure direct "plain hop" "both sidecars" ratio target
printf '|%s|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..48})" "-----------" "-----------" "---------------" "---------" "----------"
printf '| %-46s | %9s | %9s | %13s | %7s | %-8s |\n' \
  "opaque throughput, Gbit/s (iperf3, 1 stream)" "$tput_direct" "-" "$tput_sidecars" \
  "$(ratio "$tput_sidecars" "$tput_direct")" ">= 0.7"
printf '| %-46s | %9s | %9s | %13s | %7s | %-8s |\n' \
  "CPU s per GiB moved (apps; + sidecars)" "$gib_direct" "-" "$gib_sidecars" \
  "$(ratio "$gib_direct" "$gib_sidecars")" ""
printf '| %-46s | %9s | %9s | %13s | %7s | %-8s |\n' \
  "HTTP p50 us, 1 conn (wrk)" "$p50_direct" "$p50_hop" "$p50_sidecars" "-" ""
printf '| %-46s | %9s | %9s | %13s | %7s | %-8s |\n' \
  "added p50 us over direct" "-" "$added_hop" "$added_sidecars" \
  "$(ratio "$added_sidecars" "$added_hop")" "<= 2"
printf '| %-46s | %9s | %9s | %13s | %7s | %-8s |\n' \
  "added p50 ratio, median of per-round ratios" "-" "-" "-" "$ratio_rounds" "<= 2"
printf '| %-46s | %9s | %9s | %13s | %7s | %-8s |\n' \
  "CPU us per request (sidecars: a + b)" "-" "$cpu_hop" \
  "$(awk -v a="$cpu_a" -v b="$cpu_b" 'BEGIN { printf "%.1f", a + b }')" \
  "$(awk -v a="$cpu_a" -v b="$cpu_b" -v h="$cpu_hop" 'BEGIN { if (h > 0) printf "%.2f", (a + b) / h; else print "-" }')" ""
printf '| %-46s | %9s | %9s | %13s | %7s | %-8s |\n' \
  "KiB per idle intercepted conn, sidecar a" "-" "-" "$(per_conn "$before_a" "$after_a")" "-" "<= 4"
printf '| %-46s | %9s | %9s | %13s | %7s | %-8s |\n' \
  "KiB per idle intercepted conn, sidecar b" "-" "-" "$(per_conn "$before_b" "$after_b")" "-" "<= 4"
echo
echo "idle connections: $idle; sidecar VmRSS KiB a $before_a -> $after_a, b $before_b -> $after_b"
echo "CPU us per request (median of rounds): hop $cpu_hop, sidecar a $cpu_a, sidecar b $cpu_b"
echo "$rounds_line"
