#!/usr/bin/env bash
# How long the embedded usage store's rollup fold holds up calls. One gateway
# (`tollgate up`, one worker, CPU 1, the benchmark's full policy set) serves
# `wrk -c1` (CPU 0) for DUR seconds on the peers' fixed upstream. In the run
# "fold", FOLD_AT seconds in, a usage query folds every event stored so far
# into the rollups, as the store does on its own once a minute or every
# 600,000 events; the run "none" is the same without the query. Prints, per
# run, the query's time and wrk's latency: p50, p99 and the slowest call.
#
#   bench/fold-pause.sh [BINARY]     # ~1 minute; DUR=20 FOLD_AT=15 (release build by default)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
[ $# -le 1 ] || { echo "usage: $0 [BINARY]" >&2; exit 2; }
[ $# = 1 ] && TOLLGATE_BIN=$1
[ -x "$TOLLGATE_BIN" ] || { echo "$TOLLGATE_BIN is not an executable" >&2; exit 2; }
DUR=${DUR:-20}
FOLD_AT=${FOLD_AT:-15}
export PATH="$PATH:/usr/sbin"

trap 'stop_gateway; stop_nginx' EXIT
NGINX_PREFIX="taskset -c 1" start_upstream

# wrk's latency lines: "p50 p99 max" in microseconds.
latencies() {
  awk 'function us(v) { if (v ~ /us$/) return v + 0; if (v ~ /ms$/) return v * 1000; return v * 1000000 }
    /^ +Latency +[0-9]/ {max = us($4)}
    /^ +50%/ {p50 = us($2)}
    /^ +99%/ {p99 = us($2)}
    END {printf "%8.0f %8.0f %10.0f", p50, p99, max}'
}

echo "# fold pause ($(date -u +%Y-%m-%dT%H:%MZ)); $TOLLGATE_BIN; wrk -c1 for ${DUR}s, the fold ${FOLD_AT}s in"
printf '%-6s %10s %8s %8s %10s\n' run query_ms p50_us p99_us max_us
for run in none fold; do
  start_gateway 18700 taskset -c 1
  add_api bench
  key=$(add_key bench "$FULL_PLAN")
  names=(tollgate); urls=("$GW_URL/bench/"); hdrs=("x-api-key: $key")
  expect_200
  out=$(mktemp)
  taskset -c 0 wrk -t1 -c1 -d"${DUR}s" --latency -H "x-api-key: $key" "$GW_URL/bench/" >"$out" &
  wrk_pid=$!
  query_ms=-
  if [ "$run" = fold ]; then
    sleep "$FOLD_AT"
    t0=$(date +%s%N)
    curl -sf -o /dev/null -H "Authorization: Bearer $GW_TOKEN" \
      "$GW_ADMIN/usage/timeseries?bucket=day&from=$(date -u -d '-1 day' +%Y-%m-%dT00:00:00Z)&to=$(date -u -d '+1 day' +%Y-%m-%dT00:00:00Z)" \
      || { echo "the usage query failed" >&2; exit 1; }
    query_ms=$((($(date +%s%N) - t0) / 1000000))
  fi
  wait "$wrk_pid"
  printf '%-6s %10s %s\n' "$run" "$query_ms" "$(latencies <"$out")"
  rm -f "$out"
  stop_gateway
done
