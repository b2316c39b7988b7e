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

# Each pass has a time budget, far above what it takes (22 and 18 minutes measured here on a
# loaded 2-core machine), so that a hang still ends in pytest's summary of what failed, well
# inside CI's 90 minutes: at the budget pytest gets SIGINT, which makes it stop and report.
# TEST_PASS_BUDGET_SECONDS, when set, replaces every pass's budget.
# pytest exits 5 when it collected no test: say so, and count it as a failure only when the
# pass was meant to have tests (always here: an empty pass means a broken collection).
run_pass() {
  local name="$1" budget="${TEST_PASS_BUDGET_SECONDS:-$(($2 * 60))}"
  shift 2
  printf '\n\033[1m==> pytest: %s\033[0m\n' "$name"
  timeout --signal=INT --kill-after=120 "$budget" "$@"
  local code=$?
  case "$code" in
    0) ;;
    5) echo "test.sh: the $name pass collected no tests" >&2; failed+=("$name (no tests)") ;;
    124) failed+=("$name (stopped at its budget of $budget s)") ;;
    *) failed+=("$name (exit $code)") ;;
  esac
}

answers() {  # host port: does a TCP server accept connections there?
  "$PY" -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()' "$1" "$2" 2>/dev/null
}

# The fast tier alone (`scripts/test.sh fast [pytest args]`): the Django side's decisions
# through the in-memory sandbox backend (execution/tests/fast) and the pure policy and model
# tests. No root, no sandboxd, no browser; seconds. `make test` runs it inside both passes.
FAST_TIER=(execution/tests/fast execution/tests/test_validation.py execution/tests/test_models.py)
if [ "${1:-}" = "fast" ]; then
  shift
  run_pass "fast tier (in-memory sandboxes)" 5 \
    env -u DATABASE_URL -u REDIS_URL "$PY" -m pytest "${FAST_TIER[@]}" "$@"
  if [ ${#failed[@]} -gt 0 ]; then
    printf 'test.sh: FAILED: %s\n' "${failed[@]}" >&2
    exit 1
  fi
  echo "test.sh: the fast tier succeeded"
  exit 0
fi

# The embedded defaults: make sure nothing from the caller's shell switches them.
run_pass "SQLite + in-memory layer" 40 \
  env -u DATABASE_URL -u REDIS_URL "$PY" -m pytest atlaschat accounts execution sandboxd "$@"

if answers 127.0.0.1 5432 && answers 127.0.0.1 6379; then
  run_pass "PostgreSQL + Redis" 30 \
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
