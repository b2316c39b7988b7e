#!/usr/bin/env bash
# `make run`: start AtlasChat on this machine. `make setup` has already built .venv,
# var/sandbox-env and the front-end packages. This script:
#   1. keeps a generated SECRET_KEY in .secret_key and a sandboxd API key in
#      var/sandboxd-api-key (both 0600, both ignored by git) unless they are given;
#   2. migrates, collects static files, makes sure the admin account exists (printing its
#      password the first time only);
#   3. starts sandboxd in the background, unless E2B_API_KEY selects E2B's cloud or a
#      sandboxd already answers at SANDBOXD_URL; waits for it and stops it on exit;
#   4. serves the site with daphne on HOST:PORT (default 127.0.0.1:8000) — WORKERS daphne
#      processes sharing one listening socket when WORKERS > 1 (which needs REDIS_URL, and
#      DATABASE_URL for PostgreSQL) — and every 5 minutes releases the sandboxes of idle
#      threads (manage.py reap_sandboxes);
#   5. keeps the web workers' Prometheus metrics in PROMETHEUS_MULTIPROC_DIR (var/prometheus),
#      emptied at each start.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-8000}"
WORKERS="${WORKERS:-1}"
VAR_DIR="${ATLASCHAT_VAR_DIR:-var}"
DEFAULT_SANDBOXD_URL="http://127.0.0.1:49982"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'run: %s\n' "$*" >&2; exit 1; }

[ -x "$PY" ] || die ".venv is missing: start AtlasChat with \`make run\`, which sets it up first"
case "$WORKERS" in
  '' | *[!0-9]* | 0) die "WORKERS=$WORKERS: give a number of web worker processes (1 or more)" ;;
esac
# Live output crosses processes only through Redis; SQLite serialises every writer.
if [ "$WORKERS" -gt 1 ]; then
  [ -n "${REDIS_URL:-}" ] || die "WORKERS=$WORKERS needs REDIS_URL: the in-memory channel layer lives inside one process"
  [ -n "${DATABASE_URL:-}" ] || echo "run: WORKERS=$WORKERS on SQLite works but serialises writes; set DATABASE_URL for PostgreSQL" >&2
fi
mkdir -p "$VAR_DIR/log"

# Prometheus metrics of every web worker, merged by /metrics (execution/monitoring/metrics.py):
# each process writes its samples here. Emptied at each start: the files of processes that
# are gone would otherwise be counted again on top of the new ones.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$VAR_DIR/prometheus}"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -type f -delete

# A secret kept in a file readable by this user only, created once with a random value.
secret_from_file() {
  local file="$1"
  if [ ! -s "$file" ]; then
    (umask 077 && "$PY" -c "import secrets; print(secrets.token_urlsafe(50))" >"$file")
  fi
  cat "$file"
}

if [ -z "${SECRET_KEY:-}" ]; then
  SECRET_KEY="$(secret_from_file .secret_key)"
  export SECRET_KEY
fi

# Where the site is reachable: a specific address is allowed as a host name; 0.0.0.0 / ::
# (all interfaces) needs ALLOWED_HOSTS to name the public host.
if [ -z "${ALLOWED_HOSTS:-}" ]; then
  case "$HOST" in
    127.0.0.1 | localhost | ::1) ;;
    0.0.0.0 | ::) echo "run: HOST=$HOST: set ALLOWED_HOSTS to the name clients use" >&2 ;;
    *) export ALLOWED_HOSTS="127.0.0.1,localhost,[::1],$HOST" ;;
  esac
fi
case "$HOST" in
  *:*) SITE_URL="http://[$HOST]:$PORT/" ;;
  *) SITE_URL="http://$HOST:$PORT/" ;;
esac

say "Preparing the database and static files"
"$PY" manage.py migrate --noinput >"$VAR_DIR/log/migrate.log" \
  || { cat "$VAR_DIR/log/migrate.log" >&2; die "migrate failed"; }
"$PY" manage.py collectstatic --noinput >"$VAR_DIR/log/collectstatic.log" \
  || { cat "$VAR_DIR/log/collectstatic.log" >&2; die "collectstatic failed"; }
# Runs left "running" by a previous server process that stopped mid-run are marked error.
"$PY" manage.py recover_executions
"$PY" manage.py ensure_admin --url "$SITE_URL"

