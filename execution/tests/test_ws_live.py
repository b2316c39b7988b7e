"""Live output through a real daphne server, a real websocket client and a real sandboxd.

One daphne process (in-memory channel layer, as embedded) serves the project against an
SQLite file (or a fresh PostgreSQL database) that this process reads too; the client is
the `websockets` package speaking the real protocol over loopback. Runs go through the
execution service and the e2b SDK to sandboxd. Cross-process streaming through Redis is
in `test_ws_redis.py`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from websockets.exceptions import InvalidStatus

from execution.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from execution.models import Execution, Source, Thread
from execution.tests.live import (
    Frames,
    LiveUsers,
    alice_thread,
    bearer_headers,
    close_code_of,
    open_socket,
    receive_frame,
    receive_until,
    session_cookie_header,
)

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(240)]


Live = LiveUsers


@pytest.fixture
async def thread(live: Live) -> AsyncIterator[Thread]:
    async with alice_thread(live, "live") as thread:
        yield thread


async def stored(live: Live, execution_id: str) -> Execution:
    return await sync_to_async(Execution.objects.using(live.alias).get)(id=execution_id)


async def execute(socket: Any, code: str, language: str = "python", **extra: Any) -> None:
    await socket.send(json.dumps({"type": "execute", "code": code, "language": language, **extra}))


async def run_on_thread(
    live: Live,
    thread: Thread,
    code: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Frames:
    """Open alice's thread socket, run `code`, return every frame up to its `done`."""
    async with await open_socket(
        live.server, f"ws/threads/{thread.id}/", headers=headers or bearer_headers(live.alice)
    ) as socket:
        await execute(socket, code, **extra)
        first = await receive_frame(socket)
        assert first["type"] == "execution", first
        frames = await receive_until(socket, done_of=first["execution_id"], within=120)
        frames.items.insert(0, first)
        return frames


def assert_consecutive_seqs(frames: list[dict[str, Any]]) -> None:
    seqs = [frame["seq"] for frame in frames]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


# --- streaming ------------------------------------------------------------------------------


async def test_a_run_streams_execution_status_output_and_done_in_order(
    live: Live, thread: Thread
) -> None:
    frames = await run_on_thread(
        live, thread, "import sys\nprint('one')\nprint('two', file=sys.stderr)\nprint('three')"
    )
    first = frames.items[0]
    assert first["status"] == "queued"
    assert first["seq"] == 0
    assert first["thread_id"] == str(thread.id)
    assert first["language"] == "python"
    assert frames.types()[1] == "status"
    assert frames.items[1]["status"] == "running"
    assert frames.types()[-1] == "done"
    assert frames.stdout() == "one\nthree\n"
    assert "".join(f["text"] for f in frames.of_type("stderr")) == "two\n"
    assert_consecutive_seqs(frames.items)
    assert {f["execution_id"] for f in frames.items} == {first["execution_id"]}
    done = frames.items[-1]
    assert done["status"] == "succeeded"
    assert done["truncated"] is False
    row = await stored(live, first["execution_id"])
    assert row.status == Execution.Status.SUCCEEDED
    assert row.stdout == "one\nthree\n"
    assert row.source == Source.WEBSOCKET
    assert row.client_ip == "127.0.0.1"
    assert row.last_seq == done["seq"]


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("javascript", "console.log('hello from ' + 'node')"),
        ("typescript", "const who: string = 'node'; console.log(`hello from ${who}`)"),
        ("bash", "echo hello from bash"),
    ],
)
async def test_every_language_streams_over_the_socket(
    live: Live, thread: Thread, language: str, code: str
) -> None:
    async with await open_socket(
        live.server, f"ws/threads/{thread.id}/", headers=bearer_headers(live.alice)
    ) as socket:
        await execute(socket, code, language=language)
        first = await receive_frame(socket)
        assert (first["type"], first["language"]) == ("execution", language)
        frames = await receive_until(socket, done_of=first["execution_id"], within=120)
    assert frames.stdout().startswith("hello from ")
    assert frames.items[-1]["status"] == "succeeded"


async def test_a_user_exception_streams_an_error_event_and_a_failed_done(
    live: Live, thread: Thread
) -> None:
    frames = await run_on_thread(live, thread, "print('before')\nraise ValueError('boom')")
    errors = frames.of_type("error")
    assert len(errors) == 1
    assert errors[0]["error"]["name"] == "ValueError"
    assert "boom" in errors[0]["error"]["value"]
    assert frames.stdout() == "before\n"
    assert frames.items[-1]["status"] == "failed"


