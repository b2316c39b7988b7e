"""Reused request threads for Django under ASGI, so that database connections persist.

Django's ASGI handler gives every HTTP request a thread of its own for its synchronous work
(asgiref's ThreadSensitiveContext makes a one-thread executor per request and shuts it down
after). A connection is per thread, so every request opened a new database connection and
closed it: on SQLite that is a file open plus the WAL pragmas, on PostgreSQL a TCP connection
and authentication, and with thread creation it was the largest single cost of a warm run
(bench/profile_run_path.py: about 10 % of daphne's CPU on SQLite).

`RequestThreads` lends each HTTP request a one-thread executor from a pool instead, through
asgiref's own hook for it (`ThreadSensitiveContext(executor=...)`, which Django's inner
context then reuses). The thread, and with it the connection Django keeps for CONN_MAX_AGE,
serves request after request. The pool never makes a request wait: when every pooled thread
is lent out, the request gets a new executor, as Django would have given it; at most
`keep` idle executors are kept, the others close their connections and end. An executor whose
work outlives its request (the client went away while a synchronous view still runs: a thread
cannot be cancelled) is not lent again; it closes its connections and ends once that work is
done. Websockets do not pass through here: their database work has its own threads
(execution/consumers.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from django.db import connections

# Idle executors kept for the next requests. Each holds one thread and, once it served a
# request, one database connection: with PostgreSQL, keep times workers stays well under its
# default max_connections (100).
DEFAULT_KEEP = 16


class _RequestExecutor(ThreadPoolExecutor):
    """A one-thread executor that knows whether work submitted to it is still unfinished."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="request")
        self._unfinished = 0
        self._count_lock = threading.Lock()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._count_lock:
            self._unfinished += 1
        future = super().submit(fn, *args, **kwargs)
        future.add_done_callback(self._one_done)
        return future

    def _one_done(self, _future: Future[Any]) -> None:
        with self._count_lock:
            self._unfinished -= 1

    @property
    def idle(self) -> bool:
        with self._count_lock:
            return self._unfinished == 0

    def retire(self) -> None:
        """Close this thread's database connections after whatever it still runs, then end."""
        super().submit(connections.close_all)
        self.shutdown(wait=False)


class RequestThreads:
    """ASGI middleware for Django's HTTP app: each request runs its synchronous work on a
    pooled thread (see the module's docstring). Other scope types pass through."""

    def __init__(self, app: Callable[..., Any], *, keep: int = DEFAULT_KEEP) -> None:
        self.app = app
        self.keep = keep
        # Only touched from the server's event loop: no lock needed.
        self._idle: list[_RequestExecutor] = []

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        """Retire the idle threads (their connections close); the pool still serves after."""
        idle, self._idle = self._idle, []
        for executor in idle:
            executor.retire()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        executor = self._idle.pop() if self._idle else _RequestExecutor()
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.app(scope, receive, send)
        finally:
            if executor.idle and len(self._idle) < self.keep:
                self._idle.append(executor)
            else:
                executor.retire()
