#!/usr/bin/env bash
# The mesh at scale (issue 29): the simulation of tests/mesh_sim (real nodes: foca, sealing,
# anti-entropy; an in-memory network with 1-20 ms delay and seeded loss; tokio's paused clock)
# at each member count given, in release. Per size it runs the ignored tests
# mesh_sim::scale_no_loss and mesh_sim::scale_ten_percent_loss (MESH_SIM_RUNS seeds each) and
# prints one row of the table in docs/mesh.md, "Scale":
#
#   members, runs, killed member dead at every survivor p50/p99 (no loss; 10 % loss),
#   announcement everywhere p50/p99 (no loss; 10 % loss), gossip per member p50/max (steady
#   state, every datagram; no loss; 10 % loss), false deaths (10 % loss, over runs x watch),
#   the late joiner's full state transfer (non-SWIM bytes received, seconds until it holds
#   every record; no loss), anti-entropy bytes per exchange (steady state, both sides), join
#   time p50 (no loss), CPU seconds of both tests.
#
#   benches/mesh/run.sh                  200 500 1000 members, 20 seeds each
#   MESH_SIM_RUNS=3 benches/mesh/run.sh 200 500
#   MESH_SIM_FULL=1 benches/mesh/run.sh 1000   the 10 % loss watch is 10 simulated minutes
#                                              per run (2 otherwise)
#
# Runs spread over MESH_SIM_THREADS threads (every core by default), each run on its own
# paused clock: the figures do not depend on the machine's speed or load, only the time taken.
#
# Builds `cargo test --release --locked --test mesh_sim` (fat LTO: minutes; for exploring,
# CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 are passed through).
# Each test's full output goes to target/mesh-scale/<members>-<test>.log.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ $# -gt 0 ] && { [ "$1" = -h ] || [ "$1" = --help ]; }; then
  sed -n '2,25p' "$0"
  exit 0
fi
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(200 500 1000)
runs="${MESH_SIM_RUNS:-20}"
watch=120
[ -z "${MESH_SIM_FULL:-}" ] || watch=600

bin="$(cargo test --release --locked --test mesh_sim --no-run 2>&1 \
  | tee /dev/stderr | grep -o 'target/release/deps/mesh_sim-[0-9a-f]*' | tail -1)"
[ -x "$bin" ] || { echo "no mesh_sim test binary built" >&2; exit 1; }
logs=target/mesh-scale
mkdir -p "$logs"

# field NAME LINE: the value of NAME=... in a SCALE line.
field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<"$2"; }

# run MEMBERS TEST: runs one scale test, leaves its SCALE line in $line and CPU seconds in $cpu.
run() {
  local log="$logs/$1-$2.log" t0 t1
  t0="$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)"
  MESH_SIM_MEMBERS="$1" MESH_SIM_RUNS="$runs" "$bin" --ignored --exact "mesh_sim::$2" \
    --nocapture --test-threads=1 >"$log" 2>&1 || { echo "mesh_sim::$2 at $1 members failed: $log" >&2; tail -5 "$log" >&2; return 1; }
  t1="$(awk '{print $14 + $15 + $16 + $17}' /proc/$$/stat)"
  cpu="$(awk -v a="$t0" -v b="$t1" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.0f", (b - a) / hz}')"
  line="$(grep '^SCALE ' "$log" | tail -1)"
}

echo
echo "$(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, Linux $(uname -r); $(date -u +%Y-%m-%d) $(git rev-parse --short HEAD)"
echo "10 % loss watch: ${watch} s per run"
echo
echo "| members | runs | dead everywhere p50/p99, no loss | at 10 % loss | announcement p50/p99, no loss | at 10 % loss | gossip per member p50/max, no loss | at 10 % loss | false deaths (10 % loss) | late joiner's state transfer | anti-entropy per exchange | join p50 | CPU |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for n in "${sizes[@]}"; do
  run "$n" scale_no_loss
  clean="$line" cpu_clean="$cpu"
  run "$n" scale_ten_percent_loss
  lossy="$line" cpu_lossy="$cpu"
  printf '| %s | %s | %s / %s s | %s / %s s | %s / %s s | %s / %s s | %s / %s B/s | %s / %s B/s | %s over %s x %s s | %s B in %s s | %s B | %s s | %s s |\n' \
    "$n" "$runs" \
    "$(field detect_p50 "$clean")" "$(field detect_p99 "$clean")" \
    "$(field detect_p50 "$lossy")" "$(field detect_p99 "$lossy")" \
    "$(field announce_p50 "$clean")" "$(field announce_p99 "$clean")" \
    "$(field announce_p50 "$lossy")" "$(field announce_p99 "$lossy")" \
    "$(field gossip_p50 "$clean")" "$(field gossip_max "$clean")" \
    "$(field gossip_p50 "$lossy")" "$(field gossip_max "$lossy")" \
    "$(field false_deaths "$lossy")" "$runs" "$watch" \
    "$(field late_bytes_p50 "$clean")" "$(field late_s_p50 "$clean")" \
    "$(field sync_per_exchange_p50 "$clean")" \
    "$(field join_p50 "$clean")" \
    "$((cpu_clean + cpu_lossy))"
done
