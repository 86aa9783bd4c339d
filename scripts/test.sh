#!/usr/bin/env bash
# Tollgate's whole test suite, on a fresh Debian machine or a developer's.
#
# Installs (from Debian's packages) and starts what the tests need when it is
# missing: ClickHouse, PostgreSQL, Redis, curl, openssl (JWT test keys), Node.js
# (the local OpenID Connect provider of the portal's sign-in tests), Chromium
# and chromedriver (the portal's browser tests). Then runs
# the format check, clippy with warnings denied, and every test: each
# end-to-end case runs on SQLite + the embedded usage store and on
# PostgreSQL + ClickHouse.
#
# Environment (optional): TOLLGATE_TEST_DATABASE_URL (a PostgreSQL server the
# tests may create databases on), TOLLGATE_TEST_CLICKHOUSE_URL.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[test] %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

command -v cargo >/dev/null || { log "cargo not found: install Rust 1.95 with rustup first"; exit 1; }

# ---- packages -------------------------------------------------------------
need=()
command -v curl >/dev/null || need+=(curl)
command -v openssl >/dev/null || need+=(openssl)
command -v clickhouse-server >/dev/null || need+=(clickhouse-server clickhouse-client)
command -v psql >/dev/null || [ -d /etc/postgresql ] || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  log "installing from Debian: ${need[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

wait_for() { # description, seconds, command...
  local what=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "$what did not come up within ${secs}s"; return 1
}

# ---- PostgreSQL -------------------------------------------------------------
PG_URL=${TOLLGATE_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  log "starting PostgreSQL"
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start || true
  wait_for PostgreSQL 30 pg_isready -q -h 127.0.0.1 -p 5432
fi
if ! psql "$PG_URL" -Atc 'SELECT 1' >/dev/null 2>&1 && [ -z "${TOLLGATE_TEST_DATABASE_URL:-}" ]; then
  # A fresh install asks for a password over TCP: give the postgres role one for the tests.
  log "setting a password for the postgres role (test machine)"
  $SUDO runuser -u postgres -- psql -qc "ALTER USER postgres PASSWORD 'tollgate-tests'"
  PG_URL=postgres://postgres:tollgate-tests@127.0.0.1:5432/postgres
fi
psql "$PG_URL" -Atc 'SELECT 1' >/dev/null || { log "cannot connect to PostgreSQL at $PG_URL"; exit 1; }
export TOLLGATE_TEST_DATABASE_URL=$PG_URL

# ---- Redis ------------------------------------------------------------------
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  log "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
  wait_for Redis 10 redis-cli -h 127.0.0.1 -p 6379 ping
fi

export TOLLGATE_TEST_REDIS_URL=${TOLLGATE_TEST_REDIS_URL:-redis://127.0.0.1:6379}

# ---- ClickHouse -------------------------------------------------------------
CH_URL=${TOLLGATE_TEST_CLICKHOUSE_URL:-http://127.0.0.1:8123}
if ! curl -sf "$CH_URL/?query=SELECT%201" >/dev/null 2>&1; then
  log "starting ClickHouse"
  mkdir -p target
  nohup clickhouse-server --config-file=/etc/clickhouse-server/config.xml >target/clickhouse-server.log 2>&1 &
  wait_for ClickHouse 90 curl -sf "$CH_URL/?query=SELECT%201"
fi
log "ClickHouse $(curl -s "$CH_URL/?query=SELECT%20version()")"
export TOLLGATE_TEST_CLICKHOUSE_URL=$CH_URL

# ---- the test OpenID Connect provider (npm) ---------------------------------
if [ ! -d testkit/oidc/node_modules/oauth2-mock-server ]; then
  log "installing the test OpenID Connect provider (oauth2-mock-server from npm)"
  npm ci --prefix testkit/oidc --no-audit --no-fund --loglevel=error >/dev/null
fi

# ---- checks and tests -------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy (warnings denied)"
cargo clippy --workspace --all-targets --locked -- -D warnings
log "cargo test"
mkdir -p target
cargo test --workspace --locked 2>&1 | tee target/test-output.log
# One closing line with the totals over every test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' target/test-output.log
