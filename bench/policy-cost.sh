#!/usr/bin/env bash
# What each gateway policy costs: throughput (wrk -t1 -c$CONNS) and one-connection
# latency (wrk -t1 -c1) of the same gateway build with each policy off and on,
# next to nginx as a reverse proxy, in interleaved rounds.
#
# One production-profile `tollgate up` (one worker) serves five APIs on the peers' fixed
# upstream (127.0.0.1:9101, started here), each with its own plan and key:
#   keyless    no key, no limits (usage metering only)
#   key        key auth + authorization, no rate limit, no quota
#   key+rl     ... + a rate limit          key+quota  ... + a quota
#   full       key auth + rate limit + quota (bench/gateway-vs-peers.sh's set)
# and a second gateway serves `full` with its usage store writes deferred past
# the run (flush interval one hour; events are still built and queued), which
# shows what writing the embedded usage store costs. Limits never refuse.
# wrk runs on CPU 0; upstream, nginx and the gateways on CPU 1.
#
#   bench/policy-cost.sh          # ~6 minutes; ROUNDS=3 CONNS=50 DUR_LOAD=8 DUR_LAT=5
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
DUR_LOAD=${DUR_LOAD:-8}
DUR_LAT=${DUR_LAT:-5}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
export PATH="$PATH:/usr/sbin"

[ "${SKIP_BUILD:-0}" = 1 ] || build_gateway
trap 'stop_gateway; stop_nginx' EXIT
NGINX_PREFIX="taskset -c $SERVER_CPU" start_upstream
NGINX_PREFIX="taskset -c $SERVER_CPU" start_nginx_proxy 9102

names=(nginx); urls=(http://127.0.0.1:9102/); hdrs=("")
target() { names+=("$1"); urls+=("$2"); hdrs+=("$3"); }

start_gateway 18200 taskset -c "$SERVER_CPU"
add_api keyless '{"keyless":true}'
target keyless "$GW_URL/keyless/" ""
add_api key
target key "$GW_URL/key/" "x-api-key: $(add_key key '')"
add_api rl
target key+rl "$GW_URL/rl/" "x-api-key: $(add_key rl '"rate_limits":[{"limit":1000000000,"window":"second"}]')"
add_api quota
target key+quota "$GW_URL/quota/" "x-api-key: $(add_key quota '"included_calls":1000000000')"
add_api full
target full "$GW_URL/full/" "x-api-key: $(add_key full "$FULL_PLAN")"

TOLLGATE_USAGE_FLUSH_INTERVAL_MS=3600000 TOLLGATE_USAGE_BATCH_SIZE=10000000 TOLLGATE_USAGE_QUEUE_CAPACITY=10000000 \
  start_gateway 18300 taskset -c "$SERVER_CPU"
add_api full
target "full, store writes deferred" "$GW_URL/full/" "x-api-key: $(add_key full "$FULL_PLAN")"

expect_200

res=$(mktemp)
interleaved_rounds "$res"

echo "# policy cost ($(date -u +%Y-%m-%dT%H:%MZ), $(git describe --always --dirty)); medians of $ROUNDS interleaved rounds"
echo "# wrk on CPU $CLIENT_CPU; upstream, nginx and the gateways on CPU $SERVER_CPU, one worker each"
round_medians "$res" | awk -v names="$(printf '%s|' "${names[@]}")" -v conns="c$CONNS" '
  { R[$1] = $2; L[$1] = $3; bad[$1] = $4 }
  END {
    split(names, nm, "|"); full = 5
    printf "%-30s %10s %8s %8s %12s\n", "target", "req/s " conns, "x nginx", "x full", "p50 us c1"
    for (i = 0; nm[i + 1] != ""; i++)
      printf "%-30s %10.0f %8.2f %8.2f %12.0f%s\n", nm[i + 1], R[i], R[i] / R[0], R[i] / R[full], L[i], (bad[i] ? " !non-2xx" : "")
  }'
rm -f "$res"
