#!/usr/bin/env bash
# Instructions per call of the gateway, counted by callgrind: user-space
# instructions of every thread of the process (serving, usage writer, SQLite),
# so the figure repeats from run to run whatever else the machine is doing.
# Kernel work (socket syscalls, loopback TCP) is not counted.
#
# Starts the peers' nginx upstream on 127.0.0.1:9101, a production-profile `tollgate up`
# under `valgrind --tool=callgrind` with the benchmark's full policy set (key
# auth, rate limit, quota, metering into the embedded store), and for each
# connection count sends exactly CALLS calls with curl (keep-alive) between
# zeroing and dumping the counters. Each window holds exactly the usage
# events of its CALLS calls: before zeroing and before dumping, the script
# waits until the usage store holds every event sent so far. The spool seals
# a segment (one insert) every FLUSH_MS (default 20,000 ms: under valgrind
# that is several thousand events per insert, near full-load batches).
#
#   bench/gateway-instructions.sh          # ~5 minutes; CALLS=20000 CONNS="1 50"
#   KEYLESS=1 bench/gateway-instructions.sh
#   IDLE=1 bench/gateway-instructions.sh   # the usage writer idle, as metering-cost.sh's `idle`
#   PORT_BASE=18300 UPSTREAM=http://127.0.0.1:9111 bench/gateway-instructions.sh   # other ports, beside another run
#
# IDLE=1 builds and queues every event but never runs the spool thread or the
# shipper (hour-long intervals, a queue of 10 million): the difference to a
# normal run is what the usage path costs beyond the request path's share.
# Every event is queued before its call's response ends, so the windows need
# no wait for the store.
#
# The dumps stay in OUT (default: a temporary dir, printed) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
CALLS=${CALLS:-20000}
CONNS=${CONNS:-"1 50"}
PLAN=${PLAN:-$FULL_PLAN}
KEYLESS=${KEYLESS:-0}
IDLE=${IDLE:-0}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"

[ "${SKIP_BUILD:-0}" = 1 ] || build_gateway
start_upstream
trap 'stop_gateway; stop_nginx' EXIT
FLUSH_MS=${FLUSH_MS:-20000}
idle_env=()
[ "$IDLE" = 1 ] && idle_env=(TOLLGATE_USAGE_SPOOL_SYNC_INTERVAL_MS=3600000 TOLLGATE_USAGE_FLUSH_INTERVAL_MS=3600000
  TOLLGATE_USAGE_BATCH_SIZE=10000000 TOLLGATE_USAGE_QUEUE_CAPACITY=10000000)
TOLLGATE_USAGE_FLUSH_INTERVAL_MS=$FLUSH_MS \
  start_gateway "${PORT_BASE:-18100}" env "${idle_env[@]}" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/callgrind.out"
headers=()
if [ "$KEYLESS" = 1 ]; then
  add_api bench '{"keyless":true}'
else
  add_api bench
  headers=(-H "x-api-key: $(add_key bench "$PLAN")")
fi
url=$GW_URL/bench/
# The new key reaches the gateway's snapshot within moments (longer under valgrind).
sent=0  # calls so far, each one usage event
ok=0
for _ in $(seq 1 60); do
  sent=$((sent + 1))
  curl -sf -o /dev/null "${headers[@]}" "$url" && { ok=1; break; }
  sleep 0.5
done
[ "$ok" = 1 ] || { echo "the gateway does not answer 2xx at $url" >&2; exit 1; }

calls() { # N CONNS -> prints non-200 count
  curl_calls "$1" "$2" "$url" "$OUT/curl.cfg" "${headers[@]}"
}
# Waits until every event of the calls sent so far is in the usage store,
# reading it from outside (costs the gateway nothing).
flush_wait() {
  local want=$sent have
  [ "$IDLE" = 1 ] && { sleep 2; return 0; }
  for _ in $(seq 1 $(( FLUSH_MS / 250 + 600 ))); do
    have=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select coalesce(sum(events), 0) from usage_event_blocks").fetchone()[0])' "$GW_WORK/usage.db" 2>/dev/null || echo 0)
    [ "$have" -ge "$want" ] && { sleep 1; fold_rollups; return 0; }
    sleep 0.5
  done
  echo "usage store holds $have events, expected $want" >&2; return 1
}

# Folds the embedded store's queued events into the rollups (a query that
# reads them does), so each window also holds the fold of exactly its events:
# on its own the fold runs about once a minute and would fall into a window
# only now and then. The query's own cost is small and the same every run.
fold_rollups() {
  curl -sf -o /dev/null -H "Authorization: Bearer $GW_TOKEN" \
    "$GW_ADMIN/usage/timeseries?bucket=day&from=$(date -u -d '-1 day' +%Y-%m-%dT00:00:00Z)&to=$(date -u -d '+1 day' +%Y-%m-%dT00:00:00Z)" \
    || echo "the rollup query failed" >&2
}

callgrind_control -i on "$GW_PID" >/dev/null 2>&1
echo "# instructions per call (callgrind, all threads, user space); $CALLS calls per row; $TOLLGATE_BIN, $(git describe --always --dirty)$([ "$IDLE" = 1 ] && echo ", usage writer idle")"
printf '%-8s %14s %12s %8s\n' conns instructions per_call non200
for c in $CONNS; do
  # warm up (connections, pools, code paths)
  warm=2000; calls "$warm" "$c" >/dev/null; sent=$((sent + warm))
  flush_wait
  callgrind_control -z "$GW_PID" >/dev/null 2>&1
  bad=$(calls "$CALLS" "$c"); sent=$((sent + CALLS))
  flush_wait
  callgrind_row "$GW_PID" "$c" "$CALLS" "$bad" "$OUT"
done
echo "# dumps: $OUT/c*.callgrind (callgrind_annotate --inclusive=yes FILE)"
