#!/usr/bin/env bash
# Start (or stop) the servers the tests use, on loopback:
#   FerretDB v1.24.2 with its SQLite backend on 127.0.0.1:${MATDX_FERRET_PORT:-27027}.
# Writes the environment for the tests to .ci/services.env.
set -euo pipefail
cd "$(dirname "$0")/.."
ACTION="${1:-start}"
STATE="${MATDX_SERVICES_DIR:-/tmp/matdx-services}"
PORT="${MATDX_FERRET_PORT:-27027}"
BIN="${MATDX_TOOLS_DIR:-$HOME/.cache/matdx/bin}"
mkdir -p "$STATE"

ferret_up() { .venv/bin/python - "$PORT" <<'PY'
import sys, pymongo
try:
    pymongo.MongoClient(f"mongodb://127.0.0.1:{sys.argv[1]}/", serverSelectionTimeoutMS=500).admin.command("ping")
except Exception:
    sys.exit(1)
PY
}

case "$ACTION" in
  start)
    if ! ferret_up; then
      mkdir -p "$STATE/ferretdb-data"
      nohup "$BIN/ferretdb" --handler=sqlite --sqlite-url="file:$STATE/ferretdb-data/" \
        --listen-addr="127.0.0.1:$PORT" --telemetry=disable --log-level=warn --debug-addr=- \
        --state-dir="$STATE" >"$STATE/ferretdb.log" 2>&1 &
      echo $! > "$STATE/ferretdb.pid"
      for _ in $(seq 1 50); do ferret_up && break; sleep 0.2; done
      ferret_up || { echo "FerretDB did not start:"; cat "$STATE/ferretdb.log"; exit 1; }
    fi
    echo "FerretDB on 127.0.0.1:$PORT"
    {
      echo "export MATDX_TEST_DB_URI=mongodb://127.0.0.1:$PORT/"
      echo "export MATDX_FERRETDB_BIN=$BIN/ferretdb"
      echo "export MATDX_SERVICES_DIR=$STATE"
    } > .ci/services.env
    ;;
  stop)
    [ -f "$STATE/ferretdb.pid" ] && kill "$(cat "$STATE/ferretdb.pid")" 2>/dev/null || true
    ;;
  *) echo "services.sh: start or stop" >&2; exit 2 ;;
esac
