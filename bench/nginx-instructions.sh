#!/usr/bin/env bash
# Instructions per call of nginx as the benchmark's reverse proxy, counted by
# callgrind the way bench/gateway-instructions.sh counts Tollgate's: user-space
# instructions of the proxy process for exactly CALLS keep-alive calls with
# curl, between zeroing and dumping the counters. The reference for what the
# gateway's own work per call is measured against.
#
# Starts the peers' nginx upstream on 127.0.0.1:9101 and, in front of it, nginx
# configured as peers.sh's proxy (a keep-alive upstream pool, HTTP/1.1 to the
# upstream) with one process (`master_process off`, so callgrind sees the one
# that serves) under `valgrind --tool=callgrind`.
#
#   bench/nginx-instructions.sh                  # ~1 minute; CALLS=20000 CONNS="1 50"
#   PORT=19102 UPSTREAM=http://127.0.0.1:9111 bench/nginx-instructions.sh   # other ports
#
# The dumps stay in OUT (default: a temporary dir, printed) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
CALLS=${CALLS:-20000}
CONNS=${CONNS:-"1 50"}
PORT=${PORT:-18502}
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }

start_upstream
trap stop_nginx EXIT
NGINX_MAIN='master_process off;' \
  NGINX_PREFIX="valgrind -q --tool=callgrind --trace-children=yes --instr-atstart=no --callgrind-out-file=$OUT/callgrind.out" \
  start_nginx_proxy "$PORT"
pid=${NGINX_PIDS[-1]}
url=http://127.0.0.1:$PORT/

callgrind_control -i on "$pid" >/dev/null 2>&1
echo "# instructions per call (callgrind, user space); $CALLS calls per row; $(nginx -v 2>&1) as a reverse proxy, one process"
printf '%-8s %14s %12s %8s\n' conns instructions per_call non200
for c in $CONNS; do
  # warm up (connections to the upstream, code paths)
  curl_calls 2000 "$c" "$url" "$OUT/curl.cfg" >/dev/null
  callgrind_control -z "$pid" >/dev/null 2>&1
  bad=$(curl_calls "$CALLS" "$c" "$url" "$OUT/curl.cfg")
  callgrind_row "$pid" "$c" "$CALLS" "$bad" "$OUT"
done
echo "# dumps: $OUT/c*.callgrind (callgrind_annotate --inclusive=yes FILE)"
