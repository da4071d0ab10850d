#!/usr/bin/env bash
# One entry point on a fresh machine: builds .venv (torch pinned first, so pip never
# pulls CUDA), installs aha with its test extras, then runs what you asked for.
#   bash scripts/dev.sh test        # the test suite (what CI runs)
#   bash scripts/dev.sh setup       # only the environment
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AHA_VENV:-.venv}
PY="$VENV/bin/python"

setup() {
  [ -x "$PY" ] || python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q torch==2.13.0
  "$PY" -m pip install -q -c constraints.txt ".[test]"
  # Installed as a wheel (not editable), so tests see exactly what users get.
  "$PY" -m pip install -q --no-deps --force-reinstall .
  rm -rf build aha_recipes.egg-info  # build leftovers would shadow the installed metadata
}

case "${1:-test}" in
  setup) setup ;;
  test)
    setup
    export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    shift || true
    "$PY" -m pytest -q "$@"
    "$PY" benchmarks/rewards.py --quick > /dev/null  # the benchmark must keep running
    ;;
  *) echo "usage: bash scripts/dev.sh [setup|test [pytest args]]" >&2; exit 2 ;;
esac
