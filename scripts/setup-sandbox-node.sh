#!/usr/bin/env bash
# Builds var/sandbox-node/, which sandboxd binds read-only into every sandbox at
# /opt/sandboxd/node:
# * the native esbuild binary (npm package @esbuild/linux-x64, no install scripts), so the
#   TypeScript kernel transpiles without a type-check pass; the platform package is used
#   directly because the `esbuild` JS shim costs ~30 ms more per run;
# * mpl/: matplotlib's font list built ahead with the sandbox's own Python, copied into each
#   Python kernel's MPLCONFIGDIR so the first plot does not scan every font (bundled fonts
#   are listed relative to matplotlib's data dir, so the list is valid inside the sandbox).
# Idempotent; quiet when done.
set -euo pipefail
cd "$(dirname "$0")/.."

ESBUILD_VERSION="0.28.2"
DEST="var/sandbox-node"
STAMP="$DEST/.stamp-$ESBUILD_VERSION"

SANDBOX_PY="var/sandbox-env/bin/python"

build_font_list() {
    if [ ! -x "$SANDBOX_PY" ]; then
        echo "setup-sandbox-node: $SANDBOX_PY missing; skipping the matplotlib font list" >&2
        return 0
    fi
    local tmp
    tmp="$(mktemp -d)"
    MPLCONFIGDIR="$tmp" "$SANDBOX_PY" -c "import matplotlib.font_manager" 2>/dev/null || true
    mkdir -p "$DEST/mpl"
    if compgen -G "$tmp/fontlist-*.json" >/dev/null; then
        rm -f "$DEST"/mpl/fontlist-*.json
        cp "$tmp"/fontlist-*.json "$DEST/mpl/"
    fi
    rm -rf "$tmp"
    chmod -R a+rX "$DEST/mpl"
}

if [ -e "$STAMP" ] && [ -x "$DEST/esbuild" ]; then
    # The list is named after matplotlib's version: built again when the sandbox env's
    # requirements change (a list of another version is ignored, and the first plot is slow).
    if ! compgen -G "$DEST/mpl/fontlist-*.json" >/dev/null \
        || [ sandboxd/sandbox-requirements.txt -nt "$DEST/mpl" ]; then
        build_font_list
        touch "$DEST/mpl"
    fi
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
build_font_list
# The sandbox uids must be able to traverse and read the directory (bwrap opens binds as them).
chmod -R a+rX "$DEST"
rm -f "$DEST"/.stamp-*
touch "$STAMP"
