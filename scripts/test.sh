#!/usr/bin/env bash
# `make test` (after ruff): the whole pytest suite on the embedded defaults (SQLite, the
# in-memory channel layer), then the Django apps again on PostgreSQL + Redis when both
# answer on 127.0.0.1 (they do on CI's machine). Fails when any pass fails. Extra arguments
# go to both pytest runs (e.g. `scripts/test.sh -x -k jwt`).
set -uo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
POSTGRES_URL="postgres://postgres@127.0.0.1:5432/atlaschat"
REDIS_TEST_URL="redis://127.0.0.1:6379/0"
failed=()

# pytest exits 5 when it collected no test: say so, and count it as a failure only when the
# pass was meant to have tests (always here: an empty pass means a broken collection).
run_pass() {
  local name="$1"
  shift
  printf '\n\033[1m==> pytest: %s\033[0m\n' "$name"
  "$@"
  local code=$?
  case "$code" in
    0) ;;
    5) echo "test.sh: the $name pass collected no tests" >&2; failed+=("$name (no tests)") ;;
    *) failed+=("$name (exit $code)") ;;
  esac
}

answers() {  # host port: does a TCP server accept connections there?
  "$PY" -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()' "$1" "$2" 2>/dev/null
}

# The embedded defaults: make sure nothing from the caller's shell switches them.
run_pass "SQLite + in-memory layer" \
  env -u DATABASE_URL -u REDIS_URL "$PY" -m pytest atlaschat accounts execution sandboxd "$@"

if answers 127.0.0.1 5432 && answers 127.0.0.1 6379; then
  run_pass "PostgreSQL + Redis" \
    env DATABASE_URL="$POSTGRES_URL" REDIS_URL="$REDIS_TEST_URL" \
    "$PY" -m pytest atlaschat accounts execution "$@"
else
  echo "test.sh: PostgreSQL (127.0.0.1:5432) or Redis (127.0.0.1:6379) not reachable: skipped that pass" >&2
fi

if [ ${#failed[@]} -gt 0 ]; then
  printf 'test.sh: FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "test.sh: every pass succeeded"
