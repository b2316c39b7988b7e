#!/usr/bin/env bash
# Installs the native esbuild binary (npm package @esbuild/linux-x64, no install scripts) into
# var/sandbox-node/, which sandboxd binds read-only into every sandbox at /opt/sandboxd/node so
# the TypeScript kernel can transpile without a type-check pass. The platform package is used
# directly: the `esbuild` JS shim costs ~30 ms more per run. Idempotent; quiet when done.
set -euo pipefail
cd "$(dirname "$0")/.."

ESBUILD_VERSION="0.28.2"
DEST="var/sandbox-node"
STAMP="$DEST/.stamp-$ESBUILD_VERSION"

if [ -e "$STAMP" ] && [ -x "$DEST/esbuild" ]; then
    exit 0
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "setup-sandbox-node: node and npm are needed (Debian: apt-get install nodejs npm)" >&2
    exit 1
fi

mkdir -p "$DEST"
# --ignore-scripts: nothing from the registry runs on the host; --no-save keeps no lock churn.
npm install --silent --no-audit --no-fund --ignore-scripts --no-save \
    --prefix "$DEST" "@esbuild/linux-x64@$ESBUILD_VERSION" >/dev/null
ln -sf "node_modules/@esbuild/linux-x64/bin/esbuild" "$DEST/esbuild"
"$DEST/esbuild" --version >/dev/null
# The sandbox uids must be able to traverse and read the directory (bwrap opens binds as them).
chmod -R a+rX "$DEST"
rm -f "$DEST"/.stamp-*
touch "$STAMP"
