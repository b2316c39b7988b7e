"""Terminal output shown as plain text: the one pattern for ANSI escape sequences.

Jupyter kernels colour tracebacks; pages, the admin and the text a model reads show them
without the escapes. The pattern covers CSI sequences (colours, cursor moves, private modes
such as `ESC[?25l`) and OSC sequences (titles, hyperlinks) ended by BEL or ST.
"""

from __future__ import annotations

import re

ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


def strip_ansi(text: str) -> str:
    """`text` without terminal escape sequences."""
    return ANSI_ESCAPE.sub("", text)