# --- the sandbox server ---------------------------------------------------------------------
children=()
stop_children() {
  local pid
  for pid in "${children[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${children[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
trap stop_children EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sandboxd_answers() {
  "$PY" - "$1" <<'EOF' >/dev/null 2>&1
import sys
import urllib.request

with urllib.request.urlopen(sys.argv[1].rstrip("/") + "/health", timeout=2) as response:
    sys.exit(0 if response.status == 200 else 1)
EOF
}

if [ -n "${E2B_API_KEY:-}" ]; then
  say "E2B_API_KEY is set: code runs in E2B${E2B_DOMAIN:+ at $E2B_DOMAIN}, no local sandboxd"
else
  export SANDBOXD_URL="${SANDBOXD_URL:-$DEFAULT_SANDBOXD_URL}"
  if [ -z "${SANDBOXD_API_KEY:-}" ]; then
    SANDBOXD_API_KEY="$(secret_from_file "$VAR_DIR/sandboxd-api-key")"
    export SANDBOXD_API_KEY
  fi
  if sandboxd_answers "$SANDBOXD_URL"; then
    say "Using the sandboxd already running at $SANDBOXD_URL"
  elif [ -e sandboxd/__main__.py ]; then
    # Start one where SANDBOXD_URL says, so Django and sandboxd agree on the address.
    read -r sandboxd_host sandboxd_port < <("$PY" -c '
import sys
from urllib.parse import urlsplit
url = urlsplit(sys.argv[1])
print(url.hostname or "127.0.0.1", url.port or 49982)' "$SANDBOXD_URL")
    case "$sandboxd_host" in
      127.* | localhost | ::1) ;;
      *) die "no sandboxd answers at SANDBOXD_URL=$SANDBOXD_URL, and it is not a loopback address to start one on" ;;
    esac
    say "Starting sandboxd on $SANDBOXD_URL (log: $VAR_DIR/log/sandboxd.log)"
    sandboxd_out="$VAR_DIR/log/sandboxd.out"
    : >"$sandboxd_out"
    # The API key reaches sandboxd through SANDBOXD_API_KEY (exported above), not argv,
    # where every local user could read it with ps.
    # Its log rotates itself (--log-file: 5 files of 10 MiB); stderr keeps only what comes
    # before logging starts (a bad option) and crash dumps.
    "$PY" -m sandboxd serve --host "$sandboxd_host" --port "$sandboxd_port" \
      --state-dir "$VAR_DIR/sandboxd" --log-file "$VAR_DIR/log/sandboxd.log" \
      >"$sandboxd_out" 2>"$VAR_DIR/log/sandboxd.err" &
    children+=("$!")
    # It prints one line when it is ready; give up when it exits or after a minute.
    for _ in $(seq 1 600); do
      grep -q "^sandboxd listening on " "$sandboxd_out" && break
      kill -0 "${children[-1]}" 2>/dev/null || {
        tail -n 30 "$VAR_DIR/log/sandboxd.err" "$VAR_DIR/log/sandboxd.log" >&2 2>/dev/null
        die "sandboxd did not start (see $VAR_DIR/log/sandboxd.log; \`$PY -m sandboxd doctor\` tells why)"
      }
      sleep 0.1
    done
    grep -q "^sandboxd listening on " "$sandboxd_out" || die "sandboxd did not become ready in 60 s"
  else
    echo "run: sandboxd is not in this checkout yet: pages work, running code does not" >&2
  fi
fi

# Threads keep a warm sandbox between runs; every 5 minutes, those idle for longer than
# SANDBOX_IDLE_SECONDS have theirs killed (their files and packages come back on the next run).
(
  # Sleep in the background and wait for it, so a TERM ends the wait and the sleep at once.
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  while :; do
    sleep 300 &
    sleeper=$!
    wait "$sleeper"
    reap_log="$VAR_DIR/log/reap_sandboxes.log"
    # Rotated by size like sandboxd's log: one old file of at most 10 MiB is kept.
    if [ "$(stat -c %s "$reap_log" 2>/dev/null || echo 0)" -gt 10485760 ]; then
      mv -f "$reap_log" "$reap_log.1"
    fi
    "$PY" manage.py reap_sandboxes >>"$reap_log" 2>&1 || true
  done
) &
children+=("$!")

# --- the web server ---------------------------------------------------------------------------
if [ "$WORKERS" -gt 1 ]; then
  say "AtlasChat is serving on $SITE_URL with $WORKERS workers (Ctrl-C to stop)"
  "$PY" scripts/serve_workers.py "$HOST" "$PORT" "$WORKERS" &
else
  say "AtlasChat is serving on $SITE_URL (Ctrl-C to stop)"
  "$PY" -m daphne --bind "$HOST" --port "$PORT" atlaschat.asgi:application &
fi
children+=("$!")
# Wait for daphne; if sandboxd dies first, stop too rather than serve a site that cannot run code.
wait -n "${children[@]}" || true
die "a server process stopped (daphne's messages are above; sandboxd's in $VAR_DIR/log/sandboxd.log)"
