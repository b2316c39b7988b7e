"""sandboxd's isolation layer: one bubblewrap per sandbox with the agent as its pid 1.

The public API (its contract is in the docstrings of manager.py and types.py) is
re-exported here.
"""

from __future__ import annotations

from sandboxd.jail.manager import Jail, JailManager, JailProcess
from sandboxd.jail.types import (
    Entry,
    FsError,
    JailError,
    Limits,
    ProcessInfo,
    ProcEvent,
    UnsafeHostError,
)

__all__ = [
    "Entry",
    "FsError",
    "Jail",
    "JailError",
    "JailManager",
    "JailProcess",
    "Limits",
    "ProcEvent",
    "ProcessInfo",
    "UnsafeHostError",
]
