#!/usr/bin/env bash
# Builds var/agent-runtimes-env: the Python environment of the agent runtimes (LangGraph with
# langchain-mcp-adapters, the OpenAI Agents SDK) and the project's client, as pinned in
# examples/requirements.txt. It is apart from .venv because those runtimes need the MCP SDK
# 1.x and websockets<17, while the server pins mcp 2.x and websockets 17 (see that file).
# The examples and execution/tests/test_agent_runtimes.py run their agents with its Python.
# Idempotent: does nothing when the stamp matches the requirements.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST="var/agent-runtimes-env"
REQUIREMENTS="examples/requirements.txt"
# The stamp names the requirements' and the client's packaging hash: either changing rebuilds.
HASH="$(cat "$REQUIREMENTS" atlaschat_client/pyproject.toml | sha256sum | cut -c1-16)"
STAMP="$DEST/.stamp-$HASH"

if [ -e "$STAMP" ] && [ -x "$DEST/bin/python" ]; then
  exit 0
fi
# The same interpreter as the server's environment (.venv's base Python).
BASE_PY="$(.venv/bin/python -c 'import sys; print(sys._base_executable)')"
rm -rf "$DEST"
"$BASE_PY" -m venv "$DEST"
"$DEST/bin/pip" install --quiet --upgrade pip
"$DEST/bin/pip" install --quiet -r "$REQUIREMENTS" -e "./atlaschat_client[langchain,openai-agents]"
touch "$STAMP"