async def test_a_long_run_streams_a_line_while_it_still_sleeps(live: Live, thread: Thread) -> None:
    code = "import time\nprint('first', flush=True)\ntime.sleep(4)\nprint('second')"
    async with await open_socket(
        live.server, f"ws/threads/{thread.id}/", headers=bearer_headers(live.alice)
    ) as socket:
        await execute(socket, code)
        execution_id = (await receive_frame(socket))["execution_id"]
        early = await receive_until_stdout(socket, "first")
        # The line is here and the run is not over: the row says so, and no `done` came.
        row = await stored(live, execution_id)
        assert row.status == Execution.Status.RUNNING
        assert "done" not in early.types()
        rest = await receive_until(socket, done_of=execution_id)
        assert rest.stdout() == "second\n"
        assert rest.items[-1]["status"] == "succeeded"


async def receive_until_stdout(socket: Any, text: str, within: float = 60) -> Frames:
    """Collect frames until a stdout frame containing `text` has arrived."""
    frames = Frames()
    async with asyncio.timeout(within):
        while text not in frames.stdout():
            frames.items.append(await receive_frame(socket, within))
    return frames


async def test_cancel_stops_a_running_execution(live: Live, thread: Thread) -> None:
    code = "import time\nprint('started', flush=True)\ntime.sleep(60)\nprint('never')"
    async with await open_socket(
        live.server, f"ws/threads/{thread.id}/", headers=bearer_headers(live.alice)
    ) as socket:
        await execute(socket, code)
        execution_id = (await receive_frame(socket))["execution_id"]
        await receive_until_stdout(socket, "started")
        await socket.send(json.dumps({"type": "cancel", "execution_id": execution_id}))
        rest = await receive_until(socket, done_of=execution_id, within=30)
    assert rest.items[-1]["type"] == "done"
    assert rest.items[-1]["status"] == "cancelled"
    assert "never" not in rest.stdout()
    row = await stored(live, execution_id)
    assert row.status == Execution.Status.CANCELLED
    assert "never" not in row.stdout


async def test_two_sockets_on_a_thread_both_see_a_run(live: Live, thread: Thread) -> None:
    path = f"ws/threads/{thread.id}/"
    async with (
        await open_socket(live.server, path, headers=bearer_headers(live.alice)) as runner,
        await open_socket(live.server, path, headers=bearer_headers(live.alice)) as watcher,
    ):
        await execute(runner, "print('shared')")
        execution_id = (await receive_frame(runner))["execution_id"]
        mine = await receive_until(runner, done_of=execution_id)
        theirs = await receive_until(watcher, done_of=execution_id)
    assert theirs.items[0]["type"] == "execution"
    assert theirs.stdout() == mine.stdout() == "shared\n"
    assert theirs.items[-1]["status"] == "succeeded"


# --- reconnecting to ws/executions/<id>/ ----------------------------------------------------


async def test_reconnecting_mid_run_replays_then_follows_without_gaps_or_duplicates(
    live: Live, thread: Thread
) -> None:
    code = "import time\nfor i in range(8):\n    print(f'line {i}', flush=True); time.sleep(0.3)"
    expected = "".join(f"line {i}\n" for i in range(8))
    async with await open_socket(
        live.server, f"ws/threads/{thread.id}/", headers=bearer_headers(live.alice)
    ) as socket:
        await execute(socket, code)
        execution_id = (await receive_frame(socket))["execution_id"]
        await receive_until_stdout(socket, "line 2")
        # A second client joins in the middle (e.g. a page reload).
        async with await open_socket(
            live.server, f"ws/executions/{execution_id}/", headers=bearer_headers(live.alice)
        ) as late:
            frames = await receive_until(late, within=60)
        await receive_until(socket, done_of=execution_id)
    assert frames.close_code == 1000
    replayed = [f for f in frames.items if f.get("replay")]
    live_frames = [f for f in frames.items if not f.get("replay")]
    assert replayed[0]["type"] == "execution"
    assert "line 0\nline 1\n" in "".join(f["text"] for f in replayed if f["type"] == "stdout")
    assert live_frames, "the run was still going: some frames must have come live"
    assert min(f["seq"] for f in live_frames) == replayed[0]["seq"] + 1
    assert_consecutive_seqs(live_frames)
    assert frames.stdout() == expected  # replay + live: every line exactly once, in order
    assert frames.items[-1]["type"] == "done"
    assert frames.items[-1]["status"] == "succeeded"


