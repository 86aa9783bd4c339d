#!/usr/bin/env bash
# Two gateway builds side by side, next to nginx as a reverse proxy: throughput
# (wrk -t1 -c$CONNS) and one-connection latency (wrk -t1 -c1) in interleaved
# rounds, so both builds see the same machine at the same minutes. Use it to
# check that a change is faster in wall-clock time, not only in instructions.
#
# Each build runs `tollgate up` (one worker) with the benchmark's full policy set
# (key auth, rate limit, quota, usage metering into the embedded store) on the
# peers' fixed upstream (127.0.0.1:9101, started here). wrk runs on CPU 0;
# upstream, nginx and both gateways on CPU 1.
#
#   bench/gateway-ab.sh OLD_BINARY NEW_BINARY     # ~5 minutes; ROUNDS=5 CONNS=50 DUR_LOAD=8 DUR_LAT=5
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
[ $# = 2 ] || { echo "usage: $0 OLD_BINARY NEW_BINARY" >&2; exit 2; }
for b in "$1" "$2"; do [ -x "$b" ] || { echo "$b is not an executable" >&2; exit 2; }; done
ROUNDS=${ROUNDS:-5}
CONNS=${CONNS:-50}
DUR_LOAD=${DUR_LOAD:-8}
DUR_LAT=${DUR_LAT:-5}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
export PATH="$PATH:/usr/sbin"

trap 'stop_gateway; stop_nginx' EXIT
NGINX_PREFIX="taskset -c $SERVER_CPU" start_upstream
NGINX_PREFIX="taskset -c $SERVER_CPU" start_nginx_proxy 9102

names=(nginx); urls=(http://127.0.0.1:9102/); hdrs=("")
base=18400
for bin in "$1" "$2"; do
  TOLLGATE_BIN=$bin start_gateway "$base" taskset -c "$SERVER_CPU"
  add_api bench
  names+=("$(basename "$bin")"); urls+=("$GW_URL/bench/"); hdrs+=("x-api-key: $(add_key bench "$FULL_PLAN")")
  base=$((base + 100))
done
[ "${names[1]}" != "${names[2]}" ] || { names[1]="old ${names[1]}"; names[2]="new ${names[2]}"; }

expect_200

res=$(mktemp)
interleaved_rounds "$res"

echo "# gateway A/B ($(date -u +%Y-%m-%dT%H:%MZ)); medians of $ROUNDS interleaved rounds"
echo "# wrk on CPU $CLIENT_CPU; upstream, nginx and the gateways on CPU $SERVER_CPU, one worker each"
round_medians "$res" | awk -v names="$(printf '%s|' "${names[@]}")" -v conns="c$CONNS" '
  { R[$1] = $2; L[$1] = $3; bad[$1] = $4 }
  END {
    split(names, nm, "|")
    printf "%-24s %10s %8s %12s %14s\n", "target", "req/s " conns, "x nginx", "p50 us c1", "- nginx p50"
    for (i = 0; nm[i + 1] != ""; i++)
      printf "%-24s %10.0f %8.2f %12.0f %+14.0f%s\n", nm[i + 1], R[i], R[i] / R[0], L[i], L[i] - L[0], (bad[i] ? " !non-2xx" : "")
    printf "new / old throughput: %.3f\n", R[2] / R[1]
  }'
rm -f "$res"
