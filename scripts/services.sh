#!/usr/bin/env bash
# Start (or stop) the servers the tests use, on loopback:
#   FerretDB v1.24.2 on 127.0.0.1:${MATDX_FERRET_PORT:-27027}, with the backend
#   ${MATDX_FERRET_BACKEND:-sqlite}:
#     postgresql  Debian's PostgreSQL 15 on 127.0.0.1:${MATDX_PG_PORT:-5433} (a cluster of
#                 its own under the state directory, run by the postgres user when started
#                 as root; synchronous_commit off, as a MongoDB server acknowledges a write
#                 before its journal is flushed)
#                 (FerretDB passes the credentials of a PLAIN login on to PostgreSQL, so
#                 a user of a test's URI must exist there as a role)
#     sqlite      FerretDB's SQLite backend (no other server; every query decodes and
#                 filters the documents in FerretDB; credentials are not checked)
# Writes the environment for the tests to .ci/services.env.
set -euo pipefail
cd "$(dirname "$0")/.."
ACTION="${1:-start}"
STATE="${MATDX_SERVICES_DIR:-/tmp/matdx-services}"
PORT="${MATDX_FERRET_PORT:-27027}"
BACKEND="${MATDX_FERRET_BACKEND:-sqlite}"
PG_PORT="${MATDX_PG_PORT:-5433}"
BIN="${MATDX_TOOLS_DIR:-$HOME/.cache/matdx/bin}"
PG_BIN="${MATDX_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
PG_DATA="$STATE/pgdata"
mkdir -p "$STATE"

ferret_up() { .venv/bin/python - "$PORT" <<'PY'
import sys, pymongo
try:
    pymongo.MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/", serverSelectionTimeoutMS=500).admin.command("ping")
except Exception:
    sys.exit(1)
PY
}

# PostgreSQL refuses to run as root: as root, its commands run as the postgres user
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

pg_start() {
  [ -x "$PG_BIN/pg_ctl" ] || { echo "services.sh: PostgreSQL not found (install.sh --system installs it)" >&2; exit 1; }
  if [ ! -f "$PG_DATA/PG_VERSION" ]; then
    mkdir -p "$PG_DATA"
    [ "$(id -u)" = 0 ] && chown postgres: "$PG_DATA"
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; then
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -w -l "$PG_DATA/server.log" start -o \
      "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DATA -c synchronous_commit=off" >/dev/null
  fi
  as_pg "$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname='ferretdb'" | grep -q 1 \
    || as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres ferretdb
}

case "$ACTION" in
  start)
    case "$BACKEND" in
      postgresql)
        pg_start
        HANDLER=(--handler=postgresql --postgresql-url="postgres://postgres@127.0.0.1:$PG_PORT/ferretdb") ;;
      sqlite)
        mkdir -p "$STATE/ferretdb-data"
        HANDLER=(--handler=sqlite --sqlite-url="file:$STATE/ferretdb-data/") ;;
      *) echo "services.sh: MATDX_FERRET_BACKEND is postgresql or sqlite, not $BACKEND" >&2; exit 2 ;;
    esac
    if ! ferret_up; then
      nohup "$BIN/ferretdb" "${HANDLER[@]}" \
        --listen-addr="127.0.0.1:$PORT" --telemetry=disable --log-level=warn --debug-addr=- \
        --state-dir="$STATE" >"$STATE/ferretdb.log" 2>&1 &
      echo $! > "$STATE/ferretdb.pid"
      for _ in $(seq 1 50); do ferret_up && break; sleep 0.2; done
      ferret_up || { echo "FerretDB did not start:"; cat "$STATE/ferretdb.log"; exit 1; }
    fi
    echo "FerretDB ($BACKEND) on 127.0.0.1:$PORT"
    {
      echo "export MATDX_TEST_DB_URI=mongodb://127.0.0.1:$PORT/"
      echo "export MATDX_FERRETDB_BIN=$BIN/ferretdb"
      echo "export MATDX_SERVICES_DIR=$STATE"
    } > .ci/services.env
    ;;
  stop)
    [ -f "$STATE/ferretdb.pid" ] && kill "$(cat "$STATE/ferretdb.pid")" 2>/dev/null || true
    if [ -f "$PG_DATA/PG_VERSION" ]; then
      as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true
    fi
    ;;
  *) echo "services.sh: start or stop" >&2; exit 2 ;;
esac
