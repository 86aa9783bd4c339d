#!/usr/bin/env bash
# Memory per idle client connection: N connections each make one call (full
# policy set for Tollgate) and stay open, kept alive; the serving process's
# resident memory before and after, per connection. For each gateway binary
# given (default: the production-profile build), and nginx as a reverse proxy (its one
# worker) for comparison. N must stay under `ulimit -n` and nginx's 4,096
# worker connections.
#
#   bench/idle-memory.sh [BINARY...]     # N=3000; about 1 minute
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
N=${N:-3000}
export PATH="$PATH:/usr/sbin"
[ $# -gt 0 ] || { [ -n "${SKIP_BUILD:-}" ] || build_gateway; set -- "$TOLLGATE_BIN"; }

trap 'stop_gateway; stop_nginx' EXIT
start_upstream
start_nginx_proxy 9102
worker=$(pgrep -P "${NGINX_PIDS[1]}" | head -1)

echo "# resident memory per idle kept-alive client connection; $N connections, one call each"
printf "%-28s %12s %12s %10s\n" target "KiB before" "KiB after" "KiB/conn"
python3 bench/idle_connections.py 127.0.0.1:9102 "$worker" "$N" / "" nginx
base=18900
for bin in "$@"; do
  TOLLGATE_BIN=$bin start_gateway "$base"
  add_api bench
  key=$(add_key bench "$FULL_PLAN")
  python3 bench/idle_connections.py "127.0.0.1:$base" "$GW_PID" "$N" /bench/ "x-api-key: $key" "$(basename "$bin")"
  base=$((base + 100))
done
