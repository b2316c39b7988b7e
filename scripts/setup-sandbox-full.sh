#!/usr/bin/env bash
# Builds var/sandbox-env-full/, the Python environment of the `code-interpreter-v1` sandbox
# template (sandboxd/templates.py): the base sandbox env's packages plus the data-science
# stack E2B's code-interpreter template pre-installs (sandboxd/sandbox-requirements-full.txt),
# from /usr/bin/python3, wheels only. Rebuilt when either requirements file changes.
# Idempotent; quiet when done. Measured on a 2-core machine: about 4 minutes and 1.7 GiB the
# first time (see README, "Sandbox templates").
set -euo pipefail
cd "$(dirname "$0")/.."

DEST="var/sandbox-env-full"
STAMP="$DEST/.stamp"

if [ -e "$STAMP" ] && [ "$STAMP" -nt sandboxd/sandbox-requirements-full.txt ] \
    && [ "$STAMP" -nt sandboxd/sandbox-requirements.txt ]; then
    exit 0
fi
echo "setup-sandbox-full: building $DEST (E2B's code-interpreter stack; a few minutes)" >&2
/usr/bin/python3 -m venv --clear "$DEST"
"$DEST/bin/pip" install --quiet --only-binary=:all: -r sandboxd/sandbox-requirements-full.txt
touch "$STAMP"
