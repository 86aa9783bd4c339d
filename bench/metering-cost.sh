#!/usr/bin/env bash
# What usage metering costs the gateway: throughput (wrk -t1 -c$CONNS) of the same
# build with metering on and with the usage writer idle, in interleaved rounds.
#
# Two production-profile `tollgate up` processes (one worker each) serve the same API with the
# full policy set (key auth, rate limit, quota; bench/lib.sh's FULL_PLAN) on the
# peers' fixed upstream (127.0.0.1:9101, started here):
#   on     the whole usage path: queue -> spool (encode, append, fdatasync every
#          200 ms) -> shipper -> usage store
#   idle   every event still built and queued, but the spool thread and the shipper
#          never run during the run (sync and flush intervals of an hour, a batch
#          and queue of 10 million): what the request path pays without the writer
# Metering cannot be switched off (every call is metered), so `idle` is the nearest
# "off". The usage store is the embedded one unless CLICKHOUSE_URL (and
# TOLLGATE_CLICKHOUSE_DATABASE) are set, which pass through to both gateways.
# wrk runs on CPU 0; upstream and gateways on CPU 1 (ClickHouse, if used, is not
# pinned).
#
# Both gateways run at once, so each one's background work could land in the
# other's rounds: `on`'s writer keeps inserting (and folding the rollups) for a
# second or more after its round, which used to slow `idle`'s next round and
# flatter `on`. So after each `on` round the script waits until `on` has
# shipped every event (queue empty, no spool segment left) before the next
# round starts. That keeps the writer's tail out of `idle`'s rounds but also
# out of `on`'s wrk figure, so the writer's work is charged to `on` by CPU
# time: each gateway's CPU seconds (user + system, all its threads, from
# /proc) over its round — for `on` until it has shipped the round's events —
# and the calls it answered give calls per CPU-second, the rate one saturated
# CPU sustains. `on / idle` of that is the figure to read (`cpu ratio`); the
# wrk req/s ratio is printed beside it. ClickHouse's own CPU is not charged
# (it is another machine in production).
#
#   bench/metering-cost.sh          # ~3 minutes; ROUNDS=3 CONNS=50 DUR_LOAD=10
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-50}
DUR_LOAD=${DUR_LOAD:-10}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
export PATH="$PATH:/usr/sbin"

[ "${SKIP_BUILD:-0}" = 1 ] || build_gateway
trap 'stop_gateway; stop_nginx' EXIT
NGINX_PREFIX="taskset -c $SERVER_CPU" start_upstream

names=(); urls=(); hdrs=(); pids=()
start_gateway 18400 taskset -c "$SERVER_CPU"
add_api full
names+=(on); urls+=("$GW_URL/full/"); hdrs+=("x-api-key: $(add_key full "$FULL_PLAN")"); pids+=("$GW_PID")
ON_WORK=$GW_WORK

TOLLGATE_USAGE_SPOOL_SYNC_INTERVAL_MS=3600000 TOLLGATE_USAGE_FLUSH_INTERVAL_MS=3600000 \
TOLLGATE_USAGE_BATCH_SIZE=10000000 TOLLGATE_USAGE_QUEUE_CAPACITY=10000000 \
  start_gateway 18500 taskset -c "$SERVER_CPU"
add_api full
names+=(idle); urls+=("$GW_URL/full/"); hdrs+=("x-api-key: $(add_key full "$FULL_PLAN")"); pids+=("$GW_PID")

expect_200

TICKS=$(getconf CLK_TCK)
cpu() { # pid -> CPU ticks (user + system) of all its threads so far
  awk '{print $14 + $15}' "/proc/$1/stat"
}
metric() { # idx name -> value on that gateway's /metrics
  curl -s "http://127.0.0.1:$(( 18401 + 100 * $1 ))/metrics" | awk -v m="$2" '$1 == m {print $2}'
}
drained() { # idx: waits until the gateway has shipped every event it recorded
  local _
  for _ in $(seq 1 600); do
    [ "$(metric "$1" tollgate_usage_queue_depth)" = 0 ] &&
      [ "$(metric "$1" tollgate_usage_spool_segments)" = 0 ] && return 0
    sleep 0.1
  done
  echo "${names[$1]} still has usage to ship after 60 s" >&2; return 1
}
run() { # idx -> "rps non2xx requests cpu_seconds"
  local before out
  before=$(cpu "${pids[$1]}")
  out=$(taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNS" -d"${DUR_LOAD}s" -H "${hdrs[$1]}" "${urls[$1]}" | awk '
    /requests in/ {n = $1} /Requests\/sec/ {rps = $2} /Non-2xx/ {bad = $NF} END {printf "%s %d %d", rps, bad, n}')
  # `on` is charged until its writer has shipped the round; `idle` never ships.
  [ "${names[$1]}" = on ] && drained "$1"
  echo "$out $(awk -v a="$before" -v b="$(cpu "${pids[$1]}")" -v t="$TICKS" 'BEGIN {printf "%.2f", (b - a) / t}')"
}
res=$(mktemp)
for i in "${!names[@]}"; do run "$i" >/dev/null; done   # warm-up
for r in $(seq 1 "$ROUNDS"); do
  for k in 0 1; do
    i=$(( (k + r) % 2 ))
    echo "$i $(run "$i")" >>"$res"
  done
  echo "round $r/$ROUNDS: $(tail -2 "$res" | sort | awk '{printf "%s=%s req/s (%d calls, %s cpu s) ", ($1 ? "idle" : "on"), $2, $4, $5}')" >&2
done
metrics=$(curl -s "http://127.0.0.1:18401/metrics")
written=$(echo "$metrics" | awk '/^tollgate_usage_events_written_total / {print $2}')
dropped=$(echo "$metrics" | awk '/^tollgate_usage_events_dropped_total/ {s += $2} END {print s + 0}')

echo "# metering cost ($(date -u +%Y-%m-%dT%H:%MZ), $(git describe --always --dirty)); medians of $ROUNDS interleaved rounds, wrk -c$CONNS ${DUR_LOAD}s"
echo "# usage store: ${CLICKHOUSE_URL:-embedded}; wrk on CPU $CLIENT_CPU, upstream and gateways on CPU $SERVER_CPU"
awk '
  function med(k, n,   i, j, t, v) { for (i = 1; i <= n; i++) v[i] = val[k, i]
    for (i = 2; i <= n; i++) { t = v[i]; j = i - 1; while (j > 0 && v[j] > t) { v[j+1] = v[j]; j-- } v[j+1] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n/2] + v[n/2 + 1]) / 2 }
  { c[$1]++; val[$1, c[$1]] = $2; if ($3 > 0) bad[$1] = 1; calls[$1] += $4; cpu[$1] += $5 }
  END {
    on = med(0, c[0]); idle = med(1, c[1])
    con = calls[0] / cpu[0]; cidle = calls[1] / cpu[1]
    printf "%-6s %10s %16s\n", "target", "req/s", "calls/cpu-s"
    printf "%-6s %10.0f %16.0f%s\n", "on", on, con, (bad[0] ? " !non-2xx" : "")
    printf "%-6s %10.0f %16.0f%s\n", "idle", idle, cidle, (bad[1] ? " !non-2xx" : "")
    printf "on / idle = %.3f (req/s medians), cpu ratio = %.3f (calls per CPU-second, all rounds)\n", on / idle, con / cidle
  }' "$res"
echo "# metering on: $written events shipped, $dropped dropped during the run"
rm -f "$res"
