#!/usr/bin/env bash
# Measures the Tollgate gateway against nginx and haproxy with ../shared/bench/peers.sh:
# same fixed upstream (127.0.0.1:9101), same wrk rounds, one run.
#
# Starts `tollgate up` as it ships (the profile-guided production build of
# scripts/pgo-build.sh; PGO=0 for the plain production profile) on a temporary data dir with key authentication,
# authorization, a rate limit, a quota and usage metering on (embedded usage
# store; limits high enough never to refuse), provisions an API
# pointing at the peers' upstream through the admin API, and hands the gateway to
# peers.sh. Knobs of peers.sh pass through (ROUNDS, CONNS, DUR_LOAD, ...).
#
#   bench/gateway-vs-peers.sh                 # ~4 minutes after the build (~35)
#   SKIP_BUILD=1 TOLLGATE_BIN=target/pgo/tollgate bench/gateway-vs-peers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
PEERS_SH=${PEERS_SH:-../shared/bench/peers.sh}
[ -x "$PEERS_SH" ] || [ -f "$PEERS_SH" ] || { echo "peers.sh not found at $PEERS_SH" >&2; exit 1; }

PGO=${PGO:-1}
[ "${SKIP_BUILD:-0}" = 1 ] || build_gateway
start_gateway 18000
trap stop_gateway EXIT
add_api bench
key=$(add_key bench "$FULL_PLAN")

GATEWAY_NAME=tollgate GATEWAY_URL=$GW_URL/bench/ GATEWAY_HEADERS="x-api-key: $key" GATEWAY_PID=$GW_PID \
  bash "$PEERS_SH"
