"""sandboxd's code interpreter: E2B's ``/execute`` and ``/contexts`` over stateful kernels.

``Interpreter(jail)`` serves one sandbox (see ``service``). Python runs in ipykernel, JavaScript
and TypeScript in a Node kernel of ours, Bash in a long-lived shell. The Node kernel script and
the esbuild binary must be visible inside every sandbox: pass ``RO_BINDS`` (or
:func:`interpreter_ro_binds`) to ``JailManager(ro_binds=...)``.
"""

from __future__ import annotations

from pathlib import Path

from sandboxd.interpreter.layout import (
    KERNELS_HOST_DIR,
    KERNELS_SANDBOX_DIR,
    NODE_TOOLS_HOST_DIR,
    NODE_TOOLS_SANDBOX_DIR,
)
from sandboxd.interpreter.service import Interpreter


def interpreter_ro_binds(node_tools_dir: Path | None = None) -> list[tuple[Path, str]]:
    """The read-only (host path, sandbox path) binds the kernels need in every sandbox.

    `node_tools_dir` overrides where the set-up put esbuild (default: var/sandbox-node of this
    checkout). Both directories must be traversable by the sandbox uids. A tools dir that
    does not exist (set-up not run) is left out rather than failing every sandbox: TypeScript
    cells then report that esbuild is missing, everything else works.
    """
    binds = [(KERNELS_HOST_DIR, KERNELS_SANDBOX_DIR)]
    tools = node_tools_dir or NODE_TOOLS_HOST_DIR
    if tools.is_dir():
        binds.append((tools, NODE_TOOLS_SANDBOX_DIR))
    return binds


# What sandboxd.control passes to JailManager(ro_binds=...).
RO_BINDS: tuple[tuple[Path, str], ...] = tuple(interpreter_ro_binds())

__all__ = [
    "KERNELS_SANDBOX_DIR",
    "NODE_TOOLS_SANDBOX_DIR",
    "RO_BINDS",
    "Interpreter",
    "interpreter_ro_binds",
]
