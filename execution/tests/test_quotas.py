"""Fair use: per-user caps on runs in flight, live sandboxes and open websockets hold under
racing requests (on SQLite and PostgreSQL), answer 429 with Retry-After (never 503), and
leave other users untouched; idle websockets hold no database connection each."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connection, connections, transaction
from django.utils import timezone

from accounts.testing import bearer_headers_for
from atlaschat.asgi import application
from execution.consumers import CLOSE_OVER_LIMIT
from execution.models import Execution, SecurityEvent, Thread
from execution.services.errors import ToolError
from execution.services.quotas import (
    check_run_concurrency,
    open_websockets,
    sandbox_admission,
)

ORIGIN = (b"origin", b"http://127.0.0.1")


# --- runs in flight -------------------------------------------------------------------------


def admit_run(user: AbstractBaseUser, thread: Thread, start: threading.Barrier) -> str:
    """What ToolExecutor does to admit a run: count and insert in one transaction."""
    start.wait()
    try:
        with transaction.atomic():
            check_run_concurrency(user)
            Execution.objects.create(thread=thread, user=user, language="python", code="1")
        return "admitted"
    except ToolError as error:
        return f"{error.status} {error.code} {error.headers['Retry-After']}"
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_racing_requests_never_get_more_runs_in_flight_than_the_users_cap(
    alice: AbstractBaseUser, bob: AbstractBaseUser, settings: Any
) -> None:
    settings.EXECUTION_USER_CONCURRENCY = 4
    settings.EXECUTION_CONCURRENCY_RETRY_AFTER = 2
    thread = Thread.objects.create(owner=alice)
    racers = 10
    start = threading.Barrier(racers)
    answers: list[str] = []
    workers = [
        threading.Thread(target=lambda: answers.append(admit_run(alice, thread, start)))
        for _ in range(racers)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(answers) == ["429 concurrency_limit_user 2"] * 6 + ["admitted"] * 4
    assert Execution.objects.filter(user=alice).count() == 4
    # bob has his own share.
    bobs = Thread.objects.create(owner=bob)
    assert admit_run(bob, bobs, threading.Barrier(1)) == "admitted"


@pytest.mark.django_db(transaction=True)
def test_the_global_cap_defaults_to_sandboxds_capacity_and_refuses_with_429(
    make_user: Any, settings: Any
) -> None:
    assert settings.EXECUTION_GLOBAL_CONCURRENCY == 16  # sandboxd's max_sandboxes
    settings.EXECUTION_GLOBAL_CONCURRENCY = 3
    users = [make_user(f"user{i}") for i in range(4)]
    answers = [admit_run(u, Thread.objects.create(owner=u), threading.Barrier(1)) for u in users]
    assert answers == ["admitted"] * 3 + ["429 concurrency_limit_global 2"]


# --- live sandboxes -------------------------------------------------------------------------


def holder(user: AbstractBaseUser, name: str, minutes_ago: int, *, busy: bool = False) -> Thread:
    thread = Thread.objects.create(
        owner=user,
        title=name,
        sandbox_id=f"sbx-{name}",
        last_used_at=timezone.now() - timedelta(minutes=minutes_ago),
    )
    if busy:
        Execution.objects.create(thread=thread, user=user, language="python", code="1")
    return thread


@pytest.mark.django_db(transaction=True)
def test_at_the_sandbox_cap_the_oldest_idle_sandbox_is_released_first(
    alice: AbstractBaseUser, bob: AbstractBaseUser, settings: Any
) -> None:
    settings.SANDBOX_USER_LIMIT = 3
    holder(alice, "oldest-but-busy", 50, busy=True)
    oldest_idle = holder(alice, "oldest-idle", 40)
    holder(alice, "recent", 1)
    holder(bob, "bobs", 99)  # another user's sandboxes are never counted or released
    new = Thread.objects.create(owner=alice)
    with sandbox_admission(new) as release:
        assert [t.pk for t in release] == [oldest_idle.pk]
    under_cap = Thread.objects.create(owner=bob)
    with sandbox_admission(under_cap) as release:
        assert release == []


@pytest.mark.django_db(transaction=True)
def test_at_the_sandbox_cap_with_every_sandbox_busy_a_new_one_is_refused_with_429(
    alice: AbstractBaseUser, settings: Any
) -> None:
    settings.SANDBOX_USER_LIMIT = 2
    holder(alice, "a", 5, busy=True)
    holder(alice, "b", 3, busy=True)
    with pytest.raises(ToolError) as refused, sandbox_admission(Thread.objects.create(owner=alice)):
        pass
    assert (refused.value.status, refused.value.code) == (429, "sandbox_limit_user")
    assert int(refused.value.headers["Retry-After"]) >= 1


@pytest.mark.django_db(transaction=True)
def test_at_the_servers_sandbox_capacity_anyones_oldest_idle_sandbox_makes_room(
    alice: AbstractBaseUser, bob: AbstractBaseUser, charlie: AbstractBaseUser, settings: Any
) -> None:
    assert settings.SANDBOX_GLOBAL_LIMIT == 16  # sandboxd's max_sandboxes
    settings.SANDBOX_GLOBAL_LIMIT = 3
    holder(alice, "alice-busy", 90, busy=True)
    bobs_idle = holder(bob, "bob-idle", 60)
    holder(bob, "bob-recent", 1)
    with sandbox_admission(Thread.objects.create(owner=charlie)) as release:
        assert [t.pk for t in release] == [bobs_idle.pk]
    # With every sandbox busy, the new one is refused with a 429, not the server's 503.
    Execution.objects.create(thread=bobs_idle, user=bob, language="python", code="1")
    Execution.objects.create(
        thread=Thread.objects.get(title="bob-recent"), user=bob, language="python", code="1"
    )
    with (
        pytest.raises(ToolError) as refused,
        sandbox_admission(Thread.objects.create(owner=charlie)),
    ):
        pass
    assert (refused.value.status, refused.value.code) == (429, "sandbox_limit_global")


@pytest.mark.django_db(transaction=True)
def test_sandbox_admissions_wait_for_each_other(alice: AbstractBaseUser, settings: Any) -> None:
    settings.SANDBOX_USER_LIMIT = 1
    first, second = Thread.objects.create(owner=alice), Thread.objects.create(owner=alice)
    seen: list[list[Any]] = []

    def admit_second() -> None:
        try:
            with sandbox_admission(second) as release:
                seen.append([t.pk for t in release])
        finally:
            connection.close()

    with sandbox_admission(first) as release:
        assert release == []
        worker = threading.Thread(target=admit_second)
        worker.start()
        Thread.objects.filter(pk=first.pk).update(sandbox_id="sbx-first")
    worker.join(timeout=30)
    # The second admission counted only after the first stored its sandbox: it sees that
    # sandbox (idle) as the one to release, never an empty count.
    assert seen == [[first.pk]]


# --- open websockets ------------------------------------------------------------------------


@pytest.fixture
async def sockets() -> AsyncIterator[list[WebsocketCommunicator]]:
    opened: list[WebsocketCommunicator] = []
    yield opened
    for communicator in opened:
        await communicator.disconnect()
    await sync_to_async(connections.close_all)()


async def open_socket(
    opened: list[WebsocketCommunicator], user: AbstractBaseUser, thread: Thread
) -> tuple[bool, int | None]:
    token = (await sync_to_async(bearer_headers_for)(user))["Authorization"]
    communicator = WebsocketCommunicator(
        application,
        f"/ws/threads/{thread.id}/",
        headers=[ORIGIN, (b"authorization", token.encode())],
    )
    communicator.scope["client"] = ["10.0.0.9", 1]
    opened.append(communicator)
    connected, _ = await communicator.connect(timeout=5)
    if not connected:
        return False, None
    closed = None
    if await communicator.receive_nothing(timeout=0.2) is False:
        closed = (await communicator.receive_output(timeout=5)).get("code")
    return True, closed


@pytest.mark.django_db(transaction=True)
async def test_a_user_at_the_socket_cap_is_refused_4429_and_audited_and_others_are_not(
    alice: AbstractBaseUser, bob: AbstractBaseUser, settings: Any, sockets: Any
) -> None:
    settings.WEBSOCKET_USER_LIMIT = 3
    alices = await Thread.objects.acreate(owner=alice)
    bobs = await Thread.objects.acreate(owner=bob)
    for _ in range(3):
        assert await open_socket(sockets, alice, alices) == (True, None)
    assert await open_socket(sockets, alice, alices) == (True, CLOSE_OVER_LIMIT)
    assert await open_socket(sockets, bob, bobs) == (True, None)
    event = await SecurityEvent.objects.aget(user=alice, code="websocket_limit_user")
    assert (event.kind, event.source) == ("quota", "websocket")
    # Closing one frees its slot.
    await sockets[0].disconnect()
    assert await open_socket(sockets, alice, alices) == (True, None)
    assert open_websockets(alice.pk) == 3


@pytest.mark.django_db(transaction=True)
async def test_idle_sockets_hold_no_thread_or_database_connection_each(
    alice: AbstractBaseUser, settings: Any, sockets: Any
) -> None:
    settings.WEBSOCKET_USER_LIMIT = 100
    thread = await Thread.objects.acreate(owner=alice)
    await open_socket(sockets, alice, thread)
    threads_before = threading.active_count()
    for _ in range(30):
        assert await open_socket(sockets, alice, thread) == (True, None)
    # Thirty more sockets, no more threads than the few shared database threads.
    assert threading.active_count() - threads_before <= settings.WEBSOCKET_DB_THREADS
    if connection.vendor == "postgresql":
        count = await sync_to_async(_database_connections)()
        assert count <= settings.WEBSOCKET_DB_THREADS + 3  # + the test's own


def _database_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return int(cursor.fetchone()[0])
