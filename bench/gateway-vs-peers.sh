#!/usr/bin/env bash
# Measures the Tollgate gateway against nginx and haproxy with ../shared/bench/peers.sh:
# same fixed upstream (127.0.0.1:9101), same wrk rounds, one run.
#
# Starts a release `tollgate up` on a temporary data dir with key authentication,
# authorization, a rate limit, a quota and usage metering on (embedded usage
# store; limits high enough never to refuse), provisions an API
# pointing at the peers' upstream through the admin API, and hands the gateway to
# peers.sh. Knobs of peers.sh pass through (ROUNDS, CONNS, DUR_LOAD, ...).
#
#   bench/gateway-vs-peers.sh                 # ~4 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
PEERS_SH=${PEERS_SH:-../shared/bench/peers.sh}
[ -x "$PEERS_SH" ] || [ -f "$PEERS_SH" ] || { echo "peers.sh not found at $PEERS_SH" >&2; exit 1; }

cargo build --release --locked --bin tollgate >&2
work=$(mktemp -d)
token=bench-admin-token-$(date +%s)
# One worker thread, like each peer (override with TOLLGATE_WORKERS).
TOLLGATE_WORKERS=${TOLLGATE_WORKERS:-1} TOLLGATE_DATA_DIR=$work TOLLGATE_ADMIN_TOKEN=$token TOLLGATE_LOG=warn \
TOLLGATE_GATEWAY_ADDR=127.0.0.1:18000 TOLLGATE_PORTAL_ADDR=127.0.0.1:18080 TOLLGATE_ADMIN_ADDR=127.0.0.1:18001 \
  ./target/release/tollgate up >"$work/out.log" 2>"$work/err.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do grep -q "Press Ctrl-C" "$work/out.log" 2>/dev/null && break; sleep 0.1; done

admin() { curl -sf -H "Authorization: Bearer $token" -H 'content-type: application/json' "http://127.0.0.1:18001/admin$1" -d "$2"; }
field() { sed -E "s/.*\"$1\":\"([^\"]+)\".*/\1/"; }
admin /apis '{"name":"Bench","slug":"bench","base_path":"/bench","upstreams":["http://127.0.0.1:9101"]}' >/dev/null
# Rate limit and quota on, set high enough never to refuse during the run.
plan=$(admin /plans '{"name":"Bench","apis":["bench"],"included_calls":1000000000,"rate_limits":[{"limit":1000000000,"window":"second"}]}' | field id)
dev=$(admin /developers '{"email":"bench@example.com","name":"Bench"}' | field id)
app=$(admin /apps "{\"developer_id\":\"$dev\",\"name\":\"Bench\"}" | field id)
admin /subscriptions "{\"app_id\":\"$app\",\"plan_id\":\"$plan\"}" >/dev/null
key=$(admin "/apps/$app/keys" '{}' | sed -E 's/.*"key":"([^"]+)".*/\1/')

GATEWAY_NAME=tollgate GATEWAY_URL=http://127.0.0.1:18000/bench/ GATEWAY_HEADERS="x-api-key: $key" GATEWAY_PID=$pid \
  bash "$PEERS_SH"
