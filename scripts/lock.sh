#!/usr/bin/env bash
# Write constraints.txt anew from ./.venv: run after the tests passed in that environment
# (typically after `bash scripts/install.sh --latest` and `bash scripts/test.sh`).
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# The tested environment: every package of a matdx installation with all extras, at the"
  echo "# version the test suite passed with (Python 3.11, Linux x86_64). scripts/install.sh installs"
  echo "# with it (pip -c); scripts/lock.sh writes it anew. See README \"Dependencies\"."
  .venv/bin/python -m pip freeze --exclude-editable
} > constraints.txt.tmp
mv constraints.txt.tmp constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) packages locked"
