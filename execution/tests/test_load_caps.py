"""20 websocket clients x 50 runs each against one daphne on the embedded defaults (SQLite
in the first test pass), with the caps as shipped: every run succeeds, nothing is lost, and
the only refusals are 429s with a Retry-After that the client waits out. Twenty users need
twenty sandboxes from a sandboxd that holds 16: the caps agree with that capacity, so no run
meets the sandbox server's refusal (which would end it `error`, a 503)."""

from __future__ import annotations

import asyncio
import json
import secrets
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from execution.models import Execution, Thread
from execution.tests.conftest import make_state_dir
from execution.tests.live import (
    LiveStack,
    bearer_headers,
    create_user,
    live_stack,
    open_socket,
    receive_frame,
)
from sandboxd.testing import running_sandboxd

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(900)]

CLIENTS = 20
RUNS = 50
# Lifted only so that the test measures the caps, not the request rate (its own tests).
LIFTED = {"EXECUTION_THROTTLE_RATE": "100000/minute"}


@pytest.fixture(scope="module")
def stack(
    django_db_setup: None, django_db_blocker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveStack]:
    """A sandboxd of its own at its default capacity (16) and one daphne in front of it."""
    state = make_state_dir("atlaschat-load-sandboxd-")
    try:
        with (
            django_db_blocker.unblock(),
            running_sandboxd(state_dir=state, api_key=secrets.token_hex(16)) as sandboxd,
            live_stack(
                tmp_path_factory.mktemp("load"),
                sandboxd_url=sandboxd.url,
                sandboxd_api_key=sandboxd.api_key,
                extra_env=LIFTED,
            ) as live,
        ):
            yield live
    finally:
        shutil.rmtree(state, ignore_errors=True)


async def client(
    live: LiveStack, index: int, user: Any, thread: Any, tally: dict[str, Any]
) -> None:
    path = f"ws/threads/{thread.id}/"
    async with await open_socket(live.servers[0], path, headers=bearer_headers(user)) as socket:
        run = 0
        while run < RUNS:
            code = f"print('client {index} run {run}')"
            await socket.send(json.dumps({"type": "execute", "code": code, "language": "python"}))
            execution_id = None
            printed = ""
            while True:
                frame = await receive_frame(socket, within=180)
                if frame["type"] == "error" and "execution_id" not in frame:
                    retry_after = frame["error"]["details"].get("retry_after")
                    if retry_after is None:
                        tally["errors"].append(frame["error"])
                        run += 1
                    else:
                        tally["refusals"].append(frame["error"]["code"])
                        await asyncio.sleep(int(retry_after))
                    break
                if frame["type"] == "execution":
                    execution_id = frame["execution_id"]
                elif frame["type"] == "stdout" and frame["execution_id"] == execution_id:
                    printed += frame["text"]  # a line may come in more than one frame
                elif frame["type"] == "done" and frame["execution_id"] == execution_id:
                    tally["lines"].add(printed)
                    if frame["status"] != "succeeded":
                        tally["errors"].append(frame)
                    run += 1
                    break


def test_twenty_clients_times_fifty_runs_all_succeed_with_only_429s_on_the_way(
    stack: LiveStack,
) -> None:
    alias = stack.database.alias
    users = [create_user(alias, f"load{n}") for n in range(CLIENTS)]
    threads = [Thread.objects.using(alias).create(owner=user) for user in users]
    tally: dict[str, Any] = {"errors": [], "refusals": [], "lines": set()}

    pairs = list(zip(users, threads, strict=True))

    async def everyone() -> None:
        await asyncio.gather(*(client(stack, i, u, t, tally) for i, (u, t) in enumerate(pairs)))

    asyncio.run(everyone())

    assert tally["errors"] == []
    expected = {f"client {i} run {r}\n" for i in range(CLIENTS) for r in range(RUNS)}
    assert tally["lines"] == expected  # every line streamed, none lost
    rows = Execution.objects.using(alias).filter(thread__in=threads)
    assert rows.filter(status=Execution.Status.SUCCEEDED).count() == CLIENTS * RUNS
    assert not rows.filter(status=Execution.Status.ERROR).exists()
    # What was refused on the way was a cap's 429, never the sandbox server's 503.
    assert set(tally["refusals"]) <= {"concurrency_limit_global", "sandbox_limit_global"}
