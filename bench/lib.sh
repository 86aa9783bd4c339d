# Shared by the bench scripts (sourced, not run): start a `tollgate up` built
# with the production profile (release with whole-program LTO; with PGO=1 also
# profile-guided, which is what ships: scripts/pgo-build.sh) on a temporary
# data dir and provision APIs, plans and keys through the admin API.
#
#   start_gateway PORT_BASE [command prefix...]   # sets GW_PID, GW_WORK, GW_TOKEN, GW_ADMIN, GW_URL, GW_PORTAL
#   add_api SLUG [POLICIES_JSON]                  # an API on the peers' upstream, at /SLUG
#   add_key SLUG PLAN_FIELDS_JSON                 # plan + developer + app + subscription; prints a key
#   stop_gateway                                  # TERM, wait, remove the data dirs (all started)
#
# Extra TOLLGATE_* settings pass through the environment. One worker thread
# (TOLLGATE_WORKERS=1) unless set, like each peer.

UPSTREAM=${UPSTREAM:-http://127.0.0.1:9101}
TOLLGATE_BIN=${TOLLGATE_BIN:-${CARGO_TARGET_DIR:-target}/production/tollgate}

# Builds the gateway into TOLLGATE_BIN: the production profile (about 12
# minutes from scratch), or with PGO=1 the profile-guided build that ships
# (scripts/pgo-build.sh, about 35 minutes: two builds and a training run).
build_gateway() {
  if [ "${PGO:-0}" = 1 ]; then
    TOLLGATE_BIN=$(scripts/pgo-build.sh)
  else
    cargo build --profile production --locked --bin tollgate >&2
  fi
}

start_gateway() { # PORT_BASE [prefix...]
  local base=$1; shift
  GW_WORK=$(mktemp -d)
  GW_TOKEN=bench-admin-token-$(date +%s)
  GW_ADMIN=http://127.0.0.1:$((base + 1))/admin
  GW_URL=http://127.0.0.1:$base
  GW_PORTAL=http://127.0.0.1:$((base + 80))
  TOLLGATE_WORKERS=${TOLLGATE_WORKERS:-1} TOLLGATE_DATA_DIR=$GW_WORK TOLLGATE_ADMIN_TOKEN=$GW_TOKEN \
  TOLLGATE_LOG=${TOLLGATE_LOG:-warn} TOLLGATE_GATEWAY_ADDR=127.0.0.1:$base \
  TOLLGATE_ADMIN_ADDR=127.0.0.1:$((base + 1)) TOLLGATE_PORTAL_ADDR=${GW_PORTAL#http://} \
    "$@" "$TOLLGATE_BIN" up >"$GW_WORK/out.log" 2>"$GW_WORK/err.log" &
  GW_PID=$!
  GW_PIDS+=("$GW_PID"); GW_DIRS+=("$GW_WORK")
  local i
  for i in $(seq 1 600); do
    grep -q "Press Ctrl-C" "$GW_WORK/out.log" 2>/dev/null && return 0
    kill -0 "$GW_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "gateway did not start; log:" >&2
  tail -20 "$GW_WORK/err.log" >&2
  return 1
}

GW_PIDS=()
GW_DIRS=()
stop_gateway() { # every gateway started
  local p
  # `|| true`: under `set -e` (also in an EXIT trap) a gateway that already
  # exited would end the cleanup here, leaving the rest running.
  for p in "${GW_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "${GW_DIRS[@]}"
  GW_PIDS=(); GW_DIRS=()
}

admin() { curl -sf -H "Authorization: Bearer $GW_TOKEN" -H 'content-type: application/json' "$GW_ADMIN$1" -d "$2"; }
json_field() { sed -E "s/.*\"$1\":\"([^\"]+)\".*/\1/"; }

add_api() { # SLUG [POLICIES_JSON]
  local policies=${2:-}
  admin /apis "{\"name\":\"$1\",\"slug\":\"$1\",\"base_path\":\"/$1\",\"upstreams\":[\"$UPSTREAM\"]${policies:+,\"policies\":$policies}}" >/dev/null
}

add_key() { # SLUG PLAN_FIELDS_JSON (e.g. '"included_calls":1000000000')
  local fields=${2:-} plan dev app
  plan=$(admin /plans "{\"name\":\"$1\",\"apis\":[\"$1\"]${fields:+,$fields}}" | json_field id)
  dev=$(admin /developers "{\"email\":\"$1@example.com\",\"name\":\"$1\"}" | json_field id)
  app=$(admin /apps "{\"developer_id\":\"$dev\",\"name\":\"$1\"}" | json_field id)
  admin /subscriptions "{\"app_id\":\"$app\",\"plan_id\":\"$plan\"}" >/dev/null
  admin "/apps/$app/keys" '{}' | sed -E 's/.*"key":"([^"]+)".*/\1/'
}

# The benchmark's full policy set: key auth, a rate limit and a quota set high
# enough never to refuse (usage metering is always on).
FULL_PLAN='"included_calls":1000000000,"rate_limits":[{"limit":1000000000,"window":"second"}]'

# Checks that every target in `names`/`urls`/`hdrs` (hdrs[i] may be empty)
# answers 200, waiting up to 10 s each for a new key to reach the snapshot.
expect_200() {
  local i code args
  for i in "${!names[@]}"; do
    args=(); [ -n "${hdrs[$i]:-}" ] && args=(-H "${hdrs[$i]}")
    for _ in $(seq 1 40); do
      code=$(curl -s -o /dev/null -w '%{http_code}' "${args[@]}" "${urls[$i]}")
      [ "$code" = 200 ] && break
      sleep 0.25
    done
    [ "$code" = 200 ] || { echo "${names[$i]} answers $code at ${urls[$i]}" >&2; exit 1; }
  done
}

# nginx in a temporary prefix, one worker: `start_nginx NAME PORT 'LOCATION BODY'`.
# NGINX_PREFIX (e.g. `taskset -c 1`) is put before the command; NGINX_MAIN (e.g.
# `master_process off;`) goes into the main context. Sets NGINX_PIDS.
NGINX_PIDS=()
NGINX_DIRS=()
start_nginx() {
  local name=$1 port=$2 location=$3 dir i
  dir=$(mktemp -d)
  mkdir -p "$dir/logs" "$dir/tmp"
  cat >"$dir/nginx.conf" <<CONF
${NGINX_MAIN:-}
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
  client_body_temp_path $dir/tmp/body; proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fcgi; uwsgi_temp_path $dir/tmp/uwsgi; scgi_temp_path $dir/tmp/scgi;
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  upstream bench_up {
    server ${UPSTREAM#http://};
    keepalive 64;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
  }
  server {
    listen 127.0.0.1:$port backlog=4096;
    location / { $location }
  }
}
CONF
  ${NGINX_PREFIX:-} env PATH="$PATH:/usr/sbin" nginx -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf" -g 'daemon off;' &
  NGINX_PIDS+=($!); NGINX_DIRS+=("$dir")
  # Up to 10 s: under valgrind nginx takes seconds to start.
  for i in $(seq 1 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/" && return 0; sleep 0.1; done
  echo "nginx $name did not start on :$port" >&2
  return 1
}

# The peers' upstream (../shared/bench/peers.sh): a fixed 97-byte JSON answer on
# 127.0.0.1:9101, for scripts that run without peers.sh.
start_upstream() {
  start_nginx upstream "${UPSTREAM##*:}" "default_type application/json; return 200 '{\"status\":\"ok\",\"service\":\"bench-upstream\",\"message\":\"hello from the loopback upstream\",\"n\":12345}';"
}

# nginx as a reverse proxy to the upstream, configured like peers.sh's.
start_nginx_proxy() { # PORT
  start_nginx proxy "$1" 'proxy_pass http://bench_up; proxy_http_version 1.1; proxy_set_header Connection "";'
}

stop_nginx() {
  local p
  for p in "${NGINX_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "${NGINX_DIRS[@]}"
  NGINX_PIDS=(); NGINX_DIRS=()
}

# Exactly N keep-alive calls with curl over CONNS connections at once:
# `curl_calls N CONNS URL CFG_FILE [curl options...]` prints how many did not
# answer 200.
curl_calls() {
  local n=$1 c=$2 url=$3 cfg=$4 par=()
  shift 4
  for _ in $(seq 1 "$n"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url"; done >"$cfg"
  [ "$c" -gt 1 ] && par=(-Z --parallel-max "$c")
  curl -s --no-progress-meter "${par[@]}" "$@" -w '%{http_code}\n' -K "$cfg" 2>/dev/null | grep -cv '^200$' || true
}

# Ends a callgrind window: dumps the counters of process PID into OUT (kept as
# OUT/cCONNS.callgrind) and prints "conns instructions per_call non200":
# `callgrind_row PID CONNS CALLS NON200 OUT`.
callgrind_row() {
  local pid=$1 c=$2 calls=$3 bad=$4 out=$5 dump total
  callgrind_control -d "c$c" "$pid" >/dev/null 2>&1
  dump=$(ls -t "$out"/callgrind.out* | head -1)
  total=$(awk '/^totals:/ {print $2}' "$dump")
  printf '%-8s %14s %12s %8s\n' "$c" "$total" "$((total / calls))" "$bad"
  cp "$dump" "$out/c$c.callgrind"
}

# One wrk run from CPU `CPU` (one thread): `wrk_point CPU URL CONNS SECS [HEADER]`
# prints "req/s p50_us non2xx".
wrk_point() {
  local args=(); [ -n "${5:-}" ] && args=(-H "$5")
  taskset -c "$1" wrk -t1 -c"$3" -d"$4s" --latency "${args[@]}" "$2" | awk '
    /Requests\/sec/ {rps = $2}
    /^ +50%/ {v = $2; if (v ~ /us$/) p = v + 0; else if (v ~ /ms$/) p = v * 1000; else p = v * 1000000}
    /Non-2xx/ {bad = $NF}
    END {printf "%s %.0f %d\n", rps, p, bad}'
}

# Interleaved wrk rounds over the targets in the arrays `names`, `urls` and
# `hdrs` (one header line or ""): a warm-up, then ROUNDS rounds, each target's
# throughput (-c$CONNS for DUR_LOAD s) and one-connection latency (DUR_LAT s)
# from CPU CLIENT_CPU, starting each round one target further. Appends
# "index cN|c1 req/s p50_us non2xx" lines to the file RES.
interleaved_rounds() { # RES
  local res=$1 n=${#names[@]} r k i load lat line
  for i in "${!names[@]}"; do wrk_point "$CLIENT_CPU" "${urls[$i]}" "$CONNS" 2 "${hdrs[$i]}" >/dev/null; done
  for r in $(seq 1 "$ROUNDS"); do
    line=""
    for k in $(seq 0 $((n - 1))); do
      i=$(( (k + r - 1) % n ))
      load=$(wrk_point "$CLIENT_CPU" "${urls[$i]}" "$CONNS" "$DUR_LOAD" "${hdrs[$i]}")
      lat=$(wrk_point "$CLIENT_CPU" "${urls[$i]}" 1 "$DUR_LAT" "${hdrs[$i]}")
      echo "$i c$CONNS $load" >>"$res"; echo "$i c1 $lat" >>"$res"
      line+="${names[$i]}=${load%% *} "
    done
    echo "round $r/$ROUNDS: $line" >&2
  done
}

# Medians per target of interleaved_rounds' file RES: one line
# "index req/s_c$CONNS p50_us_c1 bad" per target (bad: 1 if any answer was not 2xx).
round_medians() { # RES
  awk -v conns="c$CONNS" '
    function med(k, n,   i, j, t, v) { for (i = 1; i <= n; i++) v[i] = val[k, i]
      for (i = 2; i <= n; i++) { t = v[i]; j = i - 1; while (j > 0 && v[j] > t) { v[j+1] = v[j]; j-- } v[j+1] = t }
      return (n % 2) ? v[(n + 1) / 2] : (v[n/2] + v[n/2 + 1]) / 2 }
    { k = $1 SUBSEP $2; c[k]++; val[k, c[k]] = $3; k2 = $1 SUBSEP $2 "p"; c[k2]++; val[k2, c[k2]] = $4
      if ($5 > 0) bad[$1] = 1; if ($1 > last) last = $1 }
    END { for (i = 0; i <= last; i++)
      printf "%d %.0f %.0f %d\n", i, med(i SUBSEP conns, c[i SUBSEP conns]), med(i SUBSEP "c1p", c[i SUBSEP "c1p"]), bad[i] }' "$1"
}
