#!/usr/bin/env bash
# Install matdx into ./.venv (Python >= 3.11).
#   --system    also Debian packages: Quantum ESPRESSO, LAMMPS, Open MPI, Slurm (needs root)
#   --ferretdb  also build FerretDB v1.24.2 (MongoDB-wire server for tests) from the Go proxy
#   --latest    the newest releases pyproject.toml's ranges allow, instead of the tested
#               versions locked in constraints.txt (to try the next versions before moving
#               the lock: README "Dependencies")
#   --extras=LIST  the optional dependency groups to install (comma-separated; default:
#               all of them, as the tests need; --extras= installs the core only, enough
#               for EMT campaigns on the embedded store, without the ~5 GB of torch)
set -euo pipefail
cd "$(dirname "$0")/.."
SYSTEM=0; FERRET=0; LATEST=0
EXTRAS="test,mpi,ml,mlip,phonons,vasp,service"
for arg in "$@"; do
  case "$arg" in
    --system) SYSTEM=1 ;;
    --ferretdb) FERRET=1 ;;
    --latest) LATEST=1 ;;
    --extras=*) EXTRAS="${arg#--extras=}" ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

if [ "$SYSTEM" = 1 ]; then
  export DEBIAN_FRONTEND=noninteractive
  if ! dpkg -s quantum-espresso lammps slurm-wlm openmpi-bin postgresql >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
      quantum-espresso quantum-espresso-data openmpi-bin \
      lammps liblammps-dev python3-lammps slurm-wlm postgresql >/dev/null
  fi
fi

if [ "$FERRET" = 1 ]; then
  BIN="${MATDX_TOOLS_DIR:-$HOME/.cache/matdx/bin}"
  if [ ! -x "$BIN/ferretdb" ] || ! "$BIN/ferretdb" --version 2>/dev/null | grep -q v1.24.2; then
    mkdir -p "$BIN"
    src=$(GOFLAGS=-mod=mod go mod download -json github.com/FerretDB/FerretDB@v1.24.2 \
          | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
    work=$(mktemp -d)
    cp -r "$src" "$work/ferretdb" && chmod -R u+w "$work/ferretdb"
    # the module proxy copy lacks the generated version file that a release build embeds
    echo v1.24.2 > "$work/ferretdb/build/version/version.txt"
    (cd "$work/ferretdb" && go build -o "$BIN/ferretdb" ./cmd/ferretdb)
    rm -rf "$work"
  fi
fi

PY="${PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "install.sh: matdx needs Python >= 3.11 ($PY is $("$PY" -V 2>&1))" >&2; exit 2; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
case "$EXTRAS" in
  *[!a-z,]*) echo "install.sh: --extras takes names separated by commas: $EXTRAS" >&2; exit 2 ;;
esac
TARGET="."
[ -n "$EXTRAS" ] && TARGET=".[$EXTRAS]"
if [ "$LATEST" = 1 ]; then
  .venv/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e "$TARGET"
else
  .venv/bin/python -m pip install -q -c constraints.txt -e "$TARGET"
fi
echo "matdx installed: $(.venv/bin/matdx --help >/dev/null && echo .venv/bin/matdx)"
