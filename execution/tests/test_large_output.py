"""Output of any size through a real daphne, websocket client and sandboxd: a 50 MB print
flood, a single 5 MB line and a 10 MB PNG each end with `done`, the stored row is capped and
flagged, and no websocket frame is larger than daphne allows (1 MiB), live or replayed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from execution.models import Execution, Thread
from execution.tests.live import (
    LiveUsers,
    alice_thread,
    bearer_headers,
    open_socket,
)

pytestmark = [pytest.mark.sandboxd, pytest.mark.timeout(300)]

# daphne (autobahn) refuses to send a websocket message over 1 MiB.
TRANSPORT_LIMIT = 1024 * 1024
FLOOD_50_MB = (
    "import sys\nline = 'x' * 99 + '\\n'\nfor _ in range(500_000):\n    sys.stdout.write(line)"
)
LINE_5_MB = "print('y' * 5_000_000)"
PNG_10_MB = (
    "import hashlib, os\nfrom IPython.display import Image, display\n"
    "data = b'\\x89PNG\\r\\n\\x1a\\n' + os.urandom(10_000_000)\n"
    "print(hashlib.sha256(data).hexdigest())\ndisplay(Image(data=data, format='png'))"
)


@pytest.fixture
async def thread(live: LiveUsers) -> AsyncIterator[Thread]:
    async with alice_thread(live, "large") as thread:
        yield thread


async def frames_until_done(socket: Any, within: float = 240) -> list[tuple[int, dict[str, Any]]]:
    """(raw size, frame) of every message until a `done`; fails if the socket stalls."""
    received: list[tuple[int, dict[str, Any]]] = []
    async with asyncio.timeout(within):
        while True:
            raw = await socket.recv()
            frame = json.loads(raw)
            received.append((len(raw.encode("utf-8")), frame))
            if frame.get("type") == "done":
                return received


def text_of(frames: list[tuple[int, dict[str, Any]]], kind: str = "stdout") -> str:
    return "".join(frame["text"] for _, frame in frames if frame["type"] == kind)


async def stored(live: LiveUsers, execution_id: str) -> Execution:
    return await sync_to_async(Execution.objects.using(live.alias).get)(id=execution_id)


async def replay(live: LiveUsers, execution_id: str) -> list[tuple[int, dict[str, Any]]]:
    async with await open_socket(
        live.server, f"ws/executions/{execution_id}/", headers=bearer_headers(live.alice)
    ) as socket:
        return await frames_until_done(socket)


@pytest.mark.parametrize(("code", "name"), [(FLOOD_50_MB, "50 MB flood"), (LINE_5_MB, "5 MB line")])
async def test_huge_output_ends_with_done_capped_and_flagged_live_and_replayed(
    live: LiveUsers, thread: Thread, code: str, name: str
) -> None:
    async with await open_socket(
        live.server, f"ws/threads/{thread.id}/", headers=bearer_headers(live.alice)
    ) as socket:
        await socket.send(json.dumps({"type": "execute", "code": code, "language": "python"}))
        live_frames = await frames_until_done(socket)

    done = live_frames[-1][1]
    assert (done["status"], done["truncated"]) == ("succeeded", True), name
    row = await stored(live, done["execution_id"])
    assert row.truncated and len(row.stdout.encode()) == settings.EXECUTION_MAX_OUTPUT_BYTES
    assert text_of(live_frames) == row.stdout
    assert max(size for size, _ in live_frames) < TRANSPORT_LIMIT

    replayed = await replay(live, done["execution_id"])
    assert text_of(replayed) == row.stdout
    assert replayed[-1][1]["truncated"] is True
    assert max(size for size, _ in replayed) < TRANSPORT_LIMIT


async def test_a_10_mb_png_comes_over_rest_whole_and_over_sockets_as_a_reference(
    live: LiveUsers, thread: Thread
) -> None:
    headers = bearer_headers(live.alice)
    async with httpx.AsyncClient(base_url=live.server.http_url, headers=headers) as client:
        response = await client.post(
            "/api/code/execute",
            json={"code": PNG_10_MB, "language": "python", "thread_id": str(thread.id)},
            timeout=180,
        )
        assert response.status_code == 201, response.text
        body = response.json()
        digest = body["stdout"].strip()
        (result,) = body["results"]
        assert hashlib.sha256(base64.b64decode(result["png"])).hexdigest() == digest

        frames = await replay(live, body["id"])
        (reference,) = [frame["result"] for _, frame in frames if frame["type"] == "result"]
        assert max(size for size, _ in frames) < TRANSPORT_LIMIT
        image = await client.get(reference["ref"], params={"part": "png"}, timeout=60)
        assert image.headers["content-type"] == "image/png"
        assert hashlib.sha256(image.content).hexdigest() == digest
        other = await client.get(
            reference["ref"], params={"part": "png"}, headers=bearer_headers(live.charlie)
        )
        assert other.status_code == 404


async def test_a_flood_started_over_rest_streams_live_on_its_execution_socket(
    live: LiveUsers, thread: Thread
) -> None:
    headers = bearer_headers(live.alice)
    async with httpx.AsyncClient(base_url=live.server.http_url, headers=headers) as client:
        response = await client.post(
            "/api/code/execute",
            json={"code": FLOOD_50_MB, "language": "python", "thread_id": str(thread.id),
                  "wait": False},
            timeout=60,
        )  # fmt: skip
    assert response.status_code == 202, response.text
    execution_id = response.json()["id"]
    async with await open_socket(
        live.server, f"ws/executions/{execution_id}/", headers=headers
    ) as socket:
        frames = await frames_until_done(socket)

    row = await stored(live, execution_id)
    assert (row.status, row.truncated) == ("succeeded", True)
    assert text_of(frames) == row.stdout
    assert frames[-1][1]["truncated"] is True
    assert max(size for size, _ in frames) < TRANSPORT_LIMIT
