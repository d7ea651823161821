#!/usr/bin/env bash
# testssl.sh against a TLS listener of switchyard (not run in CI; needs the Debian package
# `testssl.sh`). Makes a throwaway CA and leaf with `switchyard certs`, starts the proxy with a
# TLS listener on 127.0.0.1:PORT, scans it, and fails if any protocol below TLS 1.2 is offered
# or any finding is rated HIGH or CRITICAL.
#
# Usage: scripts/testssl.sh [PORT]     (default 18443; loopback only)
set -eu
PORT="${1:-18443}"
BIN="${SWITCHYARD:-target/release/switchyard}"
[ -x "$BIN" ] || cargo build --release
command -v testssl >/dev/null || command -v testssl.sh >/dev/null || {
    echo "testssl.sh is not installed (apt-get install testssl.sh)" >&2; exit 1; }
TESTSSL="$(command -v testssl || command -v testssl.sh)"
WORK="$(mktemp -d)"
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$BIN" certs init --dir "$WORK/certs" >/dev/null
"$BIN" certs issue --ca "$WORK/certs" --name localhost --ip 127.0.0.1 >/dev/null
cat > "$WORK/switchyard.toml" <<TOML
[admin]
listen = "127.0.0.1:0"

[[listeners]]
name = "tls"
listen = "127.0.0.1:$PORT"
tls = { cert = "certs/localhost.pem", key = "certs/localhost.key" }

[[routes]]
listener = "tls"
match = { path_prefix = "/" }
cluster = "nowhere"

[clusters.nowhere]
endpoints = ["127.0.0.1:9"]
TOML
"$BIN" run -c "$WORK/switchyard.toml" &
PID=$!
i=0
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null || [ $i -ge 50 ]; do i=$((i+1)); sleep 0.1; done
"$TESTSSL" --quiet --color 0 --protocols --vulnerable --jsonfile "$WORK/result.json" \
    "https://127.0.0.1:$PORT/" >/dev/null || true
python3 - "$WORK/result.json" <<'PY'
import json, sys
findings = json.load(open(sys.argv[1]))
bad = []
for f in findings:
    fid, text, sev = f.get("id", ""), f.get("finding", ""), f.get("severity", "")
    if fid in ("SSLv2", "SSLv3", "TLS1", "TLS1_1") and "not offered" not in text:
        bad.append(f"{fid}: {text}")
    if sev in ("HIGH", "CRITICAL"):
        bad.append(f"{fid} ({sev}): {text}")
if not any(f.get("id") == "TLS1_2" and f.get("finding", "").startswith("offered") for f in findings):
    bad.append("scan incomplete: TLS1_2 not reported as offered")
print("\n".join(bad) or "no protocol below TLS 1.2 offered, no HIGH/CRITICAL finding")
sys.exit(1 if bad else 0)
PY
