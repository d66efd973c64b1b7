#!/usr/bin/env bash
# Fuzzes the HTTP edge against its own OpenAPI document (src/http/openapi.json, served at
# /api/openapi.json) with schemathesis, on a live release broker: once without tokens and
# once with --token. Fails on any 5xx, any status code, content type, header or body the
# document does not describe, and on /metrics that a strict Prometheus parser rejects.
#
# Streams (/t/{filter}/json|sse|raw) and `wait=delivered` publishes would hold a request
# open as long as the fuzzer lets them: a schemathesis hook (written below) sets their
# `timeout` query parameter to 100 ms (the parameter the document describes), keeping
# any value the fuzzer made invalid on purpose, so they are fuzzed and end on their own.
#
# Installs what it needs: python3 with venv (Debian packages), then schemathesis and
# prometheus-client, pinned, into a venv cached under $MOTE_CI_CACHE (default
# ~/.cache/mote-ci). Usage: .ci/http.sh [MAX_EXAMPLES_PER_OPERATION]
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive CARGO_TERM_COLOR=never

SCHEMATHESIS_VERSION=4.32.5
PROMETHEUS_CLIENT_VERSION=0.26.0
MAX_EXAMPLES=${1:-30}
start=$(date +%s)
step() { printf '\n=== http: %s (%ss)\n' "$*" "$(($(date +%s) - start))"; }

work=$(mktemp -d)
broker_pid=
stop_broker() {
  if [ -n "$broker_pid" ]; then
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=
  fi
}
trap 'stop_broker; rm -rf "$work"' EXIT

step "python3 with venv"
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  apt-get update -qq || echo "WARNING: apt-get update reported errors; continuing"
  apt-get install -y -qq python3 python3-venv >/dev/null
fi
venv=${MOTE_CI_CACHE:-$HOME/.cache/mote-ci}/http-venv-st$SCHEMATHESIS_VERSION-pc$PROMETHEUS_CLIENT_VERSION
if ! "$venv/bin/python" -c 'import schemathesis, prometheus_client' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    "schemathesis==$SCHEMATHESIS_VERSION" "prometheus-client==$PROMETHEUS_CLIENT_VERSION"
fi
"$venv/bin/schemathesis" --version

# The broker alone (the browser test and the package reuse it); not the workspace's
# benchmark binary, which no check here runs.
step "cargo build --release -p mote --bin mote"
cargo build --release -p mote --bin mote
mote=target/release/mote

# Starts the broker with "$@" on free ports; sets $base to its HTTP edge's URL.
start_broker() {
  : >"$work/broker.log"
  RUST_LOG=info "$mote" serve --tcp 127.0.0.1:0 --http 127.0.0.1:0 "$@" 2>"$work/broker.log" &
  broker_pid=$!
  local addr=
  for _ in $(seq 1 200); do
    addr=$(sed -n 's/.*http listening on \([0-9.:]*\).*/\1/p' "$work/broker.log" | head -n 1)
    [ -n "$addr" ] && break
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.05
  done
  if [ -z "$addr" ]; then
    echo "the broker did not start:" >&2
    cat "$work/broker.log" >&2
    exit 1
  fi
  base="http://$addr"
  echo "broker $broker_pid, HTTP edge at $base"
}

cat >"$work/mote_hooks.py" <<'EOF'
"""Bounds the requests that would otherwise stay open (streams, wait=delivered), gives
micro-mq forms the broker's token when it has one, and accepts the designed 504."""
import os
import re

import schemathesis

