"""sandboxd's log: where it goes, how it rotates, and how sandbox-supplied text enters it.

Sandbox code and API clients choose some of the text sandboxd logs (a refused host name, a
kernel's start-up output, a template id). Such text goes through :func:`untrusted` so that it
stays on one line, cannot forge another record and has a bounded length; and refusals that a
sandbox can repeat at will are counted and summarised (:class:`RefusalSummary`), so a loop of
them cannot fill the host's disk.
"""

from __future__ import annotations

import asyncio
import logging
import logging.handlers
import re
import sys
from pathlib import Path

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# A rotated log file: this many bytes per file, this many old files kept.
LOG_FILE_BYTES = 10 << 20
LOG_FILE_BACKUPS = 5
# Characters of a record's message kept (its traceback, if any, follows in full).
MESSAGE_MAX_CHARS = 4000
# Characters of one piece of untrusted text kept in a record.
UNTRUSTED_MAX_CHARS = 200
# How long refusals are counted before one summary line per target is written.
REFUSAL_WINDOW_SECONDS = 60.0
# Distinct targets counted per window; the rest are summed under one line.
REFUSAL_TARGETS_MAX = 20


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029]")


class OneLineFormatter(logging.Formatter):
    """Every record's message on one line and bounded in length, whatever it quotes.

    The second line of defence behind :func:`untrusted`: a message that carries sandbox text
    through a path nobody escaped still cannot start a forged record. Tracebacks (which
    sandboxd's own code produces) keep their lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = record.message
        if len(message) > MESSAGE_MAX_CHARS:
            message = message[:MESSAGE_MAX_CHARS] + f"…(+{len(message) - MESSAGE_MAX_CHARS})"
        message = message.replace("\r", "\\r").replace("\n", "\\n")
        record.message = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", message)
        return super().formatMessage(record)


def configure(level: str, log_file: Path | None) -> None:
    """Log records at `level` to `log_file` (rotated by size) or, without one, to stderr."""
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8"
        )
    handler.setFormatter(OneLineFormatter(LOG_FORMAT))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def untrusted(text: str | bytes, limit: int = UNTRUSTED_MAX_CHARS) -> str:
    """`text` as one quoted, escaped token of at most about `limit` characters.

    ``repr`` escapes CR, LF, the other control characters and the Unicode line separators, so
    the record stays one line whatever the text holds; what is cut is said, not hidden.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    shown = repr(text[:limit])
    if len(text) > limit:
        shown += f"…(+{len(text) - limit} chars)"
    return shown


class RefusalSummary:
    """Counts refused requests per target and logs them once a window.

    The first refusal of a window is logged at once (someone watching sees it now); the
    window's total per target follows as ``N refused requests to X in the last minute``.
    Memory is bounded: at most REFUSAL_TARGETS_MAX targets are told apart per window.
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what  # e.g. "egress of sandbox abc"
        self._counts: dict[str, int] = {}
        self._others = 0
        self._timer: asyncio.TimerHandle | None = None

    def refused(self, target: str) -> None:
        """Count one refusal of `target` (untrusted text)."""
        if self._timer is None:
            self._log.info("%s refused a request to %s", self._what, untrusted(target))
            self._timer = asyncio.get_running_loop().call_later(REFUSAL_WINDOW_SECONDS, self.flush)
        key = target[:UNTRUSTED_MAX_CHARS]
        if key in self._counts or len(self._counts) < REFUSAL_TARGETS_MAX:
            self._counts[key] = self._counts.get(key, 0) + 1
        else:
            self._others += 1

    def flush(self) -> None:
        """Log the window's counts and start a new window."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for target, count in self._counts.items():
            self._log.info(
                "%s: %d refused requests to %s in the last minute",
                self._what,
                count,
                untrusted(target),
            )
        if self._others:
            self._log.info(
                "%s: %d refused requests to other targets in the last minute",
                self._what,
                self._others,
            )
        self._counts.clear()
        self._others = 0
