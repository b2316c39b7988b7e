"""The event loop on which every sandbox call runs, shared by the whole process.

The execution services talk to sandboxes through the e2b SDK's *async* client on one
long-lived event loop in a daemon thread, and expose plain blocking functions to their callers
(DRF views, websocket consumers via database_sync_to_async, management commands, tests). Why:

* cancelling a run means closing its HTTP stream (that is how the E2B protocol interrupts a
  kernel), and cancelling an asyncio task is the one reliable way to do that from another
  thread;
* the SDK caches its transports per event loop, so one persistent loop keeps connections warm;
* no caller's own event loop (daphne's, a test's) is ever blocked by sandbox I/O.

Database work never happens on this loop: callers do it in their own threads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class ServiceLoop:
    """A daemon thread running an asyncio loop; submit coroutines to it from any thread."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self._main, name="atlaschat-sandbox-loop", daemon=True
        )
        self.thread.start()
        self._ready.wait()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Schedule `coro` on the loop; cancelling the returned future cancels the task."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the loop and block until it finishes; re-raises its exception.

        Raises RuntimeError when called from the loop's own thread (that would deadlock) and
        TimeoutError when `timeout` passes (the coroutine is then cancelled).
        """
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError("ServiceLoop.run() called from the service loop itself")
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"sandbox call did not finish within {timeout} s") from None


_lock = threading.Lock()
_instance: ServiceLoop | None = None
_instance_pid: int | None = None


def service_loop() -> ServiceLoop:
    """Return the process's service loop, starting it on first use (and again after a fork,
    since threads do not survive fork)."""
    global _instance, _instance_pid
    with _lock:
        if _instance is None or _instance_pid != os.getpid():
            _instance = ServiceLoop()
            _instance_pid = os.getpid()
        return _instance


def run_sandbox_call(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run one SDK coroutine on the service loop and return its result (blocking)."""
    return service_loop().run(coro, timeout)
