#!/usr/bin/env bash
# Installs the front-end packages of package.json (exact versions from package-lock.json) into
# node_modules/, from which Django serves each package's built files as static/vendor/<package>/
# (FRONTEND_VENDOR_DIRS in atlaschat/settings.py). No CDN at run time, nothing vendored by hand.
# Idempotent: does nothing when node_modules matches the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."

# npm writes node_modules/.package-lock.json on every install; if it is newer than both
# manifests, what is installed is what they ask for.
marker="node_modules/.package-lock.json"
if [ -e "$marker" ] && [ "$marker" -nt package-lock.json ] && [ "$marker" -nt package.json ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "setup-frontend: npm is needed (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
# --ignore-scripts: no package's install script runs on the host.
npm ci --ignore-scripts --no-audit --no-fund --silent
touch "$marker"
