"""Pooled request threads (atlaschat/request_threads.py): a request's synchronous work runs on
a reused thread that keeps its database connection, concurrent requests never wait for one
another, and a thread whose work outlived its request is not lent again."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import HttpCommunicator
from django.core.signals import request_finished
from django.db import connection

from atlaschat.asgi import django_asgi_app
from atlaschat.request_threads import RequestThreads

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def finished_requests() -> Iterator[list[tuple[threading.Thread, Any]]]:
    """(thread, database connection) of each request Django finishes, read in its thread.
    The objects themselves are kept, so that a new one can never pass for an old one."""
    seen: list[tuple[threading.Thread, Any]] = []

    def record(**_: Any) -> None:
        seen.append((threading.current_thread(), connection.connection))

    request_finished.connect(record)
    yield seen
    request_finished.disconnect(record)


async def get(app: Any, path: str = "/healthz") -> dict[str, Any]:
    communicator = HttpCommunicator(app, "GET", path, headers=[(b"host", b"127.0.0.1:8000")])
    response = await communicator.get_response(timeout=10)
    await communicator.wait(10)  # the request's end (response.close, request_finished)
    return response


@pytest.fixture
def pooled_django(settings: Any) -> Iterator[RequestThreads]:
    """Django's ASGI app on pooled threads, with connections kept as in production (the
    test settings turn CONN_MAX_AGE off: see conftest.py); its threads end after the test."""
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 60
    app = RequestThreads(django_asgi_app)
    yield app
    app.close()


async def test_requests_one_after_another_share_a_thread_and_its_database_connection(
    pooled_django: RequestThreads, finished_requests: list[tuple[threading.Thread, Any]]
) -> None:
    for _ in range(3):
        assert (await get(pooled_django))["status"] == 200

    assert len(finished_requests) == 3
    (thread, raw), *_ = finished_requests
    assert raw is not None  # /healthz queried the database, and the connection stayed open
    assert all(t is thread and r is raw for t, r in finished_requests)


def sync_app(work: Callable[[], Any]) -> RequestThreads:
    """An ASGI app whose request runs `work` the way Django runs a view: thread-sensitive."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = str(await sync_to_async(work)()).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    return RequestThreads(app, keep=2)


async def test_concurrent_requests_each_get_a_thread_and_the_pool_keeps_only_keep() -> None:
    # Four requests that can only finish together: on one shared thread they would deadlock.
    barrier = threading.Barrier(4, timeout=5)
    app = sync_app(lambda: (barrier.wait(), threading.get_ident())[1])

    responses = await asyncio.gather(*(get(app) for _ in range(4)))

    threads = {response["body"] for response in responses}
    assert [r["status"] for r in responses] == [200] * 4 and len(threads) == 4
    assert app.idle_count == 2


async def test_a_thread_whose_work_outlived_its_request_is_not_lent_again() -> None:
    release = threading.Event()
    started = threading.Event()

    def slow_then_fast() -> int:
        if not started.is_set():
            started.set()
            release.wait(10)  # a view still running after its client went away
        return threading.get_ident()

    inner = sync_app(slow_then_fast).app

    async def abandoning(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if not started.is_set():
            # The server gives up on the request while its synchronous work goes on.
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(sync_to_async(slow_then_fast)(), 0.2)
            await send({"type": "http.response.start", "status": 504, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await inner(scope, receive, send)

    app = RequestThreads(abandoning, keep=2)
    assert (await get(app))["status"] == 504
    assert app.idle_count == 0  # still busy: retired, not pooled

    began = time.monotonic()
    second = await get(app)
    assert second["status"] == 200
    assert time.monotonic() - began < 2  # not queued behind the abandoned work
    release.set()
