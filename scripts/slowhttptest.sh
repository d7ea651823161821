#!/bin/sh
# Slow-client attacks against a running proxy with slowhttptest (not run in CI; needs the
# `slowhttptest` package). Each run opens many slow connections and reports how long the
# proxy kept them; with the default [limits] they are closed after header_read_timeout (10 s,
# slowloris), body_read_timeout (30 s, slow body) and body_read_timeout without progress
# (slow read). Watch `switchyard_rejected_requests_total` on the admin listener meanwhile.
#
# Usage: scripts/slowhttptest.sh [URL] [CONNECTIONS]
#   e.g. cargo run --release -- demo &   then   scripts/slowhttptest.sh http://127.0.0.1:8080/
set -eu
URL="${1:-http://127.0.0.1:8080/}"
CONNS="${2:-1000}"
case "$URL" in
    http://127.0.0.1*|http://localhost*|http://\[::1\]*) ;;
    *) echo "refusing to attack anything but loopback: $URL" >&2; exit 2 ;;
esac
command -v slowhttptest >/dev/null || { echo "slowhttptest is not installed" >&2; exit 1; }

echo "== slowloris (headers never finish)"
slowhttptest -H -c "$CONNS" -r 200 -i 5 -s 8192 -l 60 -u "$URL" -g -o /tmp/switchyard-slowloris
echo "== slow body (POST body a byte at a time)"
slowhttptest -B -c "$CONNS" -r 200 -i 40 -s 8192 -l 90 -u "$URL" -g -o /tmp/switchyard-slowbody
echo "== slow read (tiny receive window)"
slowhttptest -X -c "$CONNS" -r 200 -w 1 -y 2 -n 5 -z 32 -k 3 -l 90 -u "$URL" -g -o /tmp/switchyard-slowread
echo "reports: /tmp/switchyard-slowloris.html /tmp/switchyard-slowbody.html /tmp/switchyard-slowread.html"
