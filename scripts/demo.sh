#!/usr/bin/env bash
# Install matdx and run the demo campaign on the embedded store (no database server):
# generate -> deduplicate -> FireWorks -> EMT -> store -> rank, then export and plot.
set -euo pipefail
cd "$(dirname "$0")/.."
CAMPAIGN="${1:-workflows/emt_alloys.yaml}"
OUT="${MATDX_DEMO_OUT:-out}"
# the core only: EMT on the embedded store needs no optional group (the tests' set-up,
# scripts/test.sh, installs them all into the same .venv)
bash scripts/install.sh --extras=
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
name=$(.venv/bin/python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["name"])' "$CAMPAIGN")
mkdir -p "$OUT"
.venv/bin/matdx run "$CAMPAIGN"
.venv/bin/matdx status "$name"
.venv/bin/matdx results "$name" --top 20
.venv/bin/matdx export "$name" --format parquet -o "$OUT/$name.parquet"
.venv/bin/matdx export "$name" --format extxyz -o "$OUT/$name.extxyz"
.venv/bin/matdx plot "$name" hull -o "$OUT/$name-hull.png"
echo "demo done: results in $OUT/"