async def test_reconnecting_after_the_end_replays_the_stored_run_and_closes(
    live: Live, thread: Thread
) -> None:
    frames = await run_on_thread(live, thread, "print('kept')\n40 + 2")
    assert frames.items[-1]["status"] == "succeeded", frames.items[-1]
    execution_id = frames.items[0]["execution_id"]
    async with await open_socket(
        live.server, f"ws/executions/{execution_id}/", headers=bearer_headers(live.alice)
    ) as socket:
        replay = await receive_until(socket, within=30)
    assert replay.close_code == 1000
    assert replay.types()[0] == "execution"
    assert replay.types()[-1] == "done"
    assert replay.stdout() == "kept\n"
    assert replay.of_type("result")[0]["result"]["text"] == "42"
    assert replay.items[-1]["status"] == "succeeded"
    assert replay.items[-1]["seq"] == frames.items[-1]["seq"]


async def test_a_run_started_over_rest_can_be_watched_on_its_execution_socket(
    live: Live, thread: Thread
) -> None:
    async with httpx.AsyncClient(base_url=live.server.http_url, timeout=60) as client:
        response = await client.post(
            "/api/code/execute",
            json={
                "code": "import time\ntime.sleep(1)\nprint('from rest')",
                "language": "python",
                "thread_id": str(thread.id),
                "wait": False,
            },
            headers=bearer_headers(live.alice),
        )
    assert response.status_code == 202, response.text
    execution_id = response.json()["id"]
    async with await open_socket(
        live.server, f"ws/executions/{execution_id}/", headers=bearer_headers(live.alice)
    ) as socket:
        frames = await receive_until(socket, within=60)
    assert frames.close_code == 1000
    assert frames.stdout() == "from rest\n"
    assert frames.items[-1]["status"] == "succeeded"


# --- authentication on the handshake --------------------------------------------------------


async def test_a_session_cookie_authenticates_a_browser_socket(live: Live, thread: Thread) -> None:
    cookie = await sync_to_async(session_cookie_header)(live.alias, live.alice)
    frames = await run_on_thread(live, thread, "print('via cookie')", headers=cookie)
    assert frames.stdout() == "via cookie\n"


async def test_an_anonymous_socket_is_closed_with_4401(live: Live, thread: Thread) -> None:
    async with await open_socket(live.server, f"ws/threads/{thread.id}/") as socket:
        assert await close_code_of(socket) == CLOSE_UNAUTHENTICATED


async def test_another_users_thread_is_closed_with_4404(live: Live, thread: Thread) -> None:
    async with await open_socket(
        live.server, f"ws/threads/{thread.id}/", headers=bearer_headers(live.charlie)
    ) as socket:
        assert await close_code_of(socket) == CLOSE_NOT_FOUND


async def test_another_users_execution_is_closed_with_4404(live: Live, thread: Thread) -> None:
    frames = await run_on_thread(live, thread, "print(1)")
    async with await open_socket(
        live.server,
        f"ws/executions/{frames.items[0]['execution_id']}/",
        headers=bearer_headers(live.charlie),
    ) as socket:
        assert await close_code_of(socket) == CLOSE_NOT_FOUND


async def test_a_handshake_from_another_origin_is_refused(live: Live, thread: Thread) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(
            live.server,
            f"ws/threads/{thread.id}/",
            headers=bearer_headers(live.alice),
            origin="https://evil.example",
        )
    assert refused.value.response.status_code == 403


async def test_a_burst_of_output_reaches_the_socket_and_the_row_without_loss(
    live: Live, thread: Thread
) -> None:
    # Thousands of events as fast as the kernel prints them: more than a channel holds
    # (the in-memory layer drops beyond 100 queued), so this also exercises the catch-up.
    code = "for i in range(2000):\n    print(f'burst {i}', flush=True)"
    expected = "".join(f"burst {i}\n" for i in range(2000))
    frames = await run_on_thread(live, thread, code, timeout=240)
    assert frames.items[-1]["status"] == "succeeded"
    assert frames.stdout() == expected
    live_seqs = [f["seq"] for f in frames.items if not f.get("replay")]
    assert live_seqs == sorted(set(live_seqs))  # in order, never twice
    row = await stored(live, frames.items[0]["execution_id"])
    assert row.stdout == expected
