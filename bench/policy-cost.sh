#!/usr/bin/env bash
# What each gateway policy costs: throughput (wrk -t1 -c$CONNS) and one-connection
# latency (wrk -t1 -c1) of the same gateway build with each policy off and on,
# next to nginx as a reverse proxy, in interleaved rounds.
#
# One release `tollgate up` (one worker) serves five APIs on the peers' fixed
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

for i in "${!names[@]}"; do
  args=(); [ -n "${hdrs[$i]}" ] && args=(-H "${hdrs[$i]}")
  code=$(curl -s -o /dev/null -w '%{http_code}' "${args[@]}" "${urls[$i]}")
  [ "$code" = 200 ] || { echo "${names[$i]} answers $code at ${urls[$i]}" >&2; exit 1; }
done

run() { # idx conns secs -> "rps p50_us non2xx"
  wrk_point "$CLIENT_CPU" "${urls[$1]}" "$2" "$3" "${hdrs[$1]}"
}
res=$(mktemp)
for i in "${!names[@]}"; do run "$i" "$CONNS" 2 >/dev/null; done   # warm-up
for r in $(seq 1 "$ROUNDS"); do
  n=${#names[@]}
  for k in $(seq 0 $((n - 1))); do
    i=$(( (k + r - 1) % n ))
    echo "$i c$CONNS $(run "$i" "$CONNS" "$DUR_LOAD")" >>"$res"
    echo "$i c1 $(run "$i" 1 "$DUR_LAT")" >>"$res"
  done
  echo "round $r/$ROUNDS done" >&2
done

echo "# policy cost ($(date -u +%Y-%m-%dT%H:%MZ), $(git describe --always --dirty)); medians of $ROUNDS interleaved rounds"
echo "# wrk on CPU $CLIENT_CPU; upstream, nginx and the gateways on CPU $SERVER_CPU, one worker each"
awk -v names="$(printf '%s|' "${names[@]}")" -v conns="c$CONNS" '
  function med(k, n,   i, j, t, v) { for (i = 1; i <= n; i++) v[i] = val[k, i]
    for (i = 2; i <= n; i++) { t = v[i]; j = i - 1; while (j > 0 && v[j] > t) { v[j+1] = v[j]; j-- } v[j+1] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n/2] + v[n/2 + 1]) / 2 }
  { k = $1 SUBSEP $2; c[k]++; val[k, c[k]] = $3; k2 = $1 SUBSEP $2 "p"; c[k2]++; val[k2, c[k2]] = $4; if ($5 > 0) bad[$1] = 1 }
  END {
    split(names, nm, "|"); full = 5
    R0 = med(0 SUBSEP conns, c[0 SUBSEP conns]); Rf = med(full SUBSEP conns, c[full SUBSEP conns])
    L0 = med(0 SUBSEP "c1p", c[0 SUBSEP "c1p"])
    printf "%-30s %10s %8s %8s %12s\n", "target", "req/s " conns, "x nginx", "x full", "p50 us c1"
    for (i = 0; nm[i + 1] != ""; i++) {
      R = med(i SUBSEP conns, c[i SUBSEP conns]); L = med(i SUBSEP "c1p", c[i SUBSEP "c1p"])
      printf "%-30s %10.0f %8.2f %8.2f %12.0f%s\n", nm[i + 1], R, R / R0, R / Rf, L, (bad[i] ? " !non-2xx" : "")
    }
  }' "$res"
rm -f "$res"
