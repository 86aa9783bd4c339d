#!/usr/bin/env bash
# Builds the shipped binary with profile-guided optimisation (PGO): the
# production profile built once with instrumentation, run under a training
# load, and built again with the counts it gathered, so the compiler lays out
# and inlines the hot paths (the gateway's call path first) as they run. The
# result must start and answer calls, with one worker and with two, before it
# is copied to OUT.
#
#   scripts/pgo-build.sh            # ~35 minutes on two cores; prints the binary's path last
#   OUT=/usr/local/bin/tollgate scripts/pgo-build.sh
#   TRAIN_SECS=30 scripts/pgo-build.sh   # longer keyed load at 50 connections (default 15 s)
#
# Needs: rustup's llvm-tools component (installed here if missing), nginx and
# wrk (the training's upstream and load; `apt-get install nginx wrk`), curl.
#
# The training (train() below) runs `tollgate up` twice, with one worker and
# with two, on a fresh data dir each, with the usage writer on (the embedded
# store): key-authenticated calls with a rate limit and a quota at 50
# connections and at one, keyless calls, refused calls (no key, a wrong key,
# no route), a POST with a small body, the admin API (provisioning) and the
# portal's public pages. Code the training does not run is treated as cold
# and built for size; it still works the same, only its speed is not tuned.
#
# The build dirs are target/pgo-generate and target/pgo-use (RUSTFLAGS apply
# only to the target's crates, not to build scripts and proc-macros); the
# plain `--profile production` build in target/production is not touched.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="$PATH:/usr/sbin"

for tool in nginx wrk curl; do
  command -v "$tool" >/dev/null || { echo "pgo-build: $tool is needed for the training run (apt-get install nginx wrk curl)" >&2; exit 2; }
done
HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA=$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata
if [ ! -x "$PROFDATA" ]; then
  rustup component add llvm-tools >&2
fi
[ -x "$PROFDATA" ] || { echo "pgo-build: no llvm-profdata at $PROFDATA (rustup component add llvm-tools)" >&2; exit 2; }

PGO_DIR=$PWD/target/pgo
OUT=${OUT:-$PGO_DIR/tollgate}
rm -rf "$PGO_DIR/raw"
mkdir -p "$PGO_DIR/raw"

echo "pgo-build: 1/4 instrumented build" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$PGO_DIR/raw" \
  cargo build --profile production --locked --bin tollgate --target "$HOST" --target-dir target/pgo-generate >&2

# Calls with wrk (one thread).
load() { # URL CONNS SECS [HEADER]
  local args=(); [ -n "${4:-}" ] && args=(-H "$4")
  wrk -t1 -c"$2" -d"$3s" "${args[@]}" "$1" >/dev/null
}

# Starts TOLLGATE_BIN with WORKERS worker threads, provisions a keyed API
# (sets `key`) and a keyless one, and waits until both answer 200; fails if
# they do not (a training run of refused calls would tune the wrong path).
# LLVM_PROFILE_FILE matters only to the instrumented build.
serve() { # WORKERS
  LLVM_PROFILE_FILE=$PGO_DIR/raw/tollgate-%p-%m.profraw TOLLGATE_WORKERS=$1 start_gateway "$((18700 + $1 * 100))"
  add_api train
  add_api open '{"keyless":true}'
  key=$(add_key train "$FULL_PLAN")
  names=(train open); urls=("$GW_URL/train/" "$GW_URL/open/"); hdrs=("x-api-key: $key" "")
  expect_200
}

train() { # WORKERS
  local key
  serve "$1"
  load "$GW_URL/train/" 50 "${TRAIN_SECS:-15}" "x-api-key: $key"
  load "$GW_URL/train/" 1 5 "x-api-key: $key"
  load "$GW_URL/open/" 50 5
  load "$GW_URL/train/" 10 2
  load "$GW_URL/train/" 10 2 "x-api-key: tg_live_not_a_key"
  load "$GW_URL/nowhere/" 10 2
  for _ in $(seq 1 200); do
    curl -s -o /dev/null -H "x-api-key: $key" -H 'content-type: application/json' \
      -d '{"n":1}' "$GW_URL/train/items"
  done
  for page in / /apis /apis/train /login /signup; do
    curl -s -o /dev/null "$GW_PORTAL$page"
  done
  curl -s -o /dev/null -H "Authorization: Bearer $GW_TOKEN" "$GW_ADMIN/usage/summary"
  stop_gateway
}

echo "pgo-build: 2/4 training run" >&2
trap 'stop_gateway; stop_nginx' EXIT
TOLLGATE_BIN=target/pgo-generate/$HOST/production/tollgate
# The upstream serves the training and, after the last build, the check.
start_upstream
train 1
train 2
raw=$(find "$PGO_DIR/raw" -name '*.profraw' | wc -l)
[ "$raw" -ge 2 ] || { echo "pgo-build: the training wrote $raw profiles, expected one per run" >&2; exit 1; }

echo "pgo-build: 3/4 merging $raw profiles" >&2
rm -f "$PGO_DIR"/*.profdata
"$PROFDATA" merge -o "$PGO_DIR/merged.profdata" "$PGO_DIR/raw"
# Named by its contents: cargo rebuilds when RUSTFLAGS change, not when a
# file they name does, and a crate built with an older profile would keep it.
profile=$PGO_DIR/tollgate-$(sha256sum "$PGO_DIR/merged.profdata" | cut -c1-16).profdata
mv "$PGO_DIR/merged.profdata" "$profile"

echo "pgo-build: 4/4 optimised build" >&2
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$profile" \
  cargo build --profile production --locked --bin tollgate --target "$HOST" --target-dir target/pgo-use >&2

# A binary that cannot serve must not be shipped: it is checked where it was
# built, and only then copied to OUT.
echo "pgo-build: checking that the binary serves calls" >&2
TOLLGATE_BIN=target/pgo-use/$HOST/production/tollgate
for workers in 1 2; do
  serve "$workers"
  load "$GW_URL/train/" 10 1 "x-api-key: $key"
  expect_200
  stop_gateway
done
stop_nginx
mkdir -p "$(dirname "$OUT")"
cp "$TOLLGATE_BIN" "$OUT"
echo "$OUT"
