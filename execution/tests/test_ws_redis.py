"""Live output across server processes through the Redis channel layer.

Two daphne processes share one database and one Redis (as several workers behind a
proxy would); a run started through one streams to websocket clients of the other. Skipped
only when no Redis answers at REDIS_URL (or redis://127.0.0.1:6379/0); it runs here and
in CI.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import connections

from accounts.testing import bearer_headers_for
from atlaschat.asgi import application
from execution.models import Execution, Thread
from execution.services.events import thread_group
from execution.tests.live import (
    Frames,
    LiveStack,
    bearer_headers,
    create_user,
    delete_thread,
    live_stack,
    open_socket,
    receive_frame,
    receive_until,
    redis_url_if_reachable,
)

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(240)]

STREAMING_CODE = (
    "import time\nfor i in range(6):\n    print(f'line {i}', flush=True); time.sleep(0.3)"
)
STREAMED = "".join(f"line {i}\n" for i in range(6))


@dataclass
class TwoServers:
    stack: LiveStack
    alice: AbstractBaseUser


@pytest.fixture(scope="module")
def two_servers(
    django_db_setup: None,
    django_db_blocker: Any,
    sandboxd_server: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TwoServers]:
    redis_url = redis_url_if_reachable()
    if redis_url is None:
        pytest.skip("Redis is not reachable (REDIS_URL or redis://127.0.0.1:6379/0)")
    directory: Path = tmp_path_factory.mktemp("ws-redis")
    with (
        django_db_blocker.unblock(),
        live_stack(
            directory,
            sandboxd_url=sandboxd_server.url,
            sandboxd_api_key=sandboxd_server.api_key,
            servers=2,
            redis_url=redis_url,
        ) as stack,
    ):
        yield TwoServers(stack=stack, alice=create_user(stack.database.alias, "alice"))


@pytest.fixture
async def thread(two_servers: TwoServers) -> AsyncIterator[Thread]:
    """A fresh thread of alice's, deleted (sandbox and all) after the test."""
    thread = await sync_to_async(Thread.objects.using(two_servers.stack.database.alias).create)(
        owner=two_servers.alice, title="across servers"
    )
    yield thread
    await delete_thread(two_servers.stack.server, two_servers.alice, thread.id)


def test_the_two_servers_are_separate_processes_on_redis(two_servers: TwoServers) -> None:
    first, second = two_servers.stack.servers
    assert first.process.pid != second.process.pid
    assert first.port != second.port
    assert first.process.poll() is None
    assert second.process.poll() is None


async def test_a_run_started_through_one_server_streams_to_a_client_of_the_other(
    two_servers: TwoServers, thread: Thread
) -> None:
    runner_server, watcher_server = two_servers.stack.servers
    headers = bearer_headers(two_servers.alice)
    path = f"ws/threads/{thread.id}/"
    async with (
        await open_socket(watcher_server, path, headers=headers) as watcher,
        await open_socket(runner_server, path, headers=headers) as runner,
    ):
        await runner.send(
            json.dumps({"type": "execute", "code": STREAMING_CODE, "language": "python"})
        )
        execution_id = (await receive_frame(runner))["execution_id"]
        watched = await receive_until(watcher, done_of=execution_id, within=60)
        await receive_until(runner, done_of=execution_id, within=60)
    assert watched.types()[0] == "execution"
    assert watched.items[0]["execution_id"] == execution_id
    assert watched.stdout() == STREAMED
    seqs = [frame["seq"] for frame in watched.items]
    assert seqs == list(range(len(seqs)))
    assert watched.items[-1]["status"] == "succeeded"


async def test_an_execution_socket_on_the_other_server_replays_then_follows(
    two_servers: TwoServers, thread: Thread
) -> None:
    runner_server, watcher_server = two_servers.stack.servers
    headers = bearer_headers(two_servers.alice)
    async with await open_socket(
        runner_server, f"ws/threads/{thread.id}/", headers=headers
    ) as runner:
        await runner.send(
            json.dumps({"type": "execute", "code": STREAMING_CODE, "language": "python"})
        )
        execution_id = (await receive_frame(runner))["execution_id"]
        seen = Frames()
        while "line 1" not in seen.stdout():
            seen.items.append(await receive_frame(runner))
        async with await open_socket(
            watcher_server, f"ws/executions/{execution_id}/", headers=headers
        ) as late:
            frames = await receive_until(late, within=60)
        await receive_until(runner, done_of=execution_id, within=60)
    assert frames.close_code == 1000
    assert any(frame.get("replay") for frame in frames.items)
    assert any(not frame.get("replay") for frame in frames.items)
    assert frames.stdout() == STREAMED
    assert frames.items[-1]["type"] == "done"


async def test_a_cancel_sent_through_the_other_server_stops_the_run(
    two_servers: TwoServers, thread: Thread
) -> None:
    runner_server, other_server = two_servers.stack.servers
    headers = bearer_headers(two_servers.alice)
    path = f"ws/threads/{thread.id}/"
    code = "import time\nprint('started', flush=True)\ntime.sleep(60)\nprint('never')"
    async with (
        await open_socket(runner_server, path, headers=headers) as runner,
        await open_socket(other_server, path, headers=headers) as other,
    ):
        await runner.send(json.dumps({"type": "execute", "code": code, "language": "python"}))
        execution_id = (await receive_frame(runner))["execution_id"]
        seen = Frames()
        while "started" not in seen.stdout():
            seen.items.append(await receive_frame(runner))
        await other.send(json.dumps({"type": "cancel", "execution_id": execution_id}))
        finished = await receive_until(runner, done_of=execution_id, within=30)
    assert finished.items[-1]["status"] == "cancelled"
    row = await sync_to_async(Execution.objects.using(two_servers.stack.database.alias).get)(
        id=execution_id
    )
    assert row.status == Execution.Status.CANCELLED


@pytest.mark.django_db(transaction=True)
async def test_an_idle_socket_outlasts_redis_reads_that_time_out(
    settings: Any, alice: AbstractBaseUser
) -> None:
    redis_url = redis_url_if_reachable()
    if redis_url is None:
        pytest.skip("Redis is not reachable (REDIS_URL or redis://127.0.0.1:6379/0)")
    # A 1 s socket timeout makes every idle wait (a 5 s blocking pop) time out, as the
    # default 5 s one does now and then on a busy machine.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [{"address": redis_url, "socket_timeout": 1}]},
        }
    }
    thread = await Thread.objects.acreate(owner=alice)
    token = (await sync_to_async(bearer_headers_for)(alice))["Authorization"]
    communicator = WebsocketCommunicator(
        application,
        f"/ws/threads/{thread.id}/",
        headers=[(b"origin", b"http://127.0.0.1"), (b"authorization", token.encode())],
    )
    try:
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        await asyncio.sleep(2.5)
        event = {"type": "stdout", "execution_id": str(uuid.uuid4()), "text": "hi\n", "seq": 0}
        await get_channel_layer().group_send(
            thread_group(thread.id), {"type": "execution.event", "event": event}
        )
        assert await communicator.receive_json_from(timeout=5) == event
    finally:
        await communicator.disconnect()
        await sync_to_async(connections.close_all)()
