"""Where the kernels' own files are on the host and inside every sandbox (bound read-only)."""

from __future__ import annotations

from pathlib import Path

# The kernel programs of this package: node_kernel.cjs, python_kernel.py.
KERNELS_HOST_DIR = Path(__file__).resolve().parent / "kernels"
KERNELS_SANDBOX_DIR = "/opt/sandboxd/kernels"
# Built by scripts/setup-sandbox-node.sh: the esbuild binary and a matplotlib font list.
NODE_TOOLS_HOST_DIR = Path(__file__).resolve().parents[2] / "var" / "sandbox-node"
NODE_TOOLS_SANDBOX_DIR = "/opt/sandboxd/node"
