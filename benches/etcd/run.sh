#!/usr/bin/env bash
# etcd discovery at scale (issue 29): initial sync, change-to-live p50/p99, CPU per change and
# memory per endpoint against a real etcd, for each shape and balancer below. Runs the ignored
# `discovery_etcd_scale::scale_bench` test in release, once per row; see
# docs/discovery-scale.md for the method and the latest figures.
#
#   benches/etcd/run.sh                 # the table of docs/discovery-scale.md
#   CHANGES=200 benches/etcd/run.sh     # quicker: fewer changes per row
#   SHAPES="1x2000" BALANCES="maglev" benches/etcd/run.sh
#
# Needs `etcd` on PATH (Debian: apt-get install etcd-server). Fat LTO is off by default here
# (an exploratory build takes minutes, not ten): set LTO=fat to measure the shipped profile.
set -euo pipefail
cd "$(dirname "$0")/../.."

SHAPES=${SHAPES:-"1x10000 100x100"}
BALANCES=${BALANCES:-"round_robin least_request ring_hash maglev"}
CHANGES=${CHANGES:-1000}
LTO=${LTO:-false}

if ! command -v etcd >/dev/null 2>&1; then
  echo "etcd is not on PATH: apt-get install -y etcd-server" >&2
  exit 1
fi

export CARGO_PROFILE_RELEASE_LTO=$LTO
if [ "$LTO" = false ]; then export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16; fi
cargo test --release --locked --test control --no-run 2>&1 | tail -n 3
binary=$(cargo test --release --locked --test control --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "control":
        print(m["executable"])')

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, Linux $(uname -r), $(etcd --version | head -n 1)"
echo
echo "| clusters × keys | balance | endpoints | initial sync ms | change→live p50 / p99 / max ms | etcd put p50 ms | CPU per change ms | RSS B per endpoint | publishes / changes | one full balancer build ms | burst of $CHANGES deletes: ms to all live, in publishes |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for shape in $SHAPES; do
  for balance in $BALANCES; do
    ETCD_SCALE_CLUSTERS=${shape%x*} ETCD_SCALE_PER_CLUSTER=${shape#*x} \
      ETCD_SCALE_BALANCE=$balance ETCD_SCALE_CHANGES=$CHANGES \
      "$binary" --ignored --exact discovery_etcd_scale::scale_bench --nocapture --test-threads 1 2>/dev/null |
      grep -o '| [0-9].*|$' || echo "| $shape | $balance | failed: rerun the test by hand for its output |"
  done
done
