#!/bin/sh
# Streams 1 GiB up and 1 GiB down through the proxy (HTTP/1.1 and h2 upstreams) in a release
# build and prints the peak RSS of the proxy, which the test runs as a child process.
# Usage: scripts/large_body_rss.sh [MiB]   (default 1024)
set -eu
MIB="${1:-1024}"
SWITCHYARD_LARGE_BODY_MIB="$MIB" cargo test --release --test upstream_streaming large_bodies \
    -- --nocapture --test-threads=1 2>&1 | grep -E "MiB up and down|test result"
