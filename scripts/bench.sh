#!/usr/bin/env bash
# `make bench`: every bench/bench_*.py through bench/run.py (arguments pick modules by name,
# e.g. `bash scripts/bench.sh sandboxd`). Results land in bench/results/<name>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python bench/run.py "$@"