DURATION = re.compile(r"^[0-9]{1,5}(\.[0-9]{1,3})?(ms|s|m|min|h)?$")


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    # micro-mq forms carry their own token: random ones would only ever be refused (and
    # put this address in the backoff, answering 429 to everything for a while).
    token = os.environ.get("MOTE_FUZZ_FORM_TOKEN")
    if token and path.startswith("/api/edge/product") and isinstance(case.body, dict):
        if isinstance(case.body.get("token"), str):
            case.body["token"] = token
        return
    streams = path.endswith(("/json", "/sse", "/raw"))
    waits = path == "/t/{topic}" and isinstance(case.query, dict) and "wait" in case.query
    if not (streams or waits):
        return
    if case.query is None:
        case.query = {}
    timeout = case.query.get("timeout")
    # Keep timeouts made invalid on purpose: they are answered 400 at once.
    if timeout is None or (isinstance(timeout, str) and DURATION.match(timeout)):
        case.query["timeout"] = "100ms"


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Some 5xx are the API, not server errors, as the document says: `wait=delivered`
    answers 504 `not_delivered` when no subscriber got the message in time; `wait=reply`
    answers 503 `no_responders` when nothing listens on the topic and 504 `timeout` when
    no reply came in time; a request or prepare past the limits answers 503
    `pending_limit`."""
    by_design = {504: ("not_delivered", "timeout"), 503: ("no_responders", "pending_limit")}
    if failure.code == "ST101" and response.status_code in by_design:
        try:
            return response.json().get("code") not in by_design[response.status_code]
        except Exception:
            return True
    return True
EOF

fuzz() {
  local what=$1
  shift
  step "schemathesis: $what"
  # From $work: schemathesis keeps a cache (.schemathesis/) in the current directory.
  (cd "$work" && PYTHONPATH="$work" SCHEMATHESIS_HOOKS=mote_hooks "$venv/bin/schemathesis" run "$base/api/openapi.json" \
    --url "$base" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,unsupported_method,allow_header_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$MAX_EXAMPLES" \
    --request-timeout 10 \
    --workers 1 \
    --seed 7271 \
    --suppress-health-check all \
    --no-color \
    "$@")
}

check_metrics() {
  step "/metrics through prometheus_client's parser"
  "$venv/bin/python" - "$base" "$@" <<'EOF'
import sys, urllib.request
from prometheus_client.parser import text_string_to_metric_families

base, headers = sys.argv[1], dict(h.split(": ", 1) for h in sys.argv[2:])
text = urllib.request.urlopen(urllib.request.Request(base + "/metrics", headers=headers), timeout=10).read().decode()
families = list(text_string_to_metric_families(text))
assert families, "no metrics"
for f in families:
    assert f.name.startswith("mote_"), f.name
    assert f.type in ("counter", "gauge"), (f.name, f.type)
    for s in f.samples:
        assert s.value >= 0, s
print(f"{len(families)} metric families, {sum(len(f.samples) for f in families)} samples: ok")
EOF
}

# POSTs body $2 to $base$1 with optional headers "$3..." (NAME: VALUE); fails unless 200.
post() {
  "$venv/bin/python" - "$base" "$@" <<'EOF'
import os, sys, urllib.request
base, path, body, headers = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
req = urllib.request.Request(base + path, data=os.fsencode(body), method="POST",
                             headers=dict(h.split(": ", 1) for h in headers))
assert urllib.request.urlopen(req, timeout=10).status == 200
EOF
}

# Joins durable group `workers` (the example of /api/groups/{name}) with a stream that ends
# at once: the group stays without members, for the management routes to find.
join_group() {
  "$venv/bin/python" - "$base" "$@" <<'EOF'
import sys, urllib.request
base, headers = sys.argv[1], dict(h.split(": ", 1) for h in sys.argv[2:])
url = base + "/t/jobs/%23/json?group=workers&durable=true&timeout=100ms"
with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
    assert r.status == 200
    r.read()
EOF
}

start_broker
# Something to read, stream and count: text, and binary with a key; a group to manage
# (home/kitchen/temp and workers are the management routes' examples: purged, given
# metadata, sought and deleted in the examples phase).
post /t/home/kitchen/temp 21.5
post /t/bin $'\xff\x01' "X-Key: k"
join_group
fuzz "no tokens"
check_metrics
grep -E 'panicked|ERROR' "$work/broker.log" && { echo "the broker logged errors" >&2; exit 1; }
stop_broker

token=$("$mote" token new)
start_broker --token "$token"
post /t/home/kitchen/temp 21.5 "Authorization: Bearer $token"
join_group "Authorization: Bearer $token"
MOTE_FUZZ_FORM_TOKEN=$(printf %s "$token" | sha256sum | cut -d' ' -f1) \
  fuzz "with --token" -H "Authorization: Bearer $token"
check_metrics "Authorization: Bearer $token"
grep -E 'panicked|ERROR' "$work/broker.log" && { echo "the broker logged errors" >&2; exit 1; }
stop_broker

step "HTTP edge fuzzing passed"
