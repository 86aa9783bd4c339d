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

for i in "${!names[@]}"; do
  args=(); [ -n "${hdrs[$i]}" ] && args=(-H "${hdrs[$i]}")
  for _ in $(seq 1 40); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "${args[@]}" "${urls[$i]}")
    [ "$code" = 200 ] && break
    sleep 0.25
  done
  [ "$code" = 200 ] || { echo "${names[$i]} answers $code at ${urls[$i]}" >&2; exit 1; }
done

run() { # idx conns secs -> "rps p50_us non2xx"
  wrk_point "$CLIENT_CPU" "${urls[$1]}" "$2" "$3" "${hdrs[$1]}"
}
res=$(mktemp)
for i in "${!names[@]}"; do run "$i" "$CONNS" 2 >/dev/null; done   # warm-up
for r in $(seq 1 "$ROUNDS"); do
  n=${#names[@]}
  line=""
  for k in $(seq 0 $((n - 1))); do
    i=$(( (k + r - 1) % n ))
    load=$(run "$i" "$CONNS" "$DUR_LOAD"); lat=$(run "$i" 1 "$DUR_LAT")
    echo "$i c$CONNS $load" >>"$res"; echo "$i c1 $lat" >>"$res"
    line+="${names[$i]}=${load%% *} "
  done
  echo "round $r/$ROUNDS: $line" >&2
done

echo "# gateway A/B ($(date -u +%Y-%m-%dT%H:%MZ)); medians of $ROUNDS interleaved rounds"
echo "# wrk on CPU $CLIENT_CPU; upstream, nginx and the gateways on CPU $SERVER_CPU, one worker each"
awk -v names="$(printf '%s|' "${names[@]}")" -v conns="c$CONNS" '
  function med(k, n,   i, j, t, v) { for (i = 1; i <= n; i++) v[i] = val[k, i]
    for (i = 2; i <= n; i++) { t = v[i]; j = i - 1; while (j > 0 && v[j] > t) { v[j+1] = v[j]; j-- } v[j+1] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n/2] + v[n/2 + 1]) / 2 }
  { k = $1 SUBSEP $2; c[k]++; val[k, c[k]] = $3; k2 = $1 SUBSEP $2 "p"; c[k2]++; val[k2, c[k2]] = $4; if ($5 > 0) bad[$1] = 1 }
  END {
    split(names, nm, "|")
    R0 = med(0 SUBSEP conns, c[0 SUBSEP conns]); L0 = med(0 SUBSEP "c1p", c[0 SUBSEP "c1p"])
    printf "%-24s %10s %8s %12s %14s\n", "target", "req/s " conns, "x nginx", "p50 us c1", "- nginx p50"
    for (i = 0; nm[i + 1] != ""; i++) {
      R = med(i SUBSEP conns, c[i SUBSEP conns]); L = med(i SUBSEP "c1p", c[i SUBSEP "c1p"])
      printf "%-24s %10.0f %8.2f %12.0f %+14.0f%s\n", nm[i + 1], R, R / R0, L, L - L0, (bad[i] ? " !non-2xx" : "")
    }
    Ra = med(1 SUBSEP conns, c[1 SUBSEP conns]); Rb = med(2 SUBSEP conns, c[2 SUBSEP conns])
    printf "new / old throughput: %.3f\n", Rb / Ra
  }' "$res"
rm -f "$res"
