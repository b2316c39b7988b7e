"""A watchdog for the server's event loop.

Every sandbox of a sandboxd shares one asyncio loop, so a call that blocks it (a stuck
syscall, a C library waiting on a lock) freezes every sandbox and even ``/health``, and
nothing in the loop can say so. A thread outside it pings the loop every second; when a ping
goes unanswered for ``threshold`` seconds it logs, once per stall, where the loop's thread is
stuck, and it logs again when the loop answers.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

log = logging.getLogger(__name__)

STALL_SECONDS = 5.0
PING_SECONDS = 1.0


class LoopWatchdog:
    """Watches one running loop from a daemon thread; ``start()`` from the loop's thread."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        threshold: float = STALL_SECONDS,
        interval: float = PING_SECONDS,
    ) -> None:
        self._loop = loop
        self._threshold = threshold
        self._interval = interval
        self._loop_thread = threading.get_ident()
        self._answered = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="sandboxd-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _answer(self) -> None:
        self._answered = time.monotonic()

    def _watch(self) -> None:
        stalled_since: float | None = None
        while not self._stop.wait(self._interval):
            try:
                self._loop.call_soon_threadsafe(self._answer)
            except RuntimeError:
                return  # the loop is closed
            silent = time.monotonic() - self._answered
            if silent <= self._interval + self._threshold:
                if stalled_since is not None:
                    log.warning(
                        "event loop answers again after %.1f s",
                        time.monotonic() - stalled_since,
                    )
                    stalled_since = None
                continue
            if stalled_since is None:
                stalled_since = self._answered
                log.error(
                    "event loop blocked for %.1f s; every sandbox is frozen. Its thread is at:\n%s",
                    silent,
                    self._loop_stack(),
                )

    def _loop_stack(self) -> str:
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return "  (the loop's thread is gone)"
        return "".join(traceback.format_stack(frame))
