"""The one model of background work of the execution services: an anyio blocking portal.

The services talk to sandboxes through the sandbox contract's coroutines (execution/sandbox/)
on one long-lived event loop, run by anyio's `BlockingPortal` in a thread of its own, and
expose plain blocking functions to their callers (DRF views, websocket consumers via
database_sync_to_async, management commands, tests). Why one portal:

* cancelling a run means closing its HTTP stream (that is how the E2B protocol interrupts a
  kernel), and cancelling a portal task does exactly that from any thread;
* the SDK caches its transports per event loop, so one persistent loop keeps connections warm;
* no caller's own event loop (daphne's, a test's) is ever blocked by sandbox I/O.

Background runs (`start_background`) are tasks of the same portal whose blocking body (database
work) runs in anyio's worker threads under a capacity limiter, so there is one bounded place
where background work happens and one way to wait for it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from anyio.from_thread import BlockingPortal
from django.conf import settings

T = TypeVar("T")


async def _awaited(coro: Coroutine[Any, Any, T]) -> T:
    return await coro


class ServicePortal:
    """The process's portal, its background-work limiter and its running background tasks."""

    def __init__(self) -> None:
        ready = threading.Event()
        box: dict[str, Any] = {}

        async def serve() -> None:
            async with BlockingPortal() as portal:
                box["portal"] = portal
                box["limiter"] = anyio.CapacityLimiter(settings.EXECUTION_GLOBAL_CONCURRENCY)
                ready.set()
                await portal.sleep_until_stopped()

        # A daemon thread of our own (anyio's start_blocking_portal uses an executor thread
        # that the interpreter joins at exit, where this loop would never end).
        self.thread = threading.Thread(
            target=anyio.run, args=(serve,), name="atlaschat-service-portal", daemon=True
        )
        self.thread.start()
        ready.wait()
        self.portal: BlockingPortal = box["portal"]
        self.limiter: anyio.CapacityLimiter = box["limiter"]
        self._running: set[Future[Any]] = set()
        self._guard = threading.Lock()
        self._idle = threading.Condition(self._guard)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        """Schedule `coro` on the portal; cancelling the returned future cancels the task."""
        return self.portal.start_task_soon(_awaited, coro)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run `coro` on the portal and block until it finishes; re-raises its exception and
        raises TimeoutError when `timeout` passes (the coroutine is then cancelled)."""
        future = self.submit(coro)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise TimeoutError(f"sandbox call did not finish within {timeout} s") from None

    def start_background(self, function: Callable[[], None], name: str) -> Future[None]:
        """Run blocking `function` in a worker thread, at most EXECUTION_GLOBAL_CONCURRENCY at
        once (the rest wait their turn, bounded by the run caps that admitted them)."""

        async def body() -> None:
            await anyio.to_thread.run_sync(function, limiter=self.limiter)

        future = self.portal.start_task_soon(body, name=name)
        with self._guard:
            self._running.add(future)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future[Any]) -> None:
        with self._guard:
            self._running.discard(future)
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no background work runs; True when none is left."""
        with self._guard:
            return self._idle.wait_for(lambda: not self._running, timeout)


_lock = threading.Lock()
_instance: ServicePortal | None = None
_instance_pid: int | None = None


def service_portal() -> ServicePortal:
    """Return the process's portal, starting it on first use (and again after a fork, since
    threads do not survive fork)."""
    global _instance, _instance_pid
    with _lock:
        if _instance is None or _instance_pid != os.getpid():
            _instance = ServicePortal()
            _instance_pid = os.getpid()
        return _instance


def run_sandbox_call(coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
    """Run one sandbox coroutine on the portal and return its result (blocking)."""
    return service_portal().run(coro, timeout)
